"""facelab MTCNN vs facenet-pytorch 2.5.3 (the reference implementation whose weights it loads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facelab import assets
from facelab.models import load
from facelab.models.mtcnn import MTCNN, WindowOutput, nms_min, pyramid_scales

facenet = pytest.importorskip("facenet_pytorch")
from facenet_pytorch.models.utils import detect_face as fdf  # noqa: E402

FACE_API = [f"face-api/demo/sample{i}.jpg" for i in range(1, 7)]
PHOTOS = [pytest.param(n, marks=pytest.mark.slow) for n in FACE_API] + ["insightface/t1.jpg"]


@pytest.fixture(scope="module")
def model() -> MTCNN:
    return load("mtcnn")


@pytest.fixture(scope="module")
def reference():
    return facenet.MTCNN(keep_all=True, device="cpu")


def _pil(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    im = Image.open(assets.path(name)).convert("RGB")
    return im.resize(size, Image.BILINEAR) if size else im


def _tensor(pil: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255


def _ref_sorted(boxes, probs, points):
    """facenet-pytorch output (largest-first with select_largest=True) re-sorted by descending prob."""
    if boxes is None:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")
    return np.asarray(boxes, dtype=np.float64)[order], probs[order], np.asarray(points, dtype=np.float64)[order]


def _assert_same(det, pts, ref):
    boxes, probs, points = ref
    assert len(det) == len(probs), f"{len(det)} faces vs facenet-pytorch {len(probs)}"
    assert np.all(np.diff(det.scores.numpy()) <= 0), "not sorted by descending score"
    np.testing.assert_allclose(det.boxes.numpy(), boxes, atol=0.5, rtol=0)
    np.testing.assert_allclose(det.scores.numpy(), probs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pts.numpy(), points, atol=0.5, rtol=0)


@pytest.mark.parametrize("name", PHOTOS)
def test_matches_facenet_pytorch(model, reference, name):
    pil = _pil(name)
    (det, pts), = model.detect_with_landmarks(_tensor(pil))
    ref = _ref_sorted(*reference.detect(pil, landmarks=True))
    assert len(ref[1]) > 0, "reference found no face; the photo is not a useful check"
    _assert_same(det, pts, ref)


def test_batch_matches_facenet_batch_and_single(model, reference):
    """Like with like: a batch of two equal-size images vs facenet's list-of-PIL batch path."""
    a = _pil("insightface/t1.jpg", (360, 249))
    b = a.transpose(Image.FLIP_LEFT_RIGHT)
    batch = torch.stack([_tensor(a), _tensor(b)])
    ours = model.detect_with_landmarks(batch)
    rb, rp, rl = reference.detect([a, b], landmarks=True)
    for i in range(2):
        _assert_same(*ours[i], _ref_sorted(rb[i], rp[i], rl[i]))
    single = model.detect(list(batch))  # list input: each image alone
    for s, (d, _) in zip(single, ours):
        torch.testing.assert_close(s.boxes, d.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(s.scores, d.scores, atol=1e-5, rtol=0)
    assert len(ours[0][0]) >= 3


def test_networks_match_facenet_modules(model):
    torch.manual_seed(0)
    ref = [fdf_net() for fdf_net in (facenet.PNet, facenet.RNet, facenet.ONet)]
    for net, r, size in zip((model.pnet, model.rnet, model.onet), ref, (31, 24, 48)):
        x = torch.randn(3, 3, size, size)
        with torch.no_grad():
            ours, theirs = net(x), r(x)
        torch.testing.assert_close(ours[:-1], theirs[:-1], atol=1e-5, rtol=0)  # offsets (+ landmarks)
        torch.testing.assert_close(torch.softmax(ours[-1], 1), theirs[-1], atol=1e-6, rtol=0)


def test_pyramid_and_dense_anchors_match_generate_bounding_box(model):
    x = _tensor(_pil("insightface/t1.jpg", (300, 208)))[None]
    scales = pyramid_scales(208, 300)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 7
    out = model.dense(x)
    a = 0
    for scale, reg, lg in model._pnet_pyramid(x):
        n = reg.shape[2] * reg.shape[3]
        ref, _ = fdf.generateBoundingBox(reg, torch.softmax(lg, 1)[:, 1], scale, -1.0)  # all cells, row-major
        torch.testing.assert_close(out.anchors[0, a : a + n], ref[:, :4])
        torch.testing.assert_close(out.scores[0, a : a + n], ref[:, 4])
        wh = (ref[:, 2:4] - ref[:, 0:2]).repeat(1, 2)
        torch.testing.assert_close(out.boxes[0, a : a + n], ref[:, :4] + ref[:, 5:9] * wh)
        a += n
    assert a == out.scores.shape[1] == out.logits.shape[1]
    torch.testing.assert_close(torch.sigmoid(out.logits), out.scores, atol=1e-5, rtol=0)


def test_window_scores_exact_reproduce_cascade(model, monkeypatch):
    """The public window path with crop="exact" is the computation the cascade thresholds on."""
    x = _tensor(_pil("insightface/t1.jpg", (360, 249)))[None]
    seen = {}
    orig = model._score_windows

    def spy(x255, inds, boxes, stage, crop):
        out = orig(x255, inds, boxes, stage, crop)
        seen[stage] = (boxes.clone(), out)
        return out

    monkeypatch.setattr(model, "_score_windows", spy)
    model.detect(x)
    monkeypatch.undo()
    for stage in ("rnet", "onet"):
        boxes, ref = seen[stage]
        out = model.window_forward(x, [boxes], stage, crop="exact")[0]
        torch.testing.assert_close(out.scores, ref.scores)
        torch.testing.assert_close(out.offsets, ref.offsets)
        approx = model.window_scores(x, boxes[None], stage, crop="roi_align")[0]
        assert approx.shape == ref.scores.shape
        assert (approx - ref.scores).abs().median() < 0.05
    assert seen["onet"][1].landmarks is not None and out.landmarks.shape == (len(boxes), 5, 2)


@pytest.mark.parametrize("crop", ["roi_align", "exact"])
@pytest.mark.parametrize("stage", ["pnet", "rnet", "onet"])
def test_window_score_gradient_reaches_pixels(model, stage, crop):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 80, requires_grad=True)
    boxes = torch.tensor([[[5.0, 5.0, 40.0, 40.0], [30.0, 10.0, 70.0, 50.0]]]).expand(2, -1, -1)
    s = model.window_scores(x, boxes, stage, crop=crop)
    assert s.shape == (2, 2) and torch.all((s >= 0) & (s <= 1))
    s.sum().backward()
    g = x.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert g[:, :, 10:40, 10:40].abs().sum() > 0  # inside the windows
    assert g[:, :, 55:, :].abs().sum() == 0  # below every window


def test_dense_gradient_reaches_pixels(model):
    x = torch.rand(1, 3, 48, 56, requires_grad=True)
    out = model.dense(x)
    assert out.anchors.shape == out.boxes.shape and out.scores.shape == out.anchors.shape[:2]
    out.scores.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_small_image_and_outside_windows(model):
    tiny = torch.rand(1, 3, 15, 40)
    out = model.dense(tiny)
    assert out.scores.shape == (1, 0) and out.boxes.shape == (1, 0, 4)
    assert len(model.detect(tiny)[0]) == 0
    out = model.window_forward(torch.rand(1, 3, 32, 32), torch.tensor([[[100.0, 100, 120, 120]]]), "onet")
    assert isinstance(out, WindowOutput) and out.scores.item() == 0 and out.logits.item() == float("-inf")


def test_nms_min():
    boxes = torch.tensor([[0.0, 0, 9, 9], [2, 2, 5, 5], [20, 20, 30, 30], [25, 0, 40, 9]])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    # box 1 lies inside box 0 -> Min overlap 1 > 0.7: box 0 is suppressed by the higher-scored box 1
    assert nms_min(boxes, scores, 0.7).tolist() == [1, 3, 2]
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=g) * 40], 1)
    scores = torch.rand(60, generator=g)
    ref = fdf.nms_numpy(boxes.numpy(), scores.numpy(), 0.7, "Min")
    assert nms_min(boxes, scores, 0.7).tolist() == ref.tolist()


def test_bad_input(model):
    with pytest.raises(ValueError, match="grayscale"):
        model.dense(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError, match="uint8|float"):
        model.detect(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        model.detect(torch.full((3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="stage"):
        model.window_scores(torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 4), "xnet")
    with pytest.raises(ValueError, match="boxes"):
        model.window_scores(torch.rand(2, 3, 32, 32), torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="crop"):
        model.window_scores(torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 4) + 5, crop="nearest")
    with pytest.raises(ValueError, match="thresholds"):
        MTCNN(thresholds=(0.5, 0.5))


def test_to_device(model):
    x = _tensor(_pil("insightface/t1.jpg", (240, 166)))[None]
    ref = model.detect(x)[0]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        m = load("mtcnn", device=dev)
        assert all(p.device.type == dev for p in m.parameters())
        d = m.detect(x.to(dev))[0]
        assert d.boxes.device.type == dev and len(d) == len(ref)
        torch.testing.assert_close(d.boxes.cpu(), ref.boxes, atol=0.5, rtol=0)
        torch.testing.assert_close(d.scores.cpu(), ref.scores, atol=1e-4, rtol=0)
        out = m.dense(x.to(dev))
        assert out.scores.device.type == dev



def _stage_inputs(net: torch.nn.Module) -> tuple[list[int], object]:
    sizes: list[int] = []
    return sizes, net.register_forward_hook(lambda m, inp, out: sizes.append(int(inp[0].shape[0])))


@pytest.mark.parametrize("name, factor, batch", [
    ("insightface/t1.jpg", 0.709, False),
    ("insightface/Tom_Hanks_54745.png", 0.8, False),
    ("skimage/astronaut.png", 0.8, True),
])
def test_stage_candidate_counts_match_facenet_pytorch(name, factor, batch):
    """Stage 1 (P-Net, NMS 0.5 per scale and 0.7 per image) hands R-Net as many windows as facenet-pytorch,
    and stage 2 (NMS 0.7) hands O-Net as many: the NMS thresholds agree, not only the final boxes. With the
    default pyramid factor 0.709 boxes of neighbouring scales overlap by IoU <= ~0.52, so the per-image 0.7
    only shows with a finer pyramid (0.8: nested boxes of neighbouring scales have IoU 0.64)."""
    from facelab.models.mtcnn import mtcnn

    ours, ref = mtcnn(factor=factor), facenet.MTCNN(keep_all=True, device="cpu", factor=factor)
    a = _pil(name)
    imgs = [a, a.transpose(Image.FLIP_LEFT_RIGHT)] if batch else [a]
    counts = {}
    for who, m in (("ours", ours), ("ref", ref)):
        hooks, sizes = [], {}
        for stage in ("rnet", "onet"):
            sizes[stage], h = _stage_inputs(getattr(m, stage))
            hooks.append(h)
        try:
            if who == "ours":
                ours.detect(torch.stack([_tensor(p) for p in imgs]))
            else:
                ref.detect(imgs if batch else imgs[0])
        finally:
            for h in hooks:
                h.remove()
        counts[who] = {k: sum(v) for k, v in sizes.items()}
    assert counts["ours"] == counts["ref"], counts
    assert counts["ref"]["rnet"] > counts["ref"]["onet"] > 0
