"""face-api detector ports (SSD-MobileNetV1, TinyFaceDetector) against the original JavaScript.

Golden values: ``tests/golden/faceapi_reference.json`` written by ``tools/faceapi_reference`` (the
original ``@vladmandic/face-api`` on the same Pillow-decoded pixels).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facelab import assets, models
from facelab.models.tf_ops import (conv2d_same, js_round, max_pool_same, pad_to_square, reshaped_dims, same_padding,
                                   tf_resize_bilinear)

GOLDEN = Path(__file__).parent / "golden" / "faceapi_reference.json"
PHOTOS = [f"sample{i}" for i in range(1, 7)]
BOX_TOL = 0.05  # px
SCORE_TOL = 1e-4
THRESHOLD = 0.3


def decode(name: str) -> np.ndarray:
    """As tools/faceapi_reference/make_inputs.py: Pillow, convert('RGB'), uint8 HWC."""
    from PIL import Image

    with Image.open(assets.path(f"face-api/demo/{name}.jpg")) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def ssd():
    return models.load("ssd_mobilenetv1")


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny_face_detector", input_size=416)


@pytest.fixture(scope="module")
def photos(golden) -> dict[str, torch.Tensor]:
    out = {}
    for name in PHOTOS:
        rgb = decode(name)
        ref = golden["photos"][name]
        assert list(rgb.shape) == ref["shape"], f"{name}: decoded shape differs from the reference input"
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == ref["sha256"], (
            f"{name}: Pillow decoded different pixels than when the reference was made ({golden['decoder']}); "
            "regenerate tests/golden/faceapi_reference.json (tools/faceapi_reference/README.md)")
        out[name] = to_tensor(rgb)
    return out


def small(photo: torch.Tensor, h: int = 180, w: int = 260) -> torch.Tensor:
    """A cheap non-square test image: the top-left face region of a photo."""
    return photo[:, 300:300 + h, 380:380 + w].contiguous()


# -- golden comparisons ----------------------------------------------------------------------------
@pytest.mark.parametrize("key,model_name", [("ssd", "ssd"), ("tiny", "tiny")])
def test_golden_detections(request, golden, photos, key, model_name):
    model = request.getfixturevalue(model_name)
    if key == "tiny":
        assert golden["tiny_options"]["inputSize"] == model.input_size
    worst_box, worst_score = 0.0, 0.0
    for name in PHOTOS:
        ref = golden["photos"][name][key]
        det = model.detect(photos[name], THRESHOLD)[0]
        assert len(det) == len(ref), f"{key} {name}: {len(det)} detections, face-api has {len(ref)}"
        assert len(ref) > 0
        rb = torch.tensor([r["box"] for r in ref], dtype=torch.float64)
        rs = torch.tensor([r["score"] for r in ref], dtype=torch.float64)
        assert torch.all(det.scores[:-1] >= det.scores[1:]), "detections must be sorted by score"
        worst_box = max(worst_box, float((det.boxes.double() - rb).abs().max()))
        worst_score = max(worst_score, float((det.scores.double() - rs).abs().max()))
    assert worst_box <= BOX_TOL, f"{key}: max box deviation {worst_box:.4g} px"
    assert worst_score <= SCORE_TOL, f"{key}: max score deviation {worst_score:.3g}"


def test_batch_of_same_size_images(golden, photos, ssd, tiny):
    """A batch of two same-size photos gives exactly the single-image results."""
    a, b = photos["sample1"], torch.flip(photos["sample1"], dims=[2])
    for model in (ssd, tiny):
        batch = model.detect(torch.stack([a, b]), THRESHOLD)
        single = [model.detect(a, THRESHOLD)[0], model.detect(b, THRESHOLD)[0]]
        for got, want in zip(batch, single):
            assert len(got) == len(want) > 0
            torch.testing.assert_close(got.boxes, want.boxes, atol=1e-3, rtol=0)
            torch.testing.assert_close(got.scores, want.scores, atol=1e-5, rtol=0)


def test_list_of_different_sizes(photos, ssd, tiny):
    ims = [small(photos["sample1"]), small(photos["sample2"], 200, 150)]
    for model in (ssd, tiny):
        got = model.detect(ims, 0.1)
        assert len(got) == 2
        for im, det in zip(ims, got):
            want = model.detect(im[None], 0.1)[0]
            torch.testing.assert_close(det.boxes, want.boxes)
            torch.testing.assert_close(det.scores, want.scores)


# -- dense output and gradients --------------------------------------------------------------------
@pytest.mark.parametrize("model_name,num_anchors", [("ssd", 5118), ("tiny", 13 * 13 * 5)])
def test_dense_shapes_and_gradient(request, photos, model_name, num_anchors):
    model = request.getfixturevalue(model_name)
    x = small(photos["sample1"])[None].clone().requires_grad_(True)
    out = model.dense(x)
    assert out.anchors.shape == out.boxes.shape == (1, num_anchors, 4)
    assert out.scores.shape == out.logits.shape == (1, num_anchors)
    assert torch.all((out.scores >= 0) & (out.scores <= 1))
    torch.testing.assert_close(torch.sigmoid(out.logits), out.scores)
    out.scores.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_dense_matches_detect(photos, ssd, tiny):
    """The top detect() box is a dense box with the same score (boxes are in input pixels)."""
    x = photos["sample3"]
    for model in (ssd, tiny):
        out = model.dense(x[None])
        det = model.detect(x, THRESHOLD)[0]
        i = int(out.scores[0].argmax())
        torch.testing.assert_close(det.scores[0], out.scores[0, i])
        torch.testing.assert_close(det.boxes[0], out.boxes[0, i])


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["ssd", "tiny"])
@pytest.mark.parametrize("bad,match", [
    (torch.rand(1, 1, 32, 32), "grayscale"),
    (torch.rand(1, 4, 32, 32), "RGBA"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "uint8"),
    (torch.rand(1, 3, 32, 32) * 255, r"\[0,1\]"),
    (torch.rand(1, 3, 0, 32), "zero-sized"),
    (torch.rand(3, 32, 32), r"\[B,3,H,W\]"),
])
def test_bad_input(request, model_name, bad, match):
    model = request.getfixturevalue(model_name)
    with pytest.raises((ValueError, TypeError), match=match):
        model.dense(bad)
    if bad.dim() == 4:
        with pytest.raises((ValueError, TypeError), match=match):
            model.detect(bad)


def test_tiny_input_size_validation():
    from facelab.models.tiny_face_detector import TinyFaceDetector

    with pytest.raises(ValueError, match="multiple of 32"):
        TinyFaceDetector(input_size=300, weights={})


def test_to_device_keeps_buffers(ssd, tiny):
    for model in (ssd, tiny):
        devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
        assert devices == {torch.device("cpu")}
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        m = models.load("tiny_face_detector", device="cuda")
        det = m.detect(torch.rand(1, 3, 64, 96, device="cuda"), 0.0)[0]
        assert det.boxes.device.type == "cuda"


# -- TF ops ----------------------------------------------------------------------------------------
def test_tf_resize_bilinear_legacy_semantics():
    ramp = torch.arange(4.0).view(1, 1, 1, 4)
    # src = dst * in/out (no half-pixel centres): 0, 4/3, 8/3
    torch.testing.assert_close(tf_resize_bilinear(ramp, (1, 3)), torch.tensor([[[[0.0, 4 / 3, 8 / 3]]]]))
    up = tf_resize_bilinear(torch.tensor([[[[0.0, 1.0]]]]), (1, 4))
    torch.testing.assert_close(up, torch.tensor([[[[0.0, 0.5, 1.0, 1.0]]]]))  # clamped at the edge
    # differs from PyTorch's half-pixel bilinear
    x = torch.rand(1, 3, 7, 9)
    assert not torch.allclose(tf_resize_bilinear(x, (5, 4)), F.interpolate(x, (5, 4), mode="bilinear"))
    # separable: rows then columns
    y = tf_resize_bilinear(x, (5, 4))
    torch.testing.assert_close(y, tf_resize_bilinear(tf_resize_bilinear(x, (7, 4)), (5, 4)))
    assert tf_resize_bilinear(x, (7, 9)) is x


def test_js_round_and_reshaped_dims():
    assert js_round(292.5) == 293 and round(292.5) == 292  # the sample3 pitfall (1350x1920 at 416)
    assert js_round(-0.5) == 0 and js_round(2.4999) == 2
    assert reshaped_dims(1350, 1920, 416) == (293, 416)
    assert reshaped_dims(1920, 1350, 512) == (512, 360)


def test_same_padding_is_tf_like():
    assert same_padding(512, 3, 2) == (0, 1)  # stride 2: asymmetric, extra at the end
    assert same_padding(207, 2, 2) == (0, 1)
    assert same_padding(10, 3, 1) == (1, 1)
    assert same_padding(13, 2, 1) == (0, 1)
    x = torch.rand(1, 2, 9, 9)
    w = torch.rand(4, 2, 3, 3)
    torch.testing.assert_close(conv2d_same(x, w), F.conv2d(x, w, padding=1))
    assert conv2d_same(torch.rand(1, 2, 512, 512), w, stride=2).shape[-1] == 256
    neg = -torch.rand(1, 1, 3, 3)  # padding never wins a max pool
    assert max_pool_same(neg, 2, 1).max() < 0
    sq = pad_to_square(torch.ones(1, 3, 2, 5))
    assert sq.shape[-2:] == (5, 5) and sq[..., 2:, :].abs().sum() == 0 and sq[..., :2, :].min() == 1


def test_draw_detections(photos, golden):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facelab.viz import draw_detections

    ref = golden["photos"]["sample1"]
    ax = draw_detections(photos["sample1"], [d["box"] for d in ref["ssd"]], [d["score"] for d in ref["ssd"]])
    assert len(ax.patches) == len(ref["ssd"]) and len(ax.texts) == len(ref["ssd"])
    with pytest.raises(ValueError, match="scores"):
        draw_detections(photos["sample1"], [[0, 0, 1, 1]], [0.5, 0.6], ax=ax)
    plt.close("all")


# -- NMS at the overlap that separates the families' thresholds (issue 19) --------------------------------

def _pair(iou: float) -> torch.Tensor:
    """[0,0,10,10] and a box of the same height, shifted right so that IoU = ``iou`` exactly (w = 10)."""
    # IoU = (10 - d) / (10 + d) -> d = 10 (1 - iou) / (1 + iou)
    d = 10 * (1 - iou) / (1 + iou)
    return torch.tensor([[0.0, 0, 10, 10], [d, 0, 10 + d, 10]], dtype=torch.float64)


def test_faceapi_tiny_nms_keeps_iou_equal_to_threshold():
    from facelab.models.tiny_face_detector import IOU_THRESHOLD, TinyFaceDetector, faceapi_nms

    assert IOU_THRESHOLD == 0.4 and TinyFaceDetector.nms_iou == 0.4
    scores = torch.tensor([0.9, 0.8])
    # IoU exactly 0.4 ([0,0,10,10] vs [0,0,10,25]: 100 / 250): face-api suppresses only IoU > 0.4
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 25]])
    assert faceapi_nms(boxes, scores, 0.4).tolist() == [0, 1]
    assert faceapi_nms(boxes, scores, 0.39).tolist() == [0]
    # at an overlap of 0.6 the tiny detector (0.4) suppresses the lower box
    assert faceapi_nms(_pair(0.6).float(), scores, 0.4).tolist() == [0]
    assert faceapi_nms(_pair(0.6).float(), scores, 0.7).tolist() == [0, 1]
    # ties: the later index is picked first (JS sort ascending + pop)
    assert faceapi_nms(torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), torch.tensor([0.5, 0.5]), 0.4).tolist() == [1, 0]


def test_faceapi_ssd_nms_at_overlap_0_6():
    from facelab.models.ssd_mobilenetv1 import SsdMobilenetV1, faceapi_ssd_nms

    assert SsdMobilenetV1.nms_iou == 0.5
    scores = torch.tensor([0.9, 0.8])
    assert faceapi_ssd_nms(_pair(0.6).float(), scores, 100, 0.5, 0.3).tolist() == [0]
    assert faceapi_ssd_nms(_pair(0.45).float(), scores, 100, 0.5, 0.3).tolist() == [0, 1]
    # IoU exactly at the threshold is kept (face-api drops IoU > threshold)
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20]])  # IoU 0.5
    assert faceapi_ssd_nms(boxes, scores, 100, 0.5, 0.3).tolist() == [0, 1]
    # scores must exceed the score threshold
    assert faceapi_ssd_nms(boxes, torch.tensor([0.29, 0.31]), 100, 0.5, 0.3).tolist() == [1]


def test_trainable_detectors_nms_at_overlap_0_6():
    from facelab.models.base import FaceDetector
    from facelab.models.detection.faster_rcnn import FasterRCNNFace
    from facelab.models.detection.retinanet import RetinaNetFace
    from facelab.models.detection.sln import SLN
    from facelab.models.detection.ssd import SSDFace

    for cls in (SLN, SSDFace, RetinaNetFace, FasterRCNNFace):
        assert cls.nms_iou == 0.5 and cls.postprocess is FaceDetector.postprocess, cls.__name__
    det = FaceDetector()
    scores = torch.tensor([0.9, 0.8])
    out = det.postprocess(_pair(0.6).float(), scores, 0.5)
    assert out.scores.tolist() == [pytest.approx(0.9)] and len(out.boxes) == 1
    out = det.postprocess(_pair(0.45).float(), scores, 0.5)
    assert len(out.boxes) == 2
    # the score threshold keeps scores >= it
    out = det.postprocess(torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), torch.tensor([0.5, 0.49]), 0.5)
    assert out.scores.tolist() == [0.5]
