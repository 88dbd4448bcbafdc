"""The tfjs graph-model reader and the Human-library ports against the original JavaScript.

Golden values: ``tests/golden/human_reference.json``, written by ``tools/human_reference`` (tfjs 4.22.0, pure-JS
cpu backend, Human 3.3.6's preprocessing) on the same Pillow-decoded pixels.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab import assets, models
from facelab.models import human
from facelab.models.tfjs_graph import GraphModelError, TfjsGraphModel, decode_weights, load_graph_model
from test_models_detectors import decode, to_tensor

GOLDEN = Path(__file__).parent / "golden" / "human_reference.json"
BOX_TOL = 0.05  # px
SCORE_TOL = 1e-4
DESC_TOL = 1e-4  # absolute, or relative to the largest |value| where values are large


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def photos(golden) -> dict[str, torch.Tensor]:
    out = {}
    for name, ref in golden["photos"].items():
        rgb = decode(name)
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == ref["sha256"], (
            f"{name}: Pillow decoded different pixels than when the reference was made ({golden['decoder']}); "
            "regenerate tests/golden/human_reference.json (tools/human_reference/README.md)")
        out[name] = to_tensor(rgb)
    return out


@pytest.fixture(scope="module")
def crops(golden, photos) -> dict[str, torch.Tensor]:
    out = {}
    for name, ref in golden["crops"].items():
        x, y, w, h = ref["crop_box"]
        crop = photos[ref["photo"]][:, y:y + h, x:x + w]
        rgb = (crop * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == ref["sha256"], f"{name}: crop pixels differ"
        out[name] = crop.contiguous()
    return out


def _dev(got: torch.Tensor, ref: list | float, relative: bool = False) -> float:
    r = torch.as_tensor(ref, dtype=torch.float64).reshape(-1)
    d = float((got.detach().double().reshape(-1) - r).abs().max())
    return d / max(1.0, float(r.abs().max())) if relative else d


# -- weights ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["blazeface-back", "blazeface-front", "mobilefacenet", "faceres", "faceres-deep", "gear", "age", "gender", "emotion",
                                  "centernet"])
def test_weights_decode_bit_exact(golden, name):
    """Every decoded weight (float16-quantised ones included) equals tfjs' decodeWeights bit for bit."""
    topo = json.loads(assets.open_bytes(f"human-models/models/{name}.json").read())
    w = decode_weights(topo["weightsManifest"], lambda p: assets.open_bytes(f"human-models/models/{p}").getvalue())
    h = hashlib.sha256()
    for group in topo["weightsManifest"]:
        for spec in group["weights"]:
            a = w[spec["name"]]
            h.update(np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes())
    assert h.hexdigest() == golden["weights_sha256"][name]


def test_quantised_weights_as_tfjs():
    """uint8 / uint16: q * scale + min in doubles, then float32 (or Math.round for int32); float16 exact."""
    q8 = np.array([0, 1, 255], dtype=np.uint8)
    q16 = np.array([0, 3, 65535], dtype="<u2")
    f16 = np.array([1.0, -2.5, 6.1e-5, 65504.0], dtype="<f2")
    qi = np.array([0, 1, 2, 3], dtype=np.uint8)
    manifest = [{"paths": ["a.bin", "b.bin"], "weights": [
        {"name": "u8", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.3}},
        {"name": "u16", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 1e-3, "min": 0.7}},
        {"name": "f16", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "i", "shape": [4], "dtype": "int32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -0.5}},
    ]}]
    blob = q8.tobytes() + q16.tobytes() + f16.tobytes() + qi.tobytes()
    shards = {"a.bin": blob[:5], "b.bin": blob[5:]}  # a weight may straddle two shards
    w = decode_weights(manifest, shards.get)
    np.testing.assert_array_equal(w["u8"], (q8.astype(np.float64) * 0.1 - 1.3).astype(np.float32))
    np.testing.assert_array_equal(w["u16"], (q16.astype(np.float64) * 1e-3 + 0.7).astype(np.float32))
    np.testing.assert_array_equal(w["f16"], f16.astype(np.float32).reshape(2, 2))
    np.testing.assert_array_equal(w["i"], [0, 0, 1, 1])  # Math.round(-0.5) = 0, Math.round(0.5) = 1
    assert w["i"].dtype == np.int32


# -- errors of a bad model.json --------------------------------------------------------------------
def _tiny_graph(op: str = "Relu") -> tuple[dict, dict[str, bytes]]:
    topo = {"format": "graph-model", "modelTopology": {"node": [
        {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": "-1"}, {"size": "4"},
                                                                                 {"size": "4"}, {"size": "2"}]}}}},
        {"name": "k", "op": "Const"},
        {"name": "conv", "op": "Conv2D", "input": ["x", "k"],
         "attr": {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": {"s": "U0FNRQ=="}}},
        {"name": "act", "op": op, "input": ["conv"]},
    ]}, "weightsManifest": [{"paths": ["w.bin"], "weights": [{"name": "k", "shape": [3, 3, 2, 3], "dtype": "float32"}]}]}
    k = np.arange(54, dtype="<f4") / 54
    return topo, {"w.bin": k.tobytes()}


def test_tiny_graph_runs_as_tf():
    topo, shards = _tiny_graph()
    m = load_graph_model(topo, shards.get)
    x = torch.rand(2, 2, 4, 4)
    k = torch.arange(54, dtype=torch.float32).reshape(3, 3, 2, 3) / 54
    # TF 'same' with stride 2 on 4 pixels pads 0 before and 1 after
    want = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), k.permute(3, 2, 0, 1), stride=2))
    torch.testing.assert_close(m(x)[0], want)


def test_unknown_op_names_op_and_node():
    topo, shards = _tiny_graph("FancyNewOp")
    with pytest.raises(GraphModelError, match=r"node 'act' has op 'FancyNewOp'"):
        load_graph_model(topo, shards.get)


def test_missing_shard():
    topo, _ = _tiny_graph()
    with pytest.raises(GraphModelError, match=r"weight shard 'w.bin' \(group 0\) is missing"):
        load_graph_model(topo, {}.get)


def test_wrong_shard_size():
    topo, shards = _tiny_graph()
    with pytest.raises(GraphModelError, match=r"hold 212 bytes \(w.bin = 212 bytes\).*need 216 bytes"):
        load_graph_model(topo, {"w.bin": shards["w.bin"][:-4]}.get)


def test_missing_shard_of_a_real_model(tmp_path):
    src = assets.path("human-models/models/emotion.json")
    (tmp_path / "emotion.json").write_bytes(src.read_bytes())
    with pytest.raises(GraphModelError, match=r"emotion.json: weight shard 'emotion.bin' \(group 0\) is missing"):
        load_graph_model(tmp_path / "emotion.json")
    (tmp_path / "emotion.bin").write_bytes(assets.path("human-models/models/emotion.bin").read_bytes()[:-1])
    with pytest.raises(GraphModelError, match="wrong or truncated shard"):
        load_graph_model(tmp_path / "emotion.json")


def test_not_a_graph_model(tmp_path):
    f = tmp_path / "m.json"
    f.write_text('{"format": "layers-model", "modelTopology": {}, "weightsManifest": []}')
    with pytest.raises(GraphModelError, match="not a graph model"):
        load_graph_model(f)
    f.write_text("{not json")
    with pytest.raises(GraphModelError, match="not valid JSON"):
        load_graph_model(f)


def test_constant_without_weight():
    topo, shards = _tiny_graph()
    topo = copy.deepcopy(topo)
    topo["modelTopology"]["node"].append({"name": "k2", "op": "Const"})
    topo["modelTopology"]["node"].append({"name": "out2", "op": "Add", "input": ["act", "k2"]})
    with pytest.raises(GraphModelError, match="constant node 'k2' has no weight"):
        load_graph_model(topo, shards.get, outputs=["out2"])


# -- golden: detectors -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blazeface():
    return models.load("blazeface")


@pytest.fixture(scope="module")
def centernet():
    return models.load("centernet")


@pytest.mark.parametrize("variant,key", [("back", "blazeface"), ("front", "blazeface_front")])
def test_golden_blazeface(golden, photos, blazeface, variant, key):
    if variant == "front":
        blazeface = models.load("blazeface_front")
    assert blazeface.input_size == {"back": 256, "front": 128}[variant]
    assert golden["blazeface_options"]["iouThreshold"] == blazeface.nms_iou
    assert golden["blazeface_options"]["minConfidence"] == blazeface.score_threshold
    worst = {"box": 0.0, "score": 0.0, "landmarks": 0.0}
    total = 0
    for name, ref in golden["photos"].items():
        x = photos[name]
        det = blazeface.detect(x)[0]
        want = ref[key]["detections"]
        assert len(det) == len(want), f"{name}: {len(det)} faces, Human has {len(want)}"
        total += len(want)
        worst["box"] = max(worst["box"], _dev(det.boxes, [d["box"] for d in want]))
        worst["score"] = max(worst["score"], _dev(det.scores, [d["score"] for d in want]))
        lm = blazeface.landmarks(x[None])[0]
        idx = [d["anchor_index"] for d in want]
        worst["landmarks"] = max(worst["landmarks"], _dev(lm[idx], [d["landmarks"] for d in want]))
        dense = blazeface.dense(x[None])
        top = ref[key]["top_anchors"]
        assert _dev(dense.scores[0, [t["anchor_index"] for t in top]], [t["score"] for t in top]) <= SCORE_TOL
    assert total > 0
    assert worst["box"] <= BOX_TOL and worst["landmarks"] <= BOX_TOL and worst["score"] <= SCORE_TOL, worst


def test_golden_centernet(golden, photos, centernet):
    worst_box = worst_score = worst_raw = 0.0
    for name, ref in golden["photos"].items():
        x = photos[name]
        det = centernet.detect(x)[0]
        want = ref["centernet"]["detections"]
        assert det.classes.tolist() == [d["class"] for d in want], name
        worst_box = max(worst_box, _dev(det.boxes, [d["box"] for d in want]))
        worst_score = max(worst_score, _dev(det.scores, [d["score"] for d in want]))
        with torch.no_grad():
            boxes, scores, cls = centernet.decode(*centernet(x[None]))
        raw = torch.tensor(ref["centernet"]["raw_topk"], dtype=torch.float64)
        assert cls[0].tolist() == raw[:, 5].long().tolist(), f"{name}: top-100 classes differ"
        worst_raw = max(worst_raw, _dev(boxes[0], raw[:, :4]), _dev(scores[0], raw[:, 4]) * 1000)
    assert det.labels() and all(isinstance(s, str) for s in det.labels())
    assert worst_box <= BOX_TOL and worst_score <= SCORE_TOL and worst_raw <= BOX_TOL, (worst_box, worst_score, worst_raw)


# -- golden: face nets -----------------------------------------------------------------------------
FACE_CASES = {
    # zoo name, kwargs, how to get the output, reference field, relative tolerance
    "mobilefacenet": ("mobilefacenet", {}, lambda m, x: m(x), lambda r: r["mobilefacenet"]["descriptor"]),
    "faceres": ("faceres", {}, lambda m, x: m(x), lambda r: r["faceres"]["descriptor"]),
    "faceres_deep": ("faceres_deep", {}, lambda m, x: m(x), lambda r: r["faceres-deep"]["descriptor"]),
    "faceres_deep_age": ("faceres_deep_attributes", {"head": "age"}, lambda m, x: m.probabilities(x),
                         lambda r: r["faceres-deep"]["age_probabilities"]),
    "faceres_gender": ("faceres_attributes", {"head": "gender"}, lambda m, x: m.probabilities(x), lambda r: [r["faceres"]["gender"]]),
    "faceres_age": ("faceres_attributes", {"head": "age"}, lambda m, x: m.probabilities(x), lambda r: r["faceres"]["age_probabilities"]),
    "gear_age": ("gear", {"head": "age"}, lambda m, x: m.probabilities(x), lambda r: r["gear"]["age"]),
    "gear_gender": ("gear", {"head": "gender"}, lambda m, x: m.probabilities(x), lambda r: r["gear"]["gender"]),
    "gear_race": ("gear", {"head": "race"}, lambda m, x: m.probabilities(x), lambda r: r["gear"]["race"]),
    "ssrnet_age": ("ssrnet_age", {}, lambda m, x: m(x), lambda r: [r["age"]["age"]]),
    "human_gender": ("human_gender", {}, lambda m, x: m.probabilities(x), lambda r: r["gender"]["probabilities"]),
    "emotion": ("emotion", {}, lambda m, x: m.probabilities(x), lambda r: r["emotion"]["probabilities"]),
}


@pytest.mark.parametrize("case", list(FACE_CASES))
def test_golden_face_nets(golden, crops, case):
    name, kwargs, run, field = FACE_CASES[case]
    m = models.load(name, **kwargs)
    worst = 0.0
    with torch.no_grad():
        for crop_name, ref in golden["crops"].items():
            worst = max(worst, _dev(run(m, crops[crop_name][None]), field(ref), relative=True))
    assert worst <= DESC_TOL, f"{case}: max deviation {worst:.3g}"


def test_interfaces_and_batches(crops):
    a, b = crops["sample1_face0"], crops["sample3_face0"]
    batch = torch.stack([a, torch.nn.functional.interpolate(b[None], size=a.shape[-2:], mode="bilinear")[0]])
    emb = models.load("faceres")
    assert isinstance(emb, models.FaceEmbedder) and emb.metric == "euclidean"
    with torch.no_grad():
        d = emb(batch)
        torch.testing.assert_close(d[:1], emb(batch[:1]), atol=1e-4, rtol=1e-5)
        assert emb.match(batch[:1], batch[:1]).item() and not emb.match(batch[:1], batch[1:]).item()
    cls = models.load("emotion")
    assert isinstance(cls, models.FaceClassifier) and cls.labels[3] == "happy"
    with torch.no_grad():
        torch.testing.assert_close(cls.predict(batch), cls.probabilities(batch), atol=1e-6, rtol=1e-5)
        g = models.load("faceres_attributes", head="gender")
        assert g.multilabel and g.predict(batch).shape == (2, 1)
        torch.testing.assert_close(g.predict(batch), g.probabilities(batch), atol=1e-6, rtol=1e-5)


def test_gradients_flow(crops, blazeface):
    x = crops["sample2_face0"][None].clone().requires_grad_(True)
    models.load("gear", head="gender")(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    y = crops["sample1_face0"][None].clone().requires_grad_(True)
    out = blazeface.dense(y)
    out.scores.max().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_blazeface_batch_equals_single(photos, blazeface):
    a = photos["sample1"][:, :400, :500]
    b = torch.flip(a, dims=[2])
    both = blazeface.detect(torch.stack([a, b]))
    for got, x in zip(both, (a, b)):
        want = blazeface.detect(x)[0]
        assert len(got) == len(want)
        torch.testing.assert_close(got.boxes, want.boxes, atol=1e-3, rtol=0)


def test_layout_stays_channels_first():
    """Convolutions and element-wise ops see NCHW tensors: no per-op permute of the activations."""
    g = human.load_human_graph("gender")
    calls = []
    orig = torch.Tensor.permute

    def spy(self, *dims):
        calls.append(dims)
        return orig(self, *dims)

    torch.Tensor.permute = spy
    try:
        with torch.no_grad():
            g(torch.rand(2, 1, 64, 64))
    finally:
        torch.Tensor.permute = orig
    assert len(calls) <= 1, f"{len(calls)} permutes in one forward pass: {calls}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(crops, monkeypatch):  # pragma: no cover - GPU machines only
    """Same outputs on CUDA, with TF32 off (cuDNN's default TF32 convolutions differ by ~1e-3)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = crops["sample1_face0"][None]
    for name in ("faceres", "gear", "emotion", "mobilefacenet"):
        m = models.load(name)
        with torch.no_grad():
            torch.testing.assert_close(models.load(name, device="cuda")(x.cuda()).cpu(), m(x), atol=1e-4, rtol=1e-4)
    bf = models.load("blazeface", device="cuda")
    det = bf.detect(crops["sample1_face0"].cuda())[0]
    assert det.boxes.device.type == "cuda"


# -- layout handling of the reader on a synthetic graph ----------------------------------------------
def _graph(nodes: list[tuple], consts: dict[str, np.ndarray]) -> TfjsGraphModel:
    """nodes: (name, op, inputs, attrs) after an NHWC placeholder ``x`` [-1,5,6,3] and an identity 1x1 conv ``c``
    (so that ``c`` is channels-first inside the reader)."""
    b64 = lambda s: __import__("base64").b64encode(s.encode()).decode()  # noqa: E731
    topo_nodes = [
        {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": "-1"}, {"size": "5"},
                                                                                 {"size": "6"}, {"size": "3"}]}}}},
        {"name": "eye", "op": "Const"},
        {"name": "c", "op": "Conv2D", "input": ["x", "eye"], "attr": {"padding": {"s": b64("VALID")}}},
    ]
    weights = {"eye": np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)}
    for name, value in consts.items():
        topo_nodes.append({"name": name, "op": "Const"})
        weights[name] = value
    for name, op, inputs, attrs in nodes:
        attr = {}
        for k, v in attrs.items():
            if isinstance(v, bool):
                attr[k] = {"b": v}
            elif isinstance(v, str):
                attr[k] = {"s": b64(v)}
            elif isinstance(v, list):
                attr[k] = {"list": {"i": [str(i) for i in v]}}
            else:
                attr[k] = {"i": str(v)}
        topo_nodes.append({"name": name, "op": op, "input": inputs, "attr": attr})
    return TfjsGraphModel({"modelTopology": {"node": topo_nodes}}, weights, outputs=[n[0] for n in nodes])


def test_layout_of_reductions_pads_concat_pools():
    consts = {"hw": np.array([1, 2], np.int32), "ch": np.array([3], np.int32), "h": np.array([1], np.int32),
              "pads": np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32), "ax3": np.array(3, np.int32),
              "ax1": np.array(1, np.int32), "bias": np.array([1.0, 2.0, 3.0], np.float32)}
    nodes = [
        ("mean_hw", "Mean", ["c", "hw"], {"keep_dims": False}),
        ("sum_c", "Sum", ["c", "ch"], {"keep_dims": True}),
        ("max_h", "Max", ["c", "h"], {"keep_dims": False}),
        ("pad", "Pad", ["c", "pads"], {}),
        ("cat_c", "ConcatV2", ["c", "c", "ax3"], {}),
        ("cat_h", "ConcatV2", ["c", "c", "ax1"], {}),
        ("soft", "Softmax", ["c"], {}),
        ("biased", "BiasAdd", ["c", "bias"], {}),
        ("avg", "AvgPool", ["c"], {"ksize": [1, 3, 3, 1], "strides": [1, 2, 2, 1], "padding": "SAME"}),
        ("maxp", "MaxPool", ["c"], {"ksize": [1, 2, 2, 1], "strides": [1, 2, 2, 1], "padding": "SAME"}),
    ]
    g = _graph(nodes, consts)
    g.channels_first_outputs = False  # compare in NHWC, as TF computes
    x = torch.rand(2, 3, 5, 6)
    nhwc = x.permute(0, 2, 3, 1)
    out = dict(zip([n[0] for n in nodes], g(x)))
    torch.testing.assert_close(out["mean_hw"], nhwc.mean((1, 2)))
    torch.testing.assert_close(out["sum_c"], nhwc.sum(3, keepdim=True))
    torch.testing.assert_close(out["max_h"], nhwc.amax(1))  # [B,W,C]: remaining axes in logical order
    torch.testing.assert_close(out["pad"], torch.nn.functional.pad(nhwc, (0, 0, 0, 1, 1, 2)))
    torch.testing.assert_close(out["cat_c"], torch.cat([nhwc, nhwc], 3))
    torch.testing.assert_close(out["cat_h"], torch.cat([nhwc, nhwc], 1))
    torch.testing.assert_close(out["soft"], torch.softmax(nhwc, -1))
    torch.testing.assert_close(out["biased"], nhwc + torch.tensor([1.0, 2.0, 3.0]))
    # TF 'same' 3x3/2 average on 5x6: pads (1,1) rows and (0,1) cols, padded cells not counted
    xp = torch.nn.functional.pad(x, (0, 1, 1, 1))
    ones = torch.nn.functional.pad(torch.ones(1, 1, 5, 6), (0, 1, 1, 1))
    want = torch.nn.functional.avg_pool2d(xp, 3, 2) / torch.nn.functional.avg_pool2d(ones, 3, 2)
    torch.testing.assert_close(out["avg"], want.permute(0, 2, 3, 1))
    want = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, (0, 0, 0, 1), value=-float("inf")), 2, 2)
    torch.testing.assert_close(out["maxp"], want.permute(0, 2, 3, 1))
