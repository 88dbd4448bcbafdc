"""Property tests (hypothesis) for invariants of the metrics and the patch attack.

Examples are derandomised (the same on every run), so a mutation run sees the same cases each time.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from facelab.attacks import UniversalPatchAttack, partial_mask, paste_patch, patch_boxes
from facelab.metrics import area_fbeta, evaluate, precision_recall_at, threshold_fbeta_curve

settings.register_profile("facelab", max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True)
# `make mutation` runs every surviving mutant against these tests: fewer (still fixed) examples there
settings.register_profile("mutation", parent=settings.get_profile("facelab"), max_examples=8)
settings.load_profile(os.environ.get("FACELAB_HYPOTHESIS_PROFILE", "facelab"))

# -- random detection problems --------------------------------------------------------------------------

_coord = st.integers(0, 6).map(lambda v: 10.0 * v)
_box = st.tuples(_coord, _coord, st.sampled_from([8.0, 10.0, 12.0]), st.sampled_from([8.0, 10.0, 14.0])).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@st.composite
def detection_problem(draw, max_images: int = 4, levels: int = 8):
    """Images with faces, ignore flags and detections whose scores are levels 0..levels-1 (as ints)."""
    n_img = draw(st.integers(1, max_images))
    images = []
    for _ in range(n_img):
        faces = draw(st.lists(_box, max_size=3))
        ignore = draw(st.lists(st.booleans(), min_size=len(faces), max_size=len(faces)))
        # detections: copies of faces (some shifted) and background boxes
        dets = draw(st.lists(st.one_of(st.sampled_from(faces) if faces else _box, _box), max_size=5))
        shift = draw(st.lists(st.sampled_from([0.0, 1.0, 3.0]), min_size=len(dets), max_size=len(dets)))
        dets = [[b[0] + s, b[1], b[2] + s, b[3]] for b, s in zip(dets, shift)]
        lv = draw(st.lists(st.integers(0, levels - 1), min_size=len(dets), max_size=len(dets)))
        images.append((np.array(faces, dtype=float).reshape(-1, 4), np.array(ignore, dtype=bool),
                       np.array(dets, dtype=float).reshape(-1, 4), np.array(lv, dtype=int)))
    return images


@st.composite
def monotone_map(draw, levels: int = 8):
    """A strictly increasing map of the levels 0..levels-1 to scores: random gaps of 0.05..1 from a random start."""
    gaps = draw(st.lists(st.floats(0.05, 1.0), min_size=levels, max_size=levels))
    start = draw(st.floats(-3.0, 3.0))
    return start + np.cumsum(gaps)


def _as_inputs(images, scores_of_level):
    dets = [(d, scores_of_level[lv]) for _, _, d, lv in images]
    gts = [g for g, _, _, _ in images]
    ignores = [ig for _, ig, _, _ in images]
    return dets, gts, ignores


def _normalisable(images, scores_of_level) -> bool:
    """WIDER's min-max normalisation needs max(0, s_max) > min(1, s_min)."""
    used = np.concatenate([scores_of_level[lv] for *_, lv in images])
    return len(used) > 0 and max(0.0, used.max()) > min(1.0, used.min())


def _as_wider(images, scores_of_level):
    """The same problem in the WIDER format (x y w h [score]); ignored faces leave the "easy" setting."""
    gt_all, gt_easy, preds = {}, {}, {}
    for i, (g, ig, d, lv) in enumerate(images):
        xywh = np.c_[g[:, :2], g[:, 2:] - g[:, :2]]
        gt_all[f"img{i}"] = {"boxes": xywh, "keep": None}
        gt_easy[f"img{i}"] = {"boxes": xywh, "keep": np.flatnonzero(~ig) + 1}
        preds[f"img{i}"] = np.c_[d[:, :2], d[:, 2:] - d[:, :2], scores_of_level[lv]].reshape(-1, 5)
    return {"ev": preds}, {"all": {"ev": gt_all}, "easy": {"ev": gt_easy}}


@given(detection_problem(), monotone_map(), monotone_map())
def test_ap_invariant_to_a_monotone_rescaling_of_the_scores(images, f, g):
    preds_f, gt = _as_wider(images, f)
    preds_g, _ = _as_wider(images, g)
    if not (_normalisable(images, f) and _normalisable(images, g)):
        return
    a, b = evaluate(preds_f, gt, settings=("easy", "all")), evaluate(preds_g, gt, settings=("easy", "all"))
    for s in ("easy", "all"):
        if np.isnan(a["ap"][s]):
            assert np.isnan(b["ap"][s])
        else:
            assert b["ap"][s] == pytest.approx(a["ap"][s], abs=1e-12), s


@given(detection_problem(), monotone_map(), monotone_map(), st.integers(0, 7))
def test_precision_recall_at_invariant_to_a_monotone_rescaling(images, f, g, level):
    # P/R at δ = f(level) under scores f equal P/R at g(level) under scores g
    a = precision_recall_at(*_as_inputs(images, f)[:2], delta=f[level], ignores=_as_inputs(images, f)[2])
    b = precision_recall_at(*_as_inputs(images, g)[:2], delta=g[level], ignores=_as_inputs(images, g)[2])
    for k in ("tp", "fp", "n_detections", "n_faces"):
        assert a[k] == b[k], k
    np.testing.assert_equal([a["precision"], a["recall"]], [b["precision"], b["recall"]])


@given(detection_problem(), monotone_map(), st.randoms(use_true_random=False))
def test_metrics_invariant_to_the_order_of_images(images, f, rnd):
    perm = list(range(len(images)))
    rnd.shuffle(perm)
    shuffled = [images[i] for i in perm]
    dets, gts, ignores = _as_inputs(images, f)
    dets2, gts2, ignores2 = _as_inputs(shuffled, f)
    for delta in (f[0], f[3], f[7]):
        a = precision_recall_at(dets, gts, delta=delta, ignores=ignores)
        b = precision_recall_at(dets2, gts2, delta=delta, ignores=ignores2)
        assert (a["tp"], a["fp"], a["n_faces"]) == (b["tp"], b["fp"], b["n_faces"])
    th = np.linspace(f[0] - 0.1, f[-1] + 0.1, 50)
    ca = threshold_fbeta_curve(dets, gts, betas=(0.5,), thresholds=th, ignores=ignores)
    cb = threshold_fbeta_curve(dets2, gts2, betas=(0.5,), thresholds=th, ignores=ignores2)
    np.testing.assert_array_equal(ca["tp"], cb["tp"])
    np.testing.assert_array_equal(ca["n_detections"], cb["n_detections"])
    np.testing.assert_equal(area_fbeta(curve=ca), area_fbeta(curve=cb))  # NaN (no counted face) == NaN
    # the official evaluator: images in another order (dict order) give the same AP
    preds, gt = _as_wider(images, f)
    if not _normalisable(images, f):
        return
    order = [f"img{i}" for i in perm]
    preds2 = {"ev": {k: preds["ev"][k] for k in order}}
    gt2 = {s: {"ev": {k: gt[s]["ev"][k] for k in order}} for s in gt}
    a, b = evaluate(preds, gt, settings=("easy", "all")), evaluate(preds2, gt2, settings=("easy", "all"))
    for s in ("easy", "all"):
        np.testing.assert_allclose(b["ap"][s], a["ap"][s], atol=1e-12)


@given(detection_problem(), monotone_map())
def test_counts_are_consistent(images, f):
    # TP never exceeds the counted faces or the kept detections; lowering δ never loses a TP or a detection
    dets, gts, ignores = _as_inputs(images, f)
    prev = None
    for delta in f[::-1]:
        r = precision_recall_at(dets, gts, delta=delta, ignores=ignores)
        assert 0 <= r["tp"] <= min(r["n_faces"], r["n_detections"])
        assert r["tp"] + r["fp"] == r["n_detections"]
        if prev is not None:
            assert r["tp"] >= prev["tp"] and r["n_detections"] >= prev["n_detections"]
        prev = r


# -- the patch --------------------------------------------------------------------------------------------

_gt_box = st.tuples(st.floats(0, 30), st.floats(0, 30), st.floats(8, 30), st.floats(8, 30)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@given(_gt_box, st.sampled_from(["top", "center", "bottom"]), st.integers(0, 2 ** 16))
def test_a_zero_mask_or_alpha_zero_changes_nothing(box, location, seed):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 64, 64, generator=g)
    patch = torch.rand(3, 16, 16, generator=g)
    gt = torch.tensor([box])
    out = paste_patch(image, patch, gt, 0.5, location, mask=torch.zeros(1, 16, 16))
    assert torch.equal(out, image)
    with pytest.raises(ValueError, match="alpha"):
        paste_patch(image, patch, gt, 0.0, location)


@given(_gt_box, st.floats(0.15, 1.0), st.sampled_from(["top", "center", "bottom"]))
@example(box=[0.0, 0.0, 8.0, 9.0], alpha=1.0, location="top")  # the patch box sticks out left of the image
def test_pasted_area_is_the_patch_area(box, alpha, location):
    # a white patch on black: the pasted mass is s², s = α·sqrt(w·h), inside the image (exact for s >= 1 px; the analytic
    # coverage over-covers sub-pixel patches), and nothing lands outside the patch box
    gt = torch.tensor([box])
    out = paste_patch(torch.zeros(3, 80, 80), torch.ones(3, 32, 32), gt, alpha, location)
    x1, y1, x2, y2 = patch_boxes(gt, alpha, location)[0].tolist()
    # s x s, less what falls outside the image (a patch wider than a face at the border is clipped)
    inside = (min(x2, 80.0) - max(x1, 0.0)) * (min(y2, 80.0) - max(y1, 0.0))
    assert out[0].sum().item() == pytest.approx(inside, rel=1e-3, abs=1e-3)
    ys, xs = torch.nonzero(out[0] > 0, as_tuple=True)
    assert ys.min() >= np.floor(y1) and ys.max() < np.ceil(y2) and xs.min() >= np.floor(x1) and xs.max() < np.ceil(x2)
    assert out.max() <= 1 + 1e-6


@given(_gt_box, st.floats(0.1, 1.0), st.sampled_from(["top", "bottom", "left", "right"]))
def test_partial_patch_only_changes_the_kept_part(box, keep, side):
    # pasting with a partial mask changes a subset of what the full patch changes
    gt = torch.tensor([box])
    full = paste_patch(torch.zeros(3, 80, 80), torch.ones(3, 32, 32), gt, 0.8, "center")
    part = paste_patch(torch.zeros(3, 80, 80), torch.ones(3, 32, 32), gt, 0.8, "center", mask=partial_mask(32, keep, side))
    assert (part <= full + 1e-6).all()
    assert part.sum() <= full.sum() * min(1.0, keep + 0.2) + 1e-3


class _LinearDetector(torch.nn.Module):
    """Scores = sigmoid of a fixed linear map of the pixels (a differentiable toy victim)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(4, 3, 8, 8, generator=g))

    def dense(self, images):
        from facelab.models.base import DenseOutput

        x = torch.nn.functional.adaptive_avg_pool2d(images, 8)
        lg = torch.einsum("bchw,achw->ba", x, self.w)
        a = torch.tensor([[0.0, 0, 32, 32], [8, 8, 40, 40], [0, 8, 32, 40], [8, 0, 40, 32]])[None].expand(len(images), -1, -1)
        return DenseOutput(a, a, torch.sigmoid(lg), lg)


@given(st.integers(0, 1000), st.floats(0.01, 5.0), st.sampled_from(["patch_iou", "patch_score", "patch_combination"]))
def test_patch_stays_in_the_unit_box_and_zero_epochs_change_nothing(seed, lr, method):
    det = _LinearDetector(seed)
    data = [(torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(seed)), torch.tensor([[4.0, 4, 36, 36]]))]
    atk = UniversalPatchAttack(det, method, size=8, lr=lr, seed=seed, score_threshold=0.0)
    p0 = atk.patch.detach().clone()
    snaps = atk.fit(data, epochs=0, snapshots=(0,))
    assert torch.equal(atk.patch.detach(), p0) and torch.equal(snaps[0], p0)
    atk.fit(data, epochs=2, batch_size=1)
    assert atk.patch.min() >= 0 and atk.patch.max() <= 1
    assert not torch.equal(atk.patch.detach(), p0)
    assert [p.requires_grad for p in det.parameters()] == [True]


# -- ε-ball attacks (I-FGSM / PGD, FFA / FGS, LIP) ------------------------------------------------------

def _quadratic_loss(seed: int):
    """A smooth loss with a seed-dependent gradient field (batch of per-image losses summed)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 6, 6, generator=g)
    return lambda z: ((z - 0.5) * w).sum() + (z * z).sum() * 0.1


_eps = st.sampled_from([0.0, 1 / 255, 2 / 255, 8 / 255, 0.05, 0.3])


@given(st.integers(0, 2 ** 16), _eps, st.integers(0, 6), st.booleans(), st.sampled_from([None, 0.5, 2.0]))
def test_ifgsm_never_leaves_the_eps_ball_or_the_unit_box(seed, eps, steps, random_start, alpha_ratio):
    from facelab.attacks.fgsm import ifgsm

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 6, 6, generator=g)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5])  # pixels on the box's faces
    alpha = None if alpha_ratio is None or steps == 0 else eps / steps * alpha_ratio
    adv = ifgsm(x, _quadratic_loss(seed), eps, steps, alpha, random_start=random_start, generator=g)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float((adv - x).abs().max()) <= eps + 1e-7
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if (steps == 0 and not random_start) or eps == 0:
        assert torch.equal(adv, x)


@given(st.integers(0, 2 ** 16), _eps, st.sampled_from(["euclidean", "softmax"]), st.integers(0, 1))
def test_ffa_and_fgs_single_step_stay_in_the_eps_ball(seed, eps, kind, index):
    from facelab.attacks.ffa import ffa, fgs

    g = torch.Generator().manual_seed(seed)
    net = _ffa_linear(kind, g)
    x = torch.rand(3, 3, 4, 4, generator=g)
    for attack in (ffa, fgs):
        adv = attack(net, x, index, eps)
        assert float((adv - x).abs().max()) <= eps + 1e-7
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
        if eps == 0:
            assert torch.equal(adv, x)


def _ffa_linear(kind: str, g: torch.Generator):
    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(2, 48, generator=g))
            self.loss_kind = kind

        def forward(self, x):
            return x.flatten(1) @ self.w.t()

        def logits(self, x):
            f = self(x)
            return torch.stack([torch.zeros_like(f), f], -1)

    return Linear()


@pytest.fixture(scope="module")
def tiny_detector():
    from test_attacks_patch import TinyDetector

    torch.manual_seed(0)
    return TinyDetector().eval()


@settings(max_examples=min(10, settings.default.max_examples // 2))  # each example runs a detector attack
@given(st.integers(0, 2 ** 16), st.sampled_from([0.0, 2 / 255, 0.05]), st.integers(0, 3),
       st.sampled_from(["imp", "lp", "lip_a", "lip_h"]))
def test_lip_attacks_stay_in_the_eps_ball_and_lp_outside_the_regions_is_untouched(tiny_detector, seed, eps, steps,
                                                                                   method):
    from facelab.attacks.lip import box_regions, lip_attack

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 32, 32, generator=g)
    boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0], [18.0, 16.0, 30.0, 30.0]])
    regions = [box_regions(boxes, (32, 32))]
    adv = lip_attack(tiny_detector, x, [boxes], method, eps, steps, regions=None if method == "imp" else regions)
    assert float((adv - x).abs().max()) <= eps + 1e-7
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if steps == 0 or eps == 0:
        assert torch.equal(adv, x)
    if method == "lp":
        outside = regions[0].amax(0) == 0
        assert torch.equal(adv[0][:, outside], x[0][:, outside])
