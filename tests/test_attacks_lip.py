"""IMP / LP / LIP (facelab.attacks.lip) and the ERF measurement (facelab.attacks.erf) on a small conv detector."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelab.attacks import erf
from facelab.attacks.lip import (
    METHODS, anchor_regions, assign_anchors, box_regions, dense_of, disc_regions, faces_alive, imp_loss,
    instance_gradients,
    instance_losses, lip_attack, lip_loss, localized_gradient, region_groups,
)
from facelab.attacks.fgsm import ifgsm
from facelab.models.base import DenseOutput
from test_attacks_patch import TinyDetector

#: TinyDetector's theoretical receptive field: 3x3 convs at strides 1, 2, 2 and a 3x3 head at stride 4:
#: 1 + 2 + 2*2 + 2*4 + 2*4 = 23 pixels wide, radius 11
TINY_TRF_RADIUS = 11


def scene(n_faces=2, size=64, spread=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g) * 0.5 + 0.25
    if spread:
        boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [44.0, 44.0, 60.0, 60.0], [4.0, 44.0, 20.0, 60.0]])[:n_faces]
    else:
        boxes = torch.tensor([[20.0, 24.0, 36.0, 40.0], [30.0, 24.0, 46.0, 40.0]])[:n_faces]
    return x, boxes


@pytest.fixture(scope="module")
def det():
    return TinyDetector().eval()


def losses_fn(det, boxes, iou=0.3):
    def f(X):
        return torch.stack(instance_losses(dense_of(det, X), [boxes] * X.shape[0], iou))
    return f


# -- assignment and losses -----------------------------------------------------------------------------
def test_assign_anchors_by_decoded_iou_and_best_prior():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110], [0, 0, 40, 40]])
    decoded = anchors.clone()
    decoded[2] = torch.tensor([21.0, 21, 31, 31])  # decoded onto face 1 although its prior is far away
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [200, 200, 210, 210]])
    a = assign_anchors(decoded, anchors, gt, 0.3)
    # anchor 0 -> face 0 (IoU 1), anchor 1 and 2 -> face 1, anchor 3 (IoU 0.0625 with face 0) stays background,
    # face 2 overlaps nothing but keeps its best prior (the first, all IoU 0 -> argmax 0 ... overwritten to 2)
    assert a.tolist()[1:3] == [1, 1] and a[3] == -1
    assert (a == 2).sum() == 1  # every face keeps one prior
    with pytest.raises(ValueError, match="iou"):
        assign_anchors(decoded, anchors, gt, 0.0)


def test_instance_losses_are_softplus_sums_over_assigned_anchors():
    anchors = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]]])
    logits = torch.tensor([[2.0, -1.0, 3.0]])
    d = DenseOutput(anchors, anchors, torch.sigmoid(logits), logits)
    (L,) = instance_losses(d, [torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])])
    assert torch.allclose(L, torch.tensor([F.softplus(torch.tensor(2.0)) + F.softplus(torch.tensor(-1.0)),
                                           F.softplus(torch.tensor(3.0))]))
    # without logits: -log(1 - s), the same value
    d2 = DenseOutput(anchors, anchors, torch.sigmoid(logits), None)
    assert torch.allclose(instance_losses(d2, [torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])])[0], L, atol=1e-5)
    with pytest.raises(ValueError, match="gts"):
        instance_losses(d, [])


# -- regions ---------------------------------------------------------------------------------------------
def test_box_and_disc_regions_hand_counted():
    b = box_regions(torch.tensor([[1.0, 2.0, 4.0, 3.0]]), (6, 6))  # pixel centres x 1.5..3.5, y 2.5
    assert b.sum() == 3 and b[0, 2, 1:4].tolist() == [1, 1, 1]
    d = disc_regions(torch.tensor([[3.0, 3.0]]), 1.0, (6, 6))  # centres (2.5|3.5, 2.5|3.5): 4 at distance 0.71
    assert d.sum() == 4
    assert disc_regions(torch.tensor([[3.0, 3.0]]), 0.0, (6, 6)).sum() == 0
    with pytest.raises(ValueError, match="radius"):
        disc_regions(torch.tensor([[3.0, 3.0]]), -1.0, (6, 6))


def test_region_groups_separate_close_regions_only():
    far = disc_regions(torch.tensor([[5.0, 5.0], [55.0, 55.0]]), 3.0, (64, 64))
    assert region_groups(far, 10) == [[0, 1]]
    assert region_groups(far, 80) == [[0], [1]]
    with pytest.raises(ValueError, match="reach"):
        region_groups(far, -1)


def test_anchor_regions_cover_the_assigned_priors(det):
    x, boxes = scene(1)
    d = det.dense(x)
    r = anchor_regions(d, boxes, (64, 64))
    a = assign_anchors(d.boxes[0], d.anchors[0], boxes)
    union = box_regions(d.anchors[0][a == 0], (64, 64)).amax(0)
    assert torch.equal(r[0], union) and r[0].sum() > 0


# -- per-instance gradients --------------------------------------------------------------------------------
def test_batched_instance_gradients_equal_the_loop(det):
    x, boxes = scene(3)
    f = losses_fn(det, boxes)
    loop = instance_gradients(f, x, "loop")
    assert loop.shape == (3, 3, 64, 64) and loop.abs().sum() > 0
    for mode in ("replicate", "vmap"):
        assert torch.allclose(instance_gradients(f, x, mode), loop, atol=1e-6), mode
    # each instance's gradient is its own: instance 0's differs from the sum
    assert not torch.allclose(loop[0], loop.sum(0))
    with pytest.raises(ValueError, match="mode"):
        instance_gradients(f, x, "bogus")
    with pytest.raises(ValueError, match="one image"):
        instance_gradients(f, torch.cat([x, x]), "loop")


def test_grouped_gradients_exact_beyond_the_receptive_field(det):
    x, boxes = scene(2, spread=True)  # faces ~40 px apart: regions of radius 4 are > 2 TRF radii apart
    f = losses_fn(det, boxes)
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 4.0, (64, 64))
    loop = instance_gradients(f, x, "loop")
    groups = region_groups(masks, 2 * TINY_TRF_RADIUS)
    assert groups == [[0, 1]]
    g = instance_gradients(f, x, "group", masks=masks, groups=groups)
    assert torch.allclose(g, loop * masks[:, None], atol=1e-6)
    # close faces: one group is not exact (the neighbour's loss reaches the region) -- the reason for reach
    x2, b2 = scene(2, spread=False)
    f2 = losses_fn(det, b2)
    m2 = disc_regions((b2[:, :2] + b2[:, 2:]) / 2, 4.0, (64, 64))
    wrong = instance_gradients(f2, x2, "group", masks=m2, groups=[[0, 1]])
    assert not torch.allclose(wrong, instance_gradients(f2, x2, "loop") * m2[:, None], atol=1e-6)
    with pytest.raises(ValueError, match="group"):
        instance_gradients(f, x, "group")


def test_lip_loss_gradient_is_the_sum_of_cropped_instance_gradients(det):
    x, boxes = scene(3)
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 9.0, (64, 64))
    R = localized_gradient(instance_gradients(losses_fn(det, boxes), x, "loop"), masks)
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(lip_loss(det, [boxes], [masks])(xx).sum(), xx)
    assert torch.allclose(g, -R, atol=1e-6)  # ifgsm ascends the objective: it steps along -sign(R)
    # IMP's objective: minus the sum of all instance losses
    xx = x.clone().requires_grad_(True)
    (gi,) = torch.autograd.grad(imp_loss(det, [boxes])(xx).sum(), xx)
    assert torch.allclose(gi, -instance_gradients(losses_fn(det, boxes), x, "loop").sum(0, keepdim=True), atol=1e-6)
    with pytest.raises(ValueError, match="masks"):
        localized_gradient(torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"masks\[0\]"):
        lip_loss(det, [boxes], [masks[:2]])


# -- the attack ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_attack_stays_in_the_ball_and_inside_its_regions(det, method):
    x, boxes = scene(2)
    regions = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 8.0, (64, 64))
    eps = 4 / 255
    xa = lip_attack(det, x, [boxes], method, eps, 3, 2 / 255, regions=[regions])
    assert (xa - x).abs().max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    changed = (xa - x).abs().sum(1)[0] > 0
    if method == "imp":
        assert changed[regions.amax(0) == 0].any()  # the whole-image gradient moves pixels outside the regions
    else:
        assert not changed[regions.amax(0) == 0].any()  # nothing outside the instance regions
        assert changed.any()
    assert torch.equal(lip_attack(det, x, [boxes], method, eps, 0, regions=[regions]), x)


def test_attack_lowers_the_instance_losses_and_full_regions_lip_equals_imp(det):
    x, boxes = scene(1)
    full = torch.ones(1, 64, 64)
    imp = lip_attack(det, x, [boxes], "imp", 8 / 255, 3, 2 / 255)
    lip = lip_attack(det, x, [boxes], "lip_h", 8 / 255, 3, 2 / 255, regions=[full])
    assert torch.equal(imp, lip)  # one face, its region the whole image: LIP is IMP
    f = losses_fn(det, boxes)
    assert f(imp)[0, 0] < f(x)[0, 0]


def test_attack_rejects_bad_input(det):
    x, boxes = scene(1)
    with pytest.raises(ValueError, match="method"):
        lip_attack(det, x, [boxes], "fgsm", 1 / 255, 1)
    with pytest.raises(ValueError, match="regions"):
        lip_attack(det, x, [boxes], "lip_a", 1 / 255, 1)
    with pytest.raises(ValueError, match="gts"):
        lip_attack(det, x, [boxes, boxes], "imp", 1 / 255, 1)
    with pytest.raises(TypeError, match="dense output"):
        dense_of(torch.nn.Identity(), x)


def test_stop_rule_freezes_a_scene_without_live_faces(det):
    x, boxes = scene(1)
    xa = lip_attack(det, x, [boxes], "imp", 8 / 255, 3, 2 / 255, stop_delta=1.0)  # no score reaches 1: stop at once
    assert torch.equal(xa, x)


# -- ERF -------------------------------------------------------------------------------------------------
def test_gaussian_r2_and_erf_stats_on_known_maps():
    ys, xs = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    g = torch.exp(-((xs - 20) ** 2 + (ys - 18) ** 2) / (2 * 4.0 ** 2))
    assert erf.gaussian_r2(g) > 0.999
    assert erf.gaussian_r2(torch.rand(41, 41, generator=torch.Generator().manual_seed(0))) < 0.2
    st = erf.erf_stats(g, threshold=math.exp(-2))  # the 2-sigma disc: radius 8 -> area ~ pi 64
    assert abs(st["erf_radius"] - 8.0) < 0.6 and (st["peak_x"], st["peak_y"]) == (20.0, 18.0)
    assert st["trf_area"] == 41 * 41 and 0 < st["ratio"] < 1
    with pytest.raises(ValueError, match="threshold"):
        erf.erf_stats(g, threshold=1.5)
    with pytest.raises(ValueError, match="zero"):
        erf.erf_stats(torch.zeros(5, 5))
    assert erf.erf_radius_in_image(10.0, 256, (128, 512)) == 20.0


def test_erf_of_the_tiny_detector_lies_inside_its_theoretical_rf(det):
    ims = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    d = det.dense(ims[:1])
    scales = erf.anchor_scales(d.anchors[0])
    assert sorted(scales) == [8.0, 16.0, 32.0]
    a = erf.centre_anchor(d.anchors[0], scales[16.0], (64, 64))
    c = (d.anchors[0, a, :2] + d.anchors[0, a, 2:]) / 2
    grads = erf.erf_gradients(det, ims, a)
    ys, xs = torch.nonzero(grads.amax(0) > 0, as_tuple=True)
    assert (xs - c[0]).abs().max() <= TINY_TRF_RADIUS and (ys - c[1]).abs().max() <= TINY_TRF_RADIUS
    st = erf.erf_stats(grads.mean(0), support=grads.amax(0))
    assert st["erf_area"] <= st["trf_area"] <= (2 * TINY_TRF_RADIUS + 1) ** 2
    with pytest.raises(ValueError, match="anchor"):
        erf.erf_gradients(det, ims, 10 ** 6)


class FakeCenterNet(nn.Module):
    """A CenterNet-like object detector (``stride``, ``labels``, ``input_size``; ``forward`` -> heat [B,C,h,w] and
    box extents [B,4,h,w]) with given outputs."""

    stride, labels, input_size = 4, ("person", "face", "car"), 12

    def __init__(self, heat: torch.Tensor, wh: torch.Tensor) -> None:
        super().__init__()
        self.heat, self.wh = heat, wh

    def forward(self, x):
        return self.heat + 0 * x.mean(), self.wh


def test_centernet_dense_output_hand_computed():
    """One 'anchor' per heat-map cell, cell by cell in row order: the score is the cell's best class, the prior a
    stride-sized square at (col, row) * stride, the box the cell centre minus/plus the four extents; all in the
    pixels of the image (input_size 12 -> a 16 x 24 image: x * 2, y * 4/3); logits are the log-odds."""
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(2, 3, 2, 3, generator=g) * 0.98 + 0.01
    heat[1, 2, 1, 2] = 1.0  # clamped to 1 - 1e-6 for the log-odds
    heat[0, :, 0, 0] = 0.0  # a cell with no object: clamped to 1e-6
    wh = torch.rand(2, 4, 2, 3, generator=g) * 5
    x = torch.zeros(2, 3, 16, 24)
    d = dense_of(FakeCenterNet(heat, wh), x)
    assert d.scores.shape == (2, 6) and d.boxes.shape == (2, 6, 4) and d.anchors.shape == (2, 6, 4)
    sx, sy, s = 24 / 12, 16 / 12, 4
    for b in range(2):
        for row in range(2):
            for col in range(3):
                k = row * 3 + col
                p = float(heat[b, :, row, col].max())
                assert d.scores[b, k].item() == pytest.approx(p)
                q = torch.tensor(p).clamp(1e-6, 1 - 1e-6).item()  # (in float32, as the net computes)
                assert d.logits[b, k].item() == pytest.approx(math.log(q) - math.log1p(-q), rel=1e-4)
                cx, cy = col * s, row * s
                e = wh[b, :, row, col].tolist()
                want = [(cx - e[0]) * sx, (cy - e[1]) * sy, (cx + e[2]) * sx, (cy + e[3]) * sy]
                assert d.boxes[b, k].tolist() == pytest.approx(want, abs=1e-5)
                prior = [(cx - s / 2) * sx, (cy - s / 2) * sy, (cx + s / 2) * sx, (cy + s / 2) * sy]
                assert d.anchors[b, k].tolist() == pytest.approx(prior, abs=1e-5)
    assert math.isfinite(d.logits[1, 5].item()) and d.logits[1, 5].item() > 13  # log-odds of 1 - 1e-6
    assert d.scores[0, 0].item() == 0 and d.logits[0, 0].item() == pytest.approx(math.log(1e-6) - math.log1p(-1e-6), rel=1e-4)
    with pytest.raises(TypeError, match=r"^model: Linear has no dense output"):
        dense_of(nn.Linear(2, 2), x)


# -- exact regions, assignment and anchor losses (issue 19) ------------------------------------------------------
def test_box_regions_include_pixel_centres_on_the_box_edges():
    """Pixel centres (k + 0.5) on a box edge are inside; two boxes give two masks."""
    m = box_regions(torch.tensor([[1.5, 0.5, 3.5, 1.5], [0.0, 2.0, 1.0, 4.0]]), (4, 5))
    want0 = torch.zeros(4, 5)
    want0[0:2, 1:4] = 1  # x centres 1.5, 2.5, 3.5; y centres 0.5, 1.5
    want1 = torch.zeros(4, 5)
    want1[2:4, 0] = 1  # x centre 0.5; y centres 2.5, 3.5
    assert torch.equal(m, torch.stack([want0, want1]))


def test_disc_regions_hand_counted():
    """A disc holds the pixel centres at distance <= r (a centre exactly at r counts); one radius for all
    centres or one per centre; x is the first coordinate."""
    m = disc_regions(torch.tensor([[2.5, 1.5], [0.5, 3.5]]), 1.0, (5, 6))
    want = torch.zeros(2, 5, 6)
    for (y, x) in ((1, 2), (0, 2), (2, 2), (1, 1), (1, 3)):
        want[0, y, x] = 1
    for (y, x) in ((3, 0), (2, 0), (4, 0), (3, 1)):
        want[1, y, x] = 1
    assert torch.equal(m, want)
    per = disc_regions(torch.tensor([[2.5, 1.5], [0.5, 3.5]]), torch.tensor([0.0, 1.0]), (5, 6))
    assert per[0].sum() == 1 and per[0, 1, 2] == 1 and torch.equal(per[1], want[1])
    big = disc_regions(torch.tensor([[2.5, 2.5]]), 2.0, (5, 5))  # r = 2: d² <= 4, not d <= 4 (that is 2 r)
    assert int(big.sum()) == 13


def test_assign_anchors_iou_tie_bound_and_default():
    """An anchor whose decoded box has IoU exactly ``iou`` with a face belongs to it; iou = 1 is allowed; the
    default is 0.3 (and reaches instance_losses and anchor_regions)."""
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 3.0], [0.0, 0.0, 10.0, 2.9], [50, 50, 60, 60.0]])
    anchors = boxes.clone()
    assert assign_anchors(boxes, anchors, gt).tolist() == [0, 0, -1, -1]  # IoU 1, 0.3 (tie), 0.29, 0
    assert assign_anchors(boxes, anchors, gt, 1.0).tolist() == [0, -1, -1, -1]
    with pytest.raises(ValueError, match=r"^iou: must lie in \(0, 1\], got 1.5$"):
        assign_anchors(boxes, anchors, gt, 1.5)
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    dense = DenseOutput(anchors[None], boxes[None], scores, None)
    (loss,) = instance_losses(dense, [gt])
    assert loss.tolist() == pytest.approx([2 * math.log(2)])  # two anchors, -log(1 - 0.5) each
    regions = anchor_regions(dense, gt, (12, 12))
    assert int(regions.sum()) == 100  # the union of the two priors: the 10 x 10 box
    with pytest.raises(ValueError, match=r"^gts: 2 box lists for a batch of 1 images$"):
        instance_losses(dense, [gt, gt])


def test_anchor_loss_from_scores_is_finite_at_one():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]]])
    dense = DenseOutput(boxes, boxes, torch.tensor([[1.0, 0.75]]), None)
    (loss,) = instance_losses(dense, [torch.tensor([[0.0, 0.0, 10.0, 10.0]])])
    q = torch.tensor(1.0).clamp(max=1 - 1e-6).item()  # 1 - 1e-6 in float32
    assert loss.item() == pytest.approx(-math.log1p(-q) - math.log(0.25), rel=1e-4)


def test_region_groups_reach_boundaries():
    """Regions 0 (cols 0-1), 1 (cols 4-5), 2 (col 7): reach 0 groups all (no overlap); reach 1.5 is rounded up to
    2 px, which joins 1 and 2 (1 empty column) but not 0 and 1 (2 empty columns); reach 3 separates 0 and 1 too.
    Adjacent regions share a group at reach 0 only."""
    m = torch.zeros(3, 1, 12)
    m[0, 0, 0:2] = 1
    m[1, 0, 4:6] = 1
    m[2, 0, 7:8] = 1
    assert region_groups(m, 0) == [[0, 1, 2]]
    assert region_groups(m, 1) == [[0, 1, 2]]
    assert region_groups(m, 1.5) == [[0, 1], [2]]
    assert region_groups(m, 3) == [[0, 2], [1]]
    adjacent = torch.zeros(2, 1, 6)
    adjacent[0, 0, 0:2] = 1
    adjacent[1, 0, 2:4] = 1
    assert region_groups(adjacent, 0) == [[0, 1]] and region_groups(adjacent, 0.5) == [[0], [1]]
    with pytest.raises(ValueError, match=r"^reach: must be >= 0"):
        region_groups(m, -1)


class TwoAnchorDetector(nn.Module):
    """Per face k (of two, side by side): anchor 2k = the face (score a_k), anchor 2k+1 = the face's left 60 %
    (IoU 0.6, score b_k)."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.s = torch.tensor(scores)

    def dense(self, x):
        boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 6, 10], [20, 0, 30, 10], [20, 0, 26, 10]])
        b = x.shape[0]
        return DenseOutput(boxes.expand(b, -1, -1), boxes.expand(b, -1, -1),
                           self.s.expand(b, -1) + 0 * x.mean(), None)


def test_faces_alive_uses_the_assignment_iou_every_face_and_the_operating_threshold():
    gts = [torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])]
    x = torch.zeros(1, 3, 12, 32)
    det = TwoAnchorDetector([0.1, 0.1, 0.1, 0.9])  # face 1's partial anchor is still live
    assert faces_alive(det, gts, 0.5)(x).tolist() == [False]          # iou 0.3 (default): anchor 3 belongs to face 1
    assert faces_alive(det, gts, 0.5, iou=0.7)(x).tolist() == [True]  # iou 0.7: it does not
    det = TwoAnchorDetector([0.1, 0.5, 0.1, 0.1])  # face 0's partial anchor exactly at delta
    assert faces_alive(det, gts, 0.5)(x).tolist() == [False]
    assert faces_alive(det, gts, 0.51)(x).tolist() == [True]


def test_lip_attack_passes_iou_regions_and_stop_to_every_method(det):
    """Each method equals its I-FGSM composition with the given iou; an image without faces is left as it is;
    stop_delta = 1 (no score reaches it) freezes every method at once."""
    x, boxes = scene(2)
    x2 = torch.cat([x, x.flip(-1)])
    gts = [boxes, torch.zeros(0, 4)]
    regions = [box_regions(boxes, (64, 64)), torch.zeros(0, 64, 64)]
    union = torch.stack([regions[0].amax(0), torch.zeros(64, 64)])[:, None]
    manual = {"imp": lambda iou: ifgsm(x2, imp_loss(det, gts, iou), 8 / 255, 2, 2 / 255),
              "lp": lambda iou: ifgsm(x2, imp_loss(det, gts, iou), 8 / 255, 2, 2 / 255, mask=union),
              "lip_a": lambda iou: ifgsm(x2, lip_loss(det, gts, regions, iou), 8 / 255, 2, 2 / 255)}
    for method, ref in manual.items():
        got = lip_attack(det, x2, gts, method, 8 / 255, 2, 2 / 255, regions=regions, iou=0.6)
        assert torch.equal(got, ref(0.6)), method
        assert torch.equal(lip_attack(det, x2, gts, method, 8 / 255, 2, 2 / 255, regions=regions), ref(0.3)), method
        assert torch.equal(got[1], x2[1]), method
        still = lip_attack(det, x2, gts, method, 8 / 255, 2, 2 / 255, regions=regions, stop_delta=1.0)
        assert torch.equal(still, x2), method
    with pytest.raises(ValueError, match=r"^gts: 1 box lists for 2 images$"):
        lip_attack(det, x2, gts[:1], "imp", 8 / 255, 2)
    with pytest.raises(ValueError, match=r"^masks\[0\]: 1 regions for 2 faces$"):
        lip_loss(det, gts, [regions[0][:1], regions[1]])


# -- defaults, empty inputs, dtypes (mutation survivors) -----------------------------------------------------
class CountingLosses:
    """:func:`losses_fn` that counts the forward passes it takes."""

    def __init__(self, det, boxes):
        self.f, self.calls = losses_fn(det, boxes), 0

    def __call__(self, X):
        self.calls += 1
        return self.f(X)


def test_instance_gradients_default_mode_empty_scenes_and_forward_counts(det):
    x, boxes = scene(3)
    loop = instance_gradients(losses_fn(det, boxes), x, "loop")
    assert torch.equal(instance_gradients(losses_fn(det, boxes), x), instance_gradients(losses_fn(det, boxes), x,
                                                                                        "replicate"))
    assert torch.allclose(instance_gradients(losses_fn(det, boxes), x), loop, atol=1e-6)  # default: "replicate"
    # "replicate" with the regions given: their count is N, one forward pass (no pass to count the instances)
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 6.0, (64, 64))
    f = CountingLosses(det, boxes)
    g = instance_gradients(f, x, "replicate", masks=masks)
    assert f.calls == 1 and g.shape == (3, 3, 64, 64) and torch.allclose(g, loop, atol=1e-6)
    f = CountingLosses(det, boxes)
    instance_gradients(f, x, "replicate")
    assert f.calls == 2
    # a scene without faces: no gradients, in every mode
    empty = CountingLosses(det, torch.zeros(0, 4))
    for mode in ("loop", "vmap", "replicate"):
        out = instance_gradients(empty, x, mode)
        assert out.shape == (0, 3, 64, 64) and out.dtype == x.dtype, mode
    out = instance_gradients(empty, x, "replicate", masks=torch.zeros(0, 64, 64))
    assert out.shape == (0, 3, 64, 64)
    # one face: one gradient (not an empty stack)
    one = instance_gradients(losses_fn(det, boxes[:1]), x, "vmap")
    assert one.shape == (1, 3, 64, 64) and one.abs().sum() > 0
    for mode in ("loop", "replicate"):
        g1 = instance_gradients(losses_fn(det, boxes[:1]), x, mode)
        assert g1.shape == (1, 3, 64, 64) and torch.allclose(g1, one, atol=1e-6), mode


def test_instance_gradients_in_float64_and_the_group_mode_message(det):
    det64 = TinyDetector().eval().double()
    x, boxes = scene(2)
    x = x.double()
    f = losses_fn(det64, boxes.double())
    loop = instance_gradients(f, x, "loop")
    for mode in ("vmap", "replicate"):
        g = instance_gradients(f, x, mode)
        assert g.dtype == torch.float64 and torch.allclose(g, loop, atol=1e-12), mode
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 6.0, (64, 64))
    want = r"^mode 'group' needs masks \[N,H,W\] and groups$"
    with pytest.raises(ValueError, match=want):
        instance_gradients(f, x, "group", masks=masks)
    with pytest.raises(ValueError, match=want):
        instance_gradients(f, x, "group", groups=[[0], [1]])
    # singleton groups: each copy selects one instance (the other instance's selector is 0)
    g = instance_gradients(f, x, "group", masks=masks, groups=[[0], [1]])
    assert torch.isfinite(g).all() and torch.allclose(g, loop * masks[:, None], atol=1e-12)


def test_localized_gradient_shape_dtype_and_message():
    grads = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    masks = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [1, 1]]], dtype=torch.float64)
    R = localized_gradient(grads, masks)
    assert R.shape == (1, 3, 2, 2) and R.dtype == torch.float32
    assert R[0, 0].tolist() == [[0.0, 13.0], [14.0, 15.0]]  # grads[0] at (0,0), grads[1] elsewhere
    with pytest.raises(ValueError, match=r"^masks: 3 regions for 2 instance gradients$"):
        localized_gradient(grads, torch.zeros(3, 5, 6))


def test_losses_take_integer_and_flat_boxes_and_the_assignment_iou(det):
    x, boxes = scene(2)
    flat = boxes[0].tolist()  # one face as a flat [x1, y1, x2, y2]
    ints = [[int(v) for v in b] for b in boxes.tolist()]
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 9.0, (64, 64))
    assert torch.equal(imp_loss(det, [flat])(x), imp_loss(det, [boxes[:1]])(x))
    assert torch.equal(imp_loss(det, [ints])(x), imp_loss(det, [boxes])(x))
    assert torch.equal(lip_loss(det, [flat], [masks[:1]])(x), lip_loss(det, [boxes[:1]], [masks[:1]])(x))
    assert torch.equal(lip_loss(det, [ints], [masks])(x), lip_loss(det, [boxes], [masks])(x))
    # the assignment IoU reaches the losses (0.3 by default)
    for iou in (0.3, 0.6):
        want = -losses_fn(det, boxes, iou)(x).sum()
        assert torch.allclose(imp_loss(det, [boxes], iou)(x), want[None], atol=1e-6), iou
        assert torch.allclose(lip_loss(det, [boxes], [masks], iou)(x), want[None], atol=1e-6), iou
    assert torch.equal(imp_loss(det, [boxes])(x), imp_loss(det, [boxes], 0.3)(x))
    assert torch.equal(lip_loss(det, [boxes], [masks])(x), lip_loss(det, [boxes], [masks], 0.3)(x))
    assert not torch.allclose(imp_loss(det, [boxes], 0.6)(x), imp_loss(det, [boxes])(x))
    d = dense_of(det, x)
    assert not torch.allclose(instance_losses(d, [boxes], 0.6)[0], instance_losses(d, [boxes])[0])
    with pytest.raises(ValueError, match=r"^masks: 2 mask stacks for 1 images$"):
        lip_loss(det, [boxes], [masks, masks])
    with pytest.raises(ValueError, match=r"^masks\[0\]: 1 regions for 2 faces$"):
        lip_loss(det, [boxes], [masks[:1]])


def test_instance_losses_keep_float64_and_lip_loss_takes_float64_masks(det):
    d = TwoAnchorDetector([0.25, 0.5, 0.125, 0.125]).dense(torch.zeros(1, 3, 12, 32))
    d64 = DenseOutput(d.anchors.double(), d.boxes.double(), d.scores.double(), None)
    (L,) = instance_losses(d64, [torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]], dtype=torch.float64)])
    assert L.dtype == torch.float64
    assert L.tolist() == pytest.approx([-math.log(0.75) - math.log(0.5), -2 * math.log(0.875)], rel=1e-12)
    x, boxes = scene(2)
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 9.0, (64, 64))
    assert torch.equal(lip_loss(det, [boxes], [masks.double()])(x), lip_loss(det, [boxes], [masks])(x))


def test_lip_loss_of_close_faces_is_each_instance_cropped_to_its_own_region(det):
    """Faces within each other's receptive field: copy i carries only instance i's loss (not its neighbour's,
    whose gradient also reaches region i)."""
    x, boxes = scene(2, spread=False)
    masks = disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 5.0, (64, 64))
    R = localized_gradient(instance_gradients(losses_fn(det, boxes), x, "loop"), masks)
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(lip_loss(det, [boxes], [masks])(xx).sum(), xx)
    assert torch.allclose(g, -R, atol=1e-6)
    all_in_i = localized_gradient(instance_gradients(losses_fn(det, boxes), x, "loop").sum(0, keepdim=True)
                                  .expand(2, -1, -1, -1), masks)
    assert not torch.allclose(g, -all_in_i, atol=1e-6)


def test_lip_loss_without_any_face_is_zero_and_keeps_the_graph(det):
    x, _ = scene(1)
    x2 = torch.cat([x, x]).requires_grad_(True)
    out = lip_loss(det, [torch.zeros(0, 4), torch.zeros(0, 4)], [torch.zeros(0, 64, 64)] * 2)(x2)
    assert out.tolist() == [0.0, 0.0]
    (g,) = torch.autograd.grad(out.sum(), x2)
    assert torch.equal(g, torch.zeros_like(x2))


def test_lip_attack_passes_groups(det):
    """LIP-H with groups equals I-FGSM on lip_loss with the same groups; grouping close faces changes it."""
    x, boxes = scene(2, spread=False)
    regions = [disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 5.0, (64, 64))]
    groups = [[[0, 1]]]
    got = lip_attack(det, x, [boxes], "lip_h", 8 / 255, 2, 2 / 255, regions=regions, groups=groups)
    assert torch.equal(got, ifgsm(x, lip_loss(det, [boxes], regions, groups=groups), 8 / 255, 2, 2 / 255))
    assert not torch.equal(got, lip_attack(det, x, [boxes], "lip_h", 8 / 255, 2, 2 / 255, regions=regions))


def test_lp_on_a_non_square_batch_with_a_faceless_image(det):
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    regions = [box_regions(boxes, (48, 64)), torch.zeros(0, 48, 64)]
    xa = lip_attack(det, x, [boxes, torch.zeros(0, 4)], "lp", 8 / 255, 2, 2 / 255, regions=regions)
    assert torch.equal(xa[1], x[1])
    moved = (xa[0] - x[0]).abs().sum(0) > 0
    assert moved.any() and not moved[regions[0].amax(0) == 0].any()


def test_dense_of_needs_both_centernet_attributes_and_instance_losses_skip_faceless_images(det):
    class StrideOnly(nn.Module):
        stride = 4

        def forward(self, x):
            return x
    with pytest.raises(TypeError, match=r"^model: StrideOnly has no dense output"):
        dense_of(StrideOnly(), torch.zeros(1, 3, 8, 8))
    x, boxes = scene(2)
    d = dense_of(det, torch.cat([x, x]))
    first_empty = instance_losses(d, [torch.zeros(0, 4), boxes])
    assert [len(v) for v in first_empty] == [0, 2]
    assert torch.allclose(first_empty[1], instance_losses(dense_of(det, x), [boxes])[0], rtol=1e-5)


def test_anchor_regions_take_the_assignment_iou_and_no_faces():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [50, 50, 60, 60.0]])
    dense = DenseOutput(boxes[None], boxes[None], torch.full((1, 3), 0.5), None)
    assert int(anchor_regions(dense, gt, (12, 12)).sum()) == 100
    wide = boxes.clone()
    wide[1] = torch.tensor([0.0, 0.0, 12.0, 12.0])  # a prior bigger than the face, decoded as the half box
    dense = DenseOutput(wide[None], boxes[None], torch.full((1, 3), 0.5), None)
    assert int(anchor_regions(dense, gt, (12, 12)).sum()) == 144       # iou 0.3 (default): the 12 x 12 prior too
    assert int(anchor_regions(dense, gt, (12, 12), iou=0.7).sum()) == 100  # iou 0.7: only the face's own prior
    none = anchor_regions(dense, torch.zeros(0, 4), (12, 16))
    assert none.shape == (0, 12, 16)


class LeakyTwoAnchor(TwoAnchorDetector):
    """TwoAnchorDetector whose scores also rise with the image's mean (so the attack has a gradient)."""

    def dense(self, x):
        d = super().dense(x)
        return DenseOutput(d.anchors, d.boxes, (d.scores + 0.01 * x.mean((1, 2, 3))[:, None]).clamp(0, 0.99), None)


def test_lip_attack_stop_rule_uses_the_attack_iou():
    """Face 1's partial anchor (IoU 0.6) still scores 0.9: at iou 0.3 the face is alive and the attack moves; at
    iou 0.7 that anchor is nobody's, every assigned anchor is below delta = 0.5 and the image is frozen."""
    gts = [torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])]
    x = torch.full((1, 3, 12, 32), 0.5)
    det = LeakyTwoAnchor([0.1, 0.1, 0.1, 0.9])
    moved = lip_attack(det, x, gts, "imp", 4 / 255, 2, 2 / 255, stop_delta=0.5)
    assert not torch.equal(moved, x)
    assert torch.equal(lip_attack(det, x, gts, "imp", 4 / 255, 2, 2 / 255, iou=0.7, stop_delta=0.5), x)


def test_lp_and_lip_differ_on_close_faces(det):
    """LP crops the whole-image gradient to the union of the regions; LIP-A crops each face's own gradient to its
    region. Within each other's receptive field the two differ (far apart they coincide)."""
    x, boxes = scene(2, spread=False)
    regions = [disc_regions((boxes[:, :2] + boxes[:, 2:]) / 2, 6.0, (64, 64))]
    union = regions[0].amax(0)[None, None]
    lp = lip_attack(det, x, [boxes], "lp", 8 / 255, 2, 2 / 255, regions=regions)
    assert torch.equal(lp, ifgsm(x, imp_loss(det, [boxes]), 8 / 255, 2, 2 / 255, mask=union))
    assert not torch.equal(lp, lip_attack(det, x, [boxes], "lip_a", 8 / 255, 2, 2 / 255, regions=regions))
