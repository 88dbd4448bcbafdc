"""Universal adversarial patches (chapter 1): pasting geometry, sample-set rules, frozen victim, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelab.attacks import (
    EOT,
    ModelChangedError,
    UniversalPatchAttack,
    adversarial_loss,
    init_patch,
    partial_mask,
    paste_patch,
    patch_boxes,
    select_samples,
)
from facelab.attacks.sample_sets import focal_peak
from facelab.models.base import DenseOutput, FaceDetector


class TinyDetector(FaceDetector):
    """A small conv-net detector implementing the shared interface (anchors = boxes, stride 4)."""

    def __init__(self, sizes=(8, 16, 32), seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.sizes = sizes
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, len(sizes), 3, padding=1)
        with torch.no_grad():
            self.head.bias.fill_(1.0)
            self.head.weight.mul_(8.0)

    def dense(self, images):
        x = self.head(self.body(images * 2 - 1))  # [B,S,h,w]
        B, S, h, w = x.shape
        ys, xs = torch.meshgrid(torch.arange(h) * 4 + 2.0, torch.arange(w) * 4 + 2.0, indexing="ij")
        anchors = []
        for s in self.sizes:
            anchors.append(torch.stack([xs - s / 2, ys - s / 2, xs + s / 2, ys + s / 2], -1).reshape(-1, 4))
        anchors = torch.cat(anchors).to(images)[None].expand(B, -1, -1)
        logits = x.reshape(B, S * h * w)
        return DenseOutput(anchors, anchors, torch.sigmoid(logits), logits)


def tiny_data(n=3, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        im = torch.rand(3, size, size, generator=g) * 0.5 + 0.25
        data.append((im, torch.tensor([[8.0, 6.0, 40.0, 38.0]])))
    return data


# -- geometry -------------------------------------------------------------------------------

def test_patch_boxes_three_locations_hand_computed():
    gt = torch.tensor([[10.0, 20.0, 110.0, 84.0]])  # w=100, h=64, sqrt(wh)=80, s = 0.5*80 = 40
    assert torch.allclose(patch_boxes(gt, 0.5, "top"), torch.tensor([[40.0, 20.0, 80.0, 60.0]]))
    assert torch.allclose(patch_boxes(gt, 0.5, "center"), torch.tensor([[40.0, 32.0, 80.0, 72.0]]))
    assert torch.allclose(patch_boxes(gt, 0.5, "bottom"), torch.tensor([[40.0, 44.0, 80.0, 84.0]]))
    # alpha = 0.3 -> s = 24, top: centre (60, 20+12)
    assert torch.allclose(patch_boxes(gt, 0.3, "top"), torch.tensor([[48.0, 20.0, 72.0, 44.0]]))
    with pytest.raises(ValueError, match="location"):
        patch_boxes(gt, 0.5, "left")
    with pytest.raises(ValueError, match="alpha"):
        patch_boxes(gt, 1.5)


def test_paste_integer_box_exact_and_area():
    img = torch.zeros(3, 100, 120)
    patch = torch.ones(3, 128, 128) * torch.tensor([0.2, 0.5, 0.9])[:, None, None]
    out = paste_patch(img, patch, torch.tensor([[10.0, 20.0, 110.0, 84.0]]), 0.5, "top")  # box [40,20,80,60]
    assert torch.allclose(out[:, 20:60, 40:80], patch[:, :40, :40], atol=1e-5)
    inside = torch.zeros(100, 120, dtype=torch.bool)
    inside[20:60, 40:80] = True
    assert out[:, ~inside].abs().max() == 0
    # native size at an integer position reproduces the texture exactly
    tex = torch.rand(3, 128, 128)
    out = paste_patch(torch.zeros(3, 200, 200), tex, torch.tensor([[36.0, 10.0, 164.0, 138.0]]), 1.0, "top")
    assert torch.allclose(out[:, 10:138, 36:164], tex, atol=1e-5)


def test_paste_fractional_box_covers_its_area():
    img = torch.zeros(3, 64, 64)
    gt = torch.tensor([[10.3, 12.7, 41.9, 40.1]])
    s = 0.5 * math.sqrt((41.9 - 10.3) * (40.1 - 12.7))
    out = paste_patch(img, torch.ones(3, 128, 128), gt, 0.5, "center")
    assert out[0].sum().item() == pytest.approx(s * s, rel=1e-4)
    assert out.max() <= 1 + 1e-6


def test_gradient_reaches_patch_only_through_pasted_pixels():
    patch = torch.rand(3, 128, 128, requires_grad=True)
    img = torch.rand(3, 80, 80, requires_grad=True)
    gt = torch.tensor([[20.0, 10.0, 60.0, 70.0]])
    out = paste_patch(img, patch, gt, 0.4, "bottom")
    (out * torch.randn_like(out)).sum().backward()
    assert patch.grad is not None and patch.grad.abs().sum() > 0
    x1, y1, x2, y2 = patch_boxes(gt, 0.4, "bottom")[0].tolist()
    g = img.grad[0]
    assert g[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1].abs().max() == 0  # fully covered pixels
    assert g[:int(y1) - 1].abs().min() > 0  # pixels above the patch are untouched -> gradient 1*randn


def test_multiple_faces_and_batch_paste():
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 80.0, 80.0]])
    out = paste_patch(torch.zeros(3, 90, 90), torch.ones(3, 128, 128), gt, 0.5, "top")
    assert out[0].sum().item() == pytest.approx(10 * 10 + 20 * 20, rel=1e-5)


def test_partial_mask_and_eot():
    gt = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    half = paste_patch(torch.zeros(3, 64, 64), torch.ones(3, 128, 128), gt, 1.0, "top", mask=partial_mask(128, 0.5))
    assert half[0, :30].min() > 0.99 and half[0, 34:].max() < 1e-6
    two_thirds = partial_mask(128, 2 / 3)
    assert two_thirds.mean().item() == pytest.approx(2 / 3, abs=0.01)
    patch = torch.rand(3, 128, 128, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    a = paste_patch(torch.zeros(3, 64, 64), patch, gt, 0.6, "center", eot=EOT(15, 0.1, 0.1), generator=g)
    b = paste_patch(torch.zeros(3, 64, 64), patch, gt, 0.6, "center")
    assert (a - b).abs().max() > 0.05
    a.sum().backward()
    assert patch.grad.abs().sum() > 0


def test_init_patch_kinds():
    n = init_patch("noise", 32, seed=3)
    assert n.shape == (3, 32, 32) and torch.equal(n, init_patch("noise", 32, seed=3))
    img = torch.zeros(3, 50, 60)
    img[:, 10:30, 20:40] = 1
    crop = init_patch("image", 16, image=img, box=[20, 10, 40, 30])
    assert torch.allclose(crop, torch.ones(3, 16, 16))
    assert init_patch(img, 16).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="kind"):
        init_patch("banana")


# -- sample-set rules ----------------------------------------------------------------------

def _case():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # = GT
                            [1.0, 0.0, 11.0, 10.0],   # IoU 0.82 with GT
                            [5.0, 0.0, 15.0, 10.0],   # IoU 0.33 with GT
                            [2.0, 0.0, 7.0, 5.0],     # = patch, IoU 0.25 with GT
                            [50.0, 50.0, 60.0, 60.0]])  # far away background
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    pb = torch.tensor([[2.0, 0.0, 7.0, 5.0]])
    scores = torch.tensor([0.9, 0.3, 0.7, 0.95, 0.8])
    return anchors, gt, pb, scores


def test_sample_set_rules_hand_made():
    anchors, gt, pb, scores = _case()
    kw = dict(score_threshold=0.5, iou_threshold=0.6, lambda1=0.3, lambda2=0.3)
    assert select_samples("patch_iou", anchors, gt, pb, scores, **kw).tolist() == [True, True, False, False, False]
    assert select_samples("patch_score", anchors, gt, pb, scores, **kw).tolist() == [True, False, True, True, True]
    assert select_samples("patch_score_focal", anchors, gt, pb, scores, **kw).tolist() == [True, False, True, True, True]
    assert select_samples("patch_combination", anchors, gt, pb, scores, **kw).tolist() == [True, False, True, True, False]
    with pytest.raises(ValueError, match="method"):
        select_samples("patch_magic", anchors, gt, pb, scores)
    # a face whose anchors all have IoU <= 0.6 still gets its best anchor (detector matching rule)
    far = anchors[2:]
    assert select_samples("patch_iou", far, gt, pb, scores[2:], **kw).tolist() == [True, False, False]
    assert not select_samples("patch_iou", far, gt, pb, scores[2:], include_best=False, **kw).any()


def test_losses_eq1_eq2():
    scores = torch.tensor([0.9, 0.55, 0.2], requires_grad=True)
    mask = torch.tensor([True, True, False])
    s, n = adversarial_loss("patch_iou", scores, mask)
    assert int(n) == 2 and s.item() == pytest.approx(math.log(0.9) + math.log(0.55), rel=1e-6)
    s, n = adversarial_loss("patch_score_focal", scores, mask, gamma=2)
    assert s.item() == pytest.approx(0.81 * math.log(0.9) + 0.3025 * math.log(0.55), rel=1e-5)
    s.backward()
    assert (scores.grad[:2] > 0).all()  # minimising pushes both selected scores down
    assert scores.grad[2] == 0
    scores.grad = None
    s, _ = adversarial_loss("patch_score_focal", scores, mask, gamma=2, literal_focal=True)
    s.backward()
    assert scores.grad[1] < 0 < scores.grad[0]  # literal Eq. 2 would raise S=0.55 < e^-1/2
    assert focal_peak(2) == pytest.approx(math.exp(-0.5))
    logits = torch.logit(torch.tensor([0.9, 0.55, 0.2]))
    s2, _ = adversarial_loss("patch_iou", torch.sigmoid(logits), mask, logits=logits)
    assert s2.item() == pytest.approx(math.log(0.9) + math.log(0.55), rel=1e-5)


# -- training -------------------------------------------------------------------------------

def test_few_steps_lower_targeted_scores_and_model_unchanged():
    torch.manual_seed(0)
    det = TinyDetector()
    det.train()  # BatchNorm in train mode would update running stats: the attack must prevent it
    before = {k: v.clone() for k, v in det.state_dict().items()}
    data = tiny_data()
    atk = UniversalPatchAttack(det, "patch_iou", alpha=0.6, location="center", lr=0.1, seed=0)
    s0 = atk.evaluate(data)
    assert s0.n > 0
    snaps = atk.fit(data, epochs=6, batch_size=2, snapshots=(0, 6))
    s1 = atk.evaluate(data)
    assert s1.mean_score < s0.mean_score - 0.1, (s0, s1)
    assert s1.loss < s0.loss
    for k, v in det.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert det.training and all(p.requires_grad for p in det.parameters())  # flags restored
    assert set(snaps) == {0, 6} and not torch.equal(snaps[0], snaps[6])
    assert atk.patch.min() >= 0 and atk.patch.max() <= 1


def _face_scores(det, data, patch, alpha=0.6):
    """Per image, the victim's mean score over the anchors with IoU >= 0.3 with the face (patch pasted)."""
    from torchvision.ops import box_iou

    out = []
    with torch.no_grad():
        for im, gt in data:
            d = det.dense(paste_patch(im, patch, gt, alpha, "center")[None])
            near = box_iou(d.anchors[0], gt).max(1).values >= 0.3
            out.append(float(d.scores[0][near].mean()))
    return out


@pytest.mark.parametrize("method", ["patch_score", "patch_score_focal", "patch_combination"])
def test_score_methods_lower_the_face_score(method):
    det = TinyDetector(seed=1)
    data = tiny_data(2)
    atk = UniversalPatchAttack(det, method, alpha=0.6, location="center", score_threshold=0.5, lr=0.05)
    p0 = atk.patch.detach().clone()
    s0 = atk.evaluate(data)
    assert s0.n > 0
    atk.fit(data, epochs=4, batch_size=2)
    # the victim's scores on every face fall (a sample set that merely shrank would not do this) and the
    # minimised −L_adv falls: the training optimises the loss it reports
    before, after = _face_scores(det, data, p0), _face_scores(det, data, atk.patch.detach())
    assert all(a < b - 0.02 for a, b in zip(after, before)), (before, after)
    s1 = atk.evaluate(data)
    assert s1.loss < s0.loss and s1.mean_score < s0.mean_score, (s0, s1)


class SneakyDetector(TinyDetector):
    def dense(self, images):
        with torch.no_grad():
            self.head.bias.add_(1e-3)
        return super().dense(images)


def test_frozen_detector_assertion():
    atk = UniversalPatchAttack(SneakyDetector(), "patch_iou", alpha=0.6, location="center")
    with pytest.raises(ModelChangedError, match="head.bias"):
        atk.fit(tiny_data(1), epochs=1)


def test_mixed_sizes_batch_and_black_box_refused():
    det = TinyDetector()
    data = tiny_data(1, 48) + tiny_data(1, 56)
    atk = UniversalPatchAttack(det, "patch_iou", alpha=0.6, location="center")
    st = atk.step(data)
    assert st.n > 0 and math.isfinite(st.loss)
    with pytest.raises(TypeError, match="black-box"):
        UniversalPatchAttack(nn.Identity(), "patch_iou")
    with pytest.raises(ValueError, match="method"):
        UniversalPatchAttack(det, "nope")


def test_gradient_averaged_across_processes(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", lr=0.05)
        p0 = atk.patch.detach().clone()
        atk.fit(tiny_data(2), epochs=1, batch_size=2)
        assert not torch.equal(p0, atk.patch.detach())
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_step():
    det = TinyDetector().cuda()
    atk = UniversalPatchAttack(det, "patch_combination", alpha=0.6, location="center", device="cuda")
    st = atk.step(tiny_data(2))
    assert atk.patch.is_cuda and math.isfinite(st.loss)


def test_interpolation_matches_manual_downsample():
    """A 40-px paste equals the antialiased 128->40 resize of the texture (no aliasing)."""
    tex = torch.rand(3, 128, 128)
    out = paste_patch(torch.zeros(3, 60, 60), tex, torch.tensor([[10.0, 10.0, 50.0, 50.0]]), 1.0, "top")
    ref = F.interpolate(tex[None], size=(40, 40), mode="bilinear", antialias=True, align_corners=False)[0]
    assert torch.allclose(out[:, 10:50, 10:50], ref, atol=1e-5)


# -- exact rules and losses (issue 19) --------------------------------------------------------------

def test_patch_score_threshold_is_strict():
    # Patch-Score selects S_i > δ − m: a score exactly at the threshold is not selected
    scores = torch.tensor([0.5, 0.50001, 0.49999, 0.9])
    anchors = torch.zeros(4, 4)
    mask = select_samples("patch_score", anchors, torch.zeros(0, 4), torch.zeros(0, 4), scores, score_threshold=0.5)
    assert mask.tolist() == [False, True, False, True]
    # the same strict rule inside Patch-Combination
    anchors = torch.tensor([[0.0, 0, 10, 10]] * 4)
    gt = torch.tensor([[0.0, 0, 10, 10]])
    mask = select_samples("patch_combination", anchors, gt, gt, scores, score_threshold=0.5)
    assert mask.tolist() == [False, True, False, True]


def test_patch_combination_lambda1_and_lambda2_are_distinct():
    anchors, gt, pb, scores = _case()
    # anchor 2: IoU 1/3 with the face, 10/115 = 0.087 with the patch; anchor 3 (= patch): IoU 0.25 with the face, 1 with P
    kw = dict(score_threshold=0.5)
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda1=0.3, lambda2=0.99, **kw).tolist() == \
        [True, False, True, True, False]
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda1=0.9, lambda2=0.3, **kw).tolist() == \
        [True, False, False, True, False]
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda1=0.9, lambda2=1.0, **kw).tolist() == \
        [True, False, False, False, False]
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda1=0.34, lambda2=0.08, **kw).tolist() == \
        [True, False, True, True, False]
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda1=0.34, lambda2=0.09, **kw).tolist() == \
        [True, False, False, True, False]
    # UniversalPatchAttack passes its own λ1 / λ2 through
    atk = UniversalPatchAttack(TinyDetector(), "patch_combination", lambda1=0.1, lambda2=0.7)
    assert (atk.lambda1, atk.lambda2) == (0.1, 0.7)


def test_patch_iou_threshold_is_strict_and_configurable():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 15]])  # IoU 1, 0.5, 2/3 with the face
    gt = torch.tensor([[0.0, 0, 10, 10]])
    m = select_samples("patch_iou", anchors, gt, gt, torch.zeros(3), iou_threshold=0.5, include_best=False)
    assert m.tolist() == [True, False, True]
    m = select_samples("patch_iou", anchors, gt, gt, torch.zeros(3), iou_threshold=0.7, include_best=False)
    assert m.tolist() == [True, False, False]
    # without faces nothing is selected (and include_best has nothing to add)
    assert not select_samples("patch_iou", anchors, torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(3)).any()


class FixedDetector(FaceDetector):
    """A victim whose scores are fixed logits plus a term in the image (so the loss depends on the patch)."""

    def __init__(self, logits) -> None:
        super().__init__()
        self.register_buffer("base", torch.as_tensor(logits, dtype=torch.float32))
        self.anchors = torch.tensor([[8.0, 6, 40, 38]] * len(logits))

    def dense(self, images):
        b = images.shape[0]
        lg = self.base[None].expand(b, -1) + 0.0 * images.mean(dim=(1, 2, 3))[:, None]
        a = self.anchors[None].expand(b, -1, -1)
        return DenseOutput(a, a, torch.sigmoid(lg), lg)


def test_eq1_and_eq2_exact_loss_values():
    # scores 0.9, 0.6, 0.3 on two images; δ − m = 0.5 selects 0.9 and 0.6 in each: N = 4 over the batch
    s = torch.tensor([0.9, 0.6, 0.3])
    det = FixedDetector(torch.logit(s))
    data = tiny_data(2)
    eq1 = (2 * math.log(0.9) + 2 * math.log(0.6)) / 4  # −L_adv = 1/N Σ log S_i
    eq2 = (2 * 0.81 * math.log(0.9) + 2 * 0.36 * math.log(0.6)) / 4  # 1/N Σ S_i^γ log S_i, γ = 2
    for method, expect in (("patch_score", eq1), ("patch_combination", eq1), ("patch_score_focal", eq2)):
        atk = UniversalPatchAttack(det, method, score_threshold=0.5, lambda1=0.3, lambda2=0.3, alpha=0.6)
        st = atk.evaluate(data, batch_size=2)
        assert st.n == 4 and st.loss == pytest.approx(expect, rel=1e-5), method
        assert st.mean_score == pytest.approx(0.75, rel=1e-5)
        st = atk.step(data)  # one batch of two images: the same pooled mean
        assert st.n == 4 and st.loss == pytest.approx(expect, rel=1e-5), method
    # γ = 3
    atk = UniversalPatchAttack(det, "patch_score_focal", score_threshold=0.5, gamma=3.0)
    assert atk.evaluate(data).loss == pytest.approx((0.729 * math.log(0.9) + 0.216 * math.log(0.6)) / 2, rel=1e-5)
    # batches of one image: evaluate weights each batch's mean by its N
    atk = UniversalPatchAttack(det, "patch_score", score_threshold=0.5)
    assert atk.evaluate(data, batch_size=1).loss == pytest.approx(eq1, rel=1e-5)
    # a threshold above every score: N = 0 and a zero loss, not a division by zero
    atk = UniversalPatchAttack(det, "patch_score", score_threshold=0.95)
    st = atk.evaluate(data)
    assert (st.n, st.loss, st.mean_score) == (0, 0.0, 0.0)
    st = atk.step(data)
    assert (st.n, st.loss) == (0, 0.0)


def test_attack_defaults_follow_the_paper():
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou")
    assert (atk.alpha, atk.location, atk.score_threshold, atk.iou_threshold) == (0.5, "top", 0.5, 0.6)
    assert (atk.lambda1, atk.lambda2, atk.gamma, atk.literal_focal) == (0.3, 0.3, 2.0, False)
    assert atk.patch.shape == (3, 128, 128) and atk.lr == 0.03 and atk.eot is None
    assert torch.equal(atk.patch.detach(), init_patch("noise", 128, seed=0))
    assert atk.patch.requires_grad and atk.optimizer.param_groups[0]["lr"] == 0.03
    gray = UniversalPatchAttack(TinyDetector(), "patch_iou", init="gray", size=16)
    assert torch.equal(gray.patch.detach(), torch.full((3, 16, 16), 0.5))
    img = torch.rand(3, 20, 20)
    from_img = UniversalPatchAttack(TinyDetector(), "patch_iou", init=img, size=8)
    assert torch.equal(from_img.patch.detach(), init_patch(img, 8))
    with pytest.raises(ValueError, match="location"):
        UniversalPatchAttack(TinyDetector(), "patch_iou", location="left")
    assert repr(atk) == "UniversalPatchAttack(model=TinyDetector, device=cpu)"


def test_eot_brightness_scales_the_pasted_patch():
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])  # α = 0.5 -> patch box [10, 0, 30, 20] (top)
    patch = torch.full((3, 128, 128), 0.4)
    eot = EOT(rotation=0.0, scale=0.0, brightness=0.5)
    g = torch.Generator().manual_seed(3)
    _, _, b = eot.sample(torch.Generator().manual_seed(3))
    assert b != 1.0 and 0.5 <= b <= 1.5
    out = paste_patch(torch.zeros(3, 40, 40), patch, gt, 0.5, "top", eot=eot, generator=g)
    assert torch.allclose(out[:, 0:20, 10:30], torch.full((3, 20, 20), min(1.0, 0.4 * b)), atol=1e-5)
    assert out[:, 20:].abs().max() == 0 and out[:, :, :10].abs().max() == 0
    # the factor is drawn as 1 + u·brightness with u uniform in [-1, 1]: its spread follows `brightness`
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([EOT(0.0, 0.0, 0.2).sample(gen)[2] for _ in range(400)])
    assert 0.8 <= draws.min() < 0.82 and 1.18 < draws.max() <= 1.2


def test_eot_rotation_and_scale():
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([EOT(10.0, 0.1, 0.0).sample(gen)[:2] for _ in range(400)])
    assert -10 <= draws[:, 0].min() < -9.5 and 9.5 < draws[:, 0].max() <= 10
    assert 0.9 <= draws[:, 1].min() < 0.91 and 1.09 < draws[:, 1].max() <= 1.1
    assert EOT().rotation == 10.0 and EOT().scale == 0.1 and EOT().brightness == 0.1
    # scale only: a white patch on black covers (s·side)² pixels, centred on the same point
    gt = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    eot = EOT(rotation=0.0, scale=0.5, brightness=0.0)
    _, sc, _ = eot.sample(torch.Generator().manual_seed(1))
    out = paste_patch(torch.zeros(3, 64, 64), torch.ones(3, 128, 128), gt, 0.5, "center", eot=eot,
                      generator=torch.Generator().manual_seed(1))
    assert out[0].sum().item() == pytest.approx((32 * sc) ** 2, rel=1e-3)
    ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
    assert (ys.float().mean() + 0.5).item() == pytest.approx(32, abs=0.5) and (xs.float().mean() + 0.5).item() == pytest.approx(32, abs=0.5)
    # rotation only: a 45° turn of a square keeps its area and reaches farther along the axes
    eot = EOT(rotation=45.0, scale=0.0, brightness=0.0)
    g = torch.Generator().manual_seed(2)
    rot, _, _ = eot.sample(torch.Generator().manual_seed(2))
    out = paste_patch(torch.zeros(3, 64, 64), torch.ones(3, 128, 128), gt, 0.5, "center", eot=eot, generator=g)
    assert abs(rot) > 5 and out[0].sum().item() == pytest.approx(32 * 32, rel=2e-2)
    straight = paste_patch(torch.zeros(3, 64, 64), torch.ones(3, 128, 128), gt, 0.5, "center")
    assert (out[0] > 0.5).any(dim=0).sum() > (straight[0] > 0.5).any(dim=0).sum()


def test_paste_brightness_saturates_and_forward_pastes_current_patch():
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.5, location="top", init="gray", size=16)
    img = torch.zeros(3, 40, 40)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    out = atk(img, boxes)
    assert not out.requires_grad
    assert torch.allclose(out[:, 0:20, 10:30], torch.full((3, 20, 20), 0.5), atol=1e-5)
    assert torch.equal(atk.paste(img, boxes), out.detach()) or torch.allclose(atk.paste(img, boxes), out)
    other = torch.ones(3, 16, 16)
    assert torch.allclose(atk.paste(img, boxes, other)[:, 0:20, 10:30], torch.ones(3, 20, 20), atol=1e-5)


# -- smaller pieces, value by value ---------------------------------------------------------------------------

def test_partial_mask_every_side_exactly():
    m = partial_mask(8, 0.25, "top")
    assert m.shape == (1, 8, 8) and m[0, :2].eq(1).all() and m[0, 2:].eq(0).all()
    m = partial_mask(8, 0.25, "bottom")
    assert m[0, 6:].eq(1).all() and m[0, :6].eq(0).all()
    m = partial_mask(8, 0.25, "left")
    assert m[0, :, :2].eq(1).all() and m[0, :, 2:].eq(0).all()
    m = partial_mask(8, 0.25, "right")
    assert m[0, :, 6:].eq(1).all() and m[0, :, :6].eq(0).all()
    assert partial_mask(8).eq(1).all() and partial_mask(8, 1.0, "right").eq(1).all()
    # a sliver keeps at least one row; 0.3 of 10 rows rounds to 3
    assert partial_mask(10, 0.01).sum() == 10 and partial_mask(10, 0.3, "bottom")[0, :, 0].tolist() == [0] * 7 + [1] * 3
    with pytest.raises(ValueError, match=r"^keep: expected a fraction in \(0,1\], got 0$"):
        partial_mask(8, 0)
    with pytest.raises(ValueError, match=r"^keep: expected a fraction in \(0,1\], got 1.5$"):
        partial_mask(8, 1.5)
    with pytest.raises(ValueError, match=r"^side: expected top/bottom/left/right, got 'middle'$"):
        partial_mask(8, 0.5, "middle")


def test_eot_sample_uses_one_draw_of_three_uniforms():
    eot = EOT(rotation=20.0, scale=0.2, brightness=0.4)
    g, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):  # consecutive draws consume exactly three numbers each
        u = torch.rand(3, generator=ref) * 2 - 1
        rot, sc, br = eot.sample(g)
        assert rot == pytest.approx(float(u[0]) * 20.0) and sc == pytest.approx(1 + float(u[1]) * 0.2)
        assert br == pytest.approx(1 + float(u[2]) * 0.4)


def test_sample_rules_defaults_and_edge_cases():
    from facelab.attacks.sample_sets import max_iou, select_patch_combination, select_patch_iou

    anchors, gt, pb, scores = _case()
    # defaults of the rule functions themselves: IoU > 0.6, best anchor included, λ1 = λ2 = 0.3
    assert select_patch_iou(anchors, gt).tolist() == [True, True, False, False, False]
    assert select_patch_iou(anchors[2:], gt).tolist() == [True, False, False]
    assert select_patch_combination(anchors, gt, pb, scores, 0.5).tolist() == [True, False, True, True, False]
    # IoU exactly λ1 = 0.3 ([0,0,3,10] vs [0,0,10,10]: 30/100) is not "> λ1"
    a = torch.tensor([[0.0, 0, 3, 10]])
    assert select_patch_combination(a, gt, torch.zeros(0, 4), torch.tensor([0.9]), 0.5).tolist() == [False]
    assert select_patch_combination(a, gt, torch.zeros(0, 4), torch.tensor([0.9]), 0.5, lambda1=0.29).tolist() == [True]
    # no faces / no patches: max IoU 0 per anchor
    assert max_iou(anchors, torch.zeros(0, 4)).tolist() == [0.0] * 5
    assert not select_samples("patch_combination", anchors, torch.zeros(0, 4), torch.zeros(0, 4), scores).any()
    # two faces: each face's best anchor is included, and max IoU is over all faces
    faces = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    far = torch.tensor([[2.0, 0, 12, 10], [52, 52, 62, 62], [100, 100, 110, 110]])  # IoU 0.67 and 0.47
    assert select_patch_iou(far, faces, 0.9).tolist() == [True, True, False]
    assert select_patch_iou(far, faces, 0.6, include_best=False).tolist() == [True, False, False]
    np.testing.assert_allclose(max_iou(far, faces).tolist(), [80 / 120, 64 / 136, 0.0], rtol=1e-6)


def test_fit_runs_one_step_per_batch_and_is_seeded():
    det = TinyDetector()
    data = tiny_data(3)
    atk = UniversalPatchAttack(det, "patch_iou", alpha=0.6, location="center", lr=0.05, seed=3)
    atk.fit(data, epochs=2, batch_size=2)
    assert len(atk.history) == 4  # ceil(3 / 2) batches per epoch
    # the shuffling comes from the attack's seed, not from torch's global generator
    runs = []
    for global_seed in (0, 1):
        a = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", lr=0.05, seed=3)
        torch.manual_seed(global_seed)  # after TinyDetector(), which seeds the global generator itself
        a.fit(data, epochs=1, batch_size=1)
        runs.append(a.patch.detach().clone())
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], _fit_copy(data, seed=3))
    assert not torch.equal(runs[0], _fit_copy(data, seed=4))
    # an iterable of batches (e.g. a DataLoader) is used as given
    b = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", lr=0.05, seed=3)
    b.fit(iter([data[:2], data[2:]]), epochs=1)
    assert [h.n > 0 for h in b.history] == [True, True]


def _fit_copy(data, seed):
    a = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", lr=0.05, seed=seed)
    a.fit(data, epochs=1, batch_size=1)
    return a.patch.detach().clone()


def test_progress_bar_counts_steps(monkeypatch):
    import tqdm.auto

    made = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.updates, self.postfix, self.closed = kw, [], [], False
            made.append(self)

        def update(self, n):
            self.updates.append(n)

        def set_postfix(self, **kw):
            self.postfix.append(kw)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    atk = UniversalPatchAttack(TinyDetector(), "patch_score", alpha=0.6, location="center")
    atk.fit(tiny_data(3), epochs=2, batch_size=2, progress=True)
    (bar,) = made
    assert bar.kw == {"total": 4, "desc": "patch_score", "leave": False, "disable": False}
    assert bar.updates == [1, 1, 1, 1] and bar.closed
    assert bar.postfix[-1] == {"loss": f"{atk.history[-1].loss:.3f}", "n": atk.history[-1].n}
    made.clear()
    atk.fit(tiny_data(3), epochs=1)
    assert made == []


def test_eot_is_used_in_training_steps_only():
    data = tiny_data(2)
    for eot, same in ((None, True), (EOT(rotation=0.0, scale=0.0, brightness=0.5), False)):
        atk = UniversalPatchAttack(TinyDetector().eval(), "patch_iou", alpha=0.6, location="center", eot=eot)
        before = atk.evaluate(data, batch_size=2)
        again = atk.evaluate(data, batch_size=2)
        assert again.loss == before.loss  # evaluation never jitters
        st = atk.step(data)  # the loss of the step is computed before the update, on the same patch
        assert (st.loss == pytest.approx(before.loss, rel=1e-6)) is same, (eot, st, before)


def test_images_group_by_full_size():
    # same width, different heights: two forward passes, both counted
    det = TinyDetector()
    a = (torch.rand(3, 48, 48), torch.tensor([[8.0, 6.0, 40.0, 38.0]]))
    b = (torch.rand(3, 56, 48), torch.tensor([[8.0, 6.0, 40.0, 38.0]]))
    atk = UniversalPatchAttack(det, "patch_iou", alpha=0.6, location="center")
    both = atk.evaluate([a, b], batch_size=2)
    one_a, one_b = atk.evaluate([a]), atk.evaluate([b])
    assert both.n == one_a.n + one_b.n
    assert both.loss == pytest.approx((one_a.loss * one_a.n + one_b.loss * one_b.n) / both.n, rel=1e-5)


def test_paste_uses_the_attacks_location_and_passes_options():
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.5, location="bottom", init="gray", size=16)
    img = torch.zeros(3, 40, 40)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    expect = paste_patch(img, atk.patch.detach(), boxes, 0.5, "bottom")
    assert torch.allclose(atk.paste(img, boxes), expect) and torch.allclose(atk(img, boxes=boxes), expect)
    assert torch.equal(atk.paste(img, boxes, mask=torch.zeros(1, 16, 16)), img)


def test_patch_iou_adds_each_faces_best_anchor_by_face():
    from facelab.attacks.sample_sets import select_patch_iou

    faces = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    # the best anchors of the two faces sit at indices 1 and 2 (not 0 and 1)
    anchors = torch.tensor([[100.0, 100, 110, 110], [2, 0, 12, 10], [52, 52, 62, 62]])
    assert select_patch_iou(anchors, faces, 0.9).tolist() == [False, True, True]


def test_defaults_of_partial_mask_and_fit():
    assert partial_mask().shape == (1, 128, 128) and partial_mask().eq(1).all()
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", size=16)
    atk.fit(tiny_data(5))  # one epoch of batches of 4: two steps
    assert len(atk.history) == 2 and atk.history[0].n > 0


def test_progress_bar_on_an_iterable_has_no_total(monkeypatch):
    import tqdm.auto

    made = []

    class Bar:
        def __init__(self, **kw):
            made.append(kw)

        def update(self, n):
            pass

        def set_postfix(self, **kw):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", size=16)
    atk.fit(iter([tiny_data(2)]), progress=True)
    assert made[0]["total"] is None and len(atk.history) == 1


def test_state_fingerprint_and_digests():
    from facelab.attacks.base import assert_unchanged, frozen, state_digests, state_fingerprint
    import hashlib

    m = nn.Linear(2, 1)
    m.register_buffer("empty", torch.zeros(0))
    d = state_digests(m)
    assert set(d) == {"weight", "bias", "empty"}
    # documented content: sha256 of "name:dtype:shape" followed by the raw bytes (nothing for an empty tensor)
    assert d["empty"] == hashlib.sha256(b"empty:torch.float32:(0,)").hexdigest()
    w = m.weight.detach().contiguous()
    assert d["weight"] == hashlib.sha256(b"weight:torch.float32:(1, 2)" + w.numpy().tobytes()).hexdigest()
    fp = state_fingerprint(m)
    assert fp == hashlib.sha256("".join(f"{k}={d[k]};" for k in sorted(d)).encode()).hexdigest()
    clone = nn.Linear(2, 1)
    clone.load_state_dict(m.state_dict(), strict=False)
    clone.register_buffer("empty", torch.zeros(0))
    assert state_fingerprint(clone) == fp
    with torch.no_grad():
        clone.bias.copy_(torch.nextafter(clone.bias, torch.tensor(2.0)))  # one ulp
    assert state_fingerprint(clone) != fp
    # a lost entry is named
    with pytest.raises(ModelChangedError, match=r"^victim model lost state entry 'empty' during the attack$"):
        with frozen(m):
            del m._buffers["empty"]
    with pytest.raises(ModelChangedError, match="'bias' differs"):
        assert_unchanged(clone, state_digests(m))



class ConstantDetector(FixedDetector):
    """Scores that do not depend on the image at all (no gradient reaches the patch)."""

    def dense(self, images):
        b = images.shape[0]
        lg = self.base[None].expand(b, -1)
        a = self.anchors[None].expand(b, -1, -1)
        return DenseOutput(a, a, torch.sigmoid(lg), lg)


def test_loss_uses_the_logits_and_the_step_reports_the_mean_score():
    # logit -40: log S from the logits is -40; from the clamped score it would be log(1e-12) = -27.6
    det = FixedDetector(torch.tensor([-40.0, 2.0]))
    atk = UniversalPatchAttack(det, "patch_iou", alpha=0.6)
    st = atk.evaluate(tiny_data(1))
    assert st.n == 2 and st.loss == pytest.approx((-40.0 + float(F.logsigmoid(torch.tensor(2.0)))) / 2, rel=1e-5)
    st = atk.step(tiny_data(1))
    assert st.mean_score == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))) / 2, rel=1e-5)


def test_step_without_gradient_leaves_the_patch():
    atk = UniversalPatchAttack(ConstantDetector(torch.tensor([1.0, 2.0])), "patch_iou", alpha=0.6, size=8)
    p0 = atk.patch.detach().clone()
    st = atk.step(tiny_data(1))
    assert st.n == 2 and torch.equal(atk.patch.detach(), p0) and torch.equal(atk.patch.grad, torch.zeros_like(p0))


def test_attack_options_reach_the_rules():
    data = tiny_data(2)
    det = TinyDetector().eval()
    n = lambda **kw: UniversalPatchAttack(det, alpha=0.6, location="center", **kw).evaluate(data).n
    assert n(method="patch_iou", iou_threshold=0.3, ) > n(method="patch_iou") > n(method="patch_iou", iou_threshold=0.8)
    base = n(method="patch_combination", score_threshold=0.0)
    assert n(method="patch_combination", score_threshold=0.0, lambda1=0.9) < base
    assert n(method="patch_combination", score_threshold=0.0, lambda1=0.9, lambda2=0.9) < \
        n(method="patch_combination", score_threshold=0.0, lambda1=0.9)
    # Patch-Combination measures IoU with the patch box at the attack's own location
    from facelab.attacks.sample_sets import select_samples as sel

    atk = UniversalPatchAttack(det, "patch_combination", alpha=0.3, location="bottom", score_threshold=0.0,
                               lambda1=0.99, lambda2=0.2)
    with torch.no_grad():
        expect = 0
        for im, gt in data:
            out = det.dense(paste_patch(im, atk.patch, gt, 0.3, "bottom")[None])
            expect += int(sel("patch_combination", out.anchors[0], gt, patch_boxes(gt, 0.3, "bottom"), out.scores[0],
                              score_threshold=0.0, lambda1=0.99, lambda2=0.2).sum())
    assert atk.evaluate(data).n == expect > 0


def test_literal_focal_changes_the_update():
    data = tiny_data(1)
    patches = []
    for literal in (False, True):
        atk = UniversalPatchAttack(TinyDetector().eval(), "patch_score_focal", alpha=0.6, location="center",
                                   score_threshold=0.0, literal_focal=literal, seed=0)
        atk.step(data)
        patches.append(atk.patch.detach().clone())
    assert not torch.equal(patches[0], patches[1])


def test_images_in_float64_and_several_faces_per_image():
    det = TinyDetector().eval()
    atk = UniversalPatchAttack(det, "patch_iou", alpha=0.5, location="center")
    im = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    two = torch.tensor([[4.0, 4, 24, 24], [26, 26, 46, 46]])
    a = atk.evaluate([(im, two)])
    b = atk.evaluate([(im.double(), two.tolist())])  # float64 pixels and a list of boxes
    assert a.n == b.n > 0 and a.loss == pytest.approx(b.loss, rel=1e-6)
    one = atk.evaluate([(im, two[:1])])
    assert a.n > one.n


def test_eot_draws_come_from_the_attacks_seed():
    data = tiny_data(2)
    runs = []
    for global_seed in (0, 1):
        atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center", seed=5,
                                   eot=EOT(rotation=20.0, scale=0.2, brightness=0.3))
        torch.manual_seed(global_seed)
        atk.fit(data, epochs=1, batch_size=2)
        runs.append(atk.patch.detach().clone())
    assert torch.equal(runs[0], runs[1])


def _paste_face_by_face(image, patch, gt, alpha=0.5, location="top", mask=None):
    from facelab.attacks.patch import _paste_one

    out = image
    for b in patch_boxes(gt, alpha, location):
        out = _paste_one(out, patch, b, mask)
    return out


def test_paste_disjoint_windows_equal_face_by_face_pasting_exactly():
    """The one-index_copy path for disjoint windows writes the same pixels, with the same patch gradient, as
    pasting one face after the other (the definition); windows at the border and an empty box included."""
    g = torch.Generator().manual_seed(3)
    image = torch.rand(3, 100, 130, generator=g)
    gt = torch.tensor([[2.3, 1.7, 30.2, 40.9], [50.0, 10.0, 80.5, 44.0], [100.0, 60.0, 140.0, 120.0],
                       [10.0, 70.0, 10.0, 90.0]])  # the last is empty
    patch = torch.rand(3, 32, 32, generator=g, requires_grad=True)
    mask = partial_mask(32, 0.5)
    for m in (None, mask):
        fast = paste_patch(image, patch, gt, 0.5, "center", mask=m)
        slow = _paste_face_by_face(image, patch, gt, 0.5, "center", mask=m)
        assert torch.equal(fast, slow)
        w = torch.rand(fast.shape, generator=g)
        g_fast, = torch.autograd.grad((fast * w).sum(), patch)
        g_slow, = torch.autograd.grad((slow * w).sum(), patch)
        torch.testing.assert_close(g_fast, g_slow, rtol=1e-6, atol=1e-7)
        assert g_fast.abs().sum() > 0


def test_paste_overlapping_windows_later_box_covers_earlier():
    image = torch.zeros(3, 60, 60)
    black, white = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0], [14.3, 14.3, 44.3, 44.3]])  # overlap; fractional edges blend
    first_white = paste_patch(paste_patch(image, white, gt[:1], 1.0, "center"), black, gt[1:], 1.0, "center")
    both = _paste_face_by_face(image, white, gt, 1.0, "center")
    assert torch.equal(paste_patch(image, white, gt, 1.0, "center"), both)
    # the second box's pixels are the second paste's, whatever lay under them
    torch.testing.assert_close(both[:, 15:43, 15:43], torch.ones(3, 28, 28))
    torch.testing.assert_close(first_white[:, 15:43, 15:43], torch.zeros(3, 28, 28))
    torch.testing.assert_close(first_white[:, 11:14, 11:14], torch.ones(3, 3, 3))
    # the second window's partly covered edge row blends over the first paste (white), not over the image (black)
    torch.testing.assert_close(paste_patch(image, white, gt, 1.0, "center")[:, 14, 15:40], torch.ones(3, 25))  # first box outside the second


def test_sample_set_and_loss_defaults_are_the_papers():
    """§3.2/§4.2 defaults: IoU > 0.6, S > 0.5, λ1 = λ2 = 0.3, γ = 2 (the same answers as passing them)."""
    anchors, gt, pb, scores = _case()
    kw = dict(score_threshold=0.5, iou_threshold=0.6, lambda1=0.3, lambda2=0.3)
    for method in ("patch_iou", "patch_score", "patch_combination"):
        assert torch.equal(select_samples(method, anchors, gt, pb, scores), select_samples(method, anchors, gt, pb,
                                                                                           scores, **kw))
    # each default on its own decides one anchor of the hand case: λ1 (anchor 2: IoU 1/3 with the face),
    # λ2 (anchor 3 = the patch, IoU 0.25 with the face), the score threshold (anchor 4, S = 0.8 at a background anchor
    # for Patch-Score; S = 0.3 at anchor 1), the IoU threshold (anchor 1: IoU 0.82)
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda2=0.99).tolist()[2] is True
    assert select_samples("patch_combination", anchors, gt, pb, scores, lambda1=0.9).tolist()[3] is True
    near = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 14]])  # IoU 1 and 10/14 = 0.71 with the face
    assert select_samples("patch_iou", near, gt, pb, scores[:2], include_best=False).tolist() == [True, True]
    at = torch.tensor([0.45, 0.55])
    assert select_samples("patch_score", near, gt, pb, at).tolist() == [False, True]
    s = torch.tensor([0.5, 0.25])
    got, n = adversarial_loss("patch_score_focal", s, torch.ones(2, dtype=torch.bool))
    assert int(n) == 2 and got.item() == pytest.approx(0.25 * math.log(0.5) + 0.0625 * math.log(0.25), rel=1e-6)
    with pytest.raises(ValueError, match=r"method: expected one of .*patch_iou.*, got 'patch_magic'"):
        adversarial_loss("patch_magic", s, torch.ones(2, dtype=torch.bool))


# -- UniversalPatchAttack: defaults, messages, one sample, no logits, other locations, several processes -----

class NoLogitsDetector(FixedDetector):
    """FixedDetector without logits: the loss takes log S from the scores."""

    def dense(self, images):
        d = super().dense(images)
        return DenseOutput(d.anchors, d.boxes, d.scores, None)


def test_universal_patch_defaults_and_black_box_message():
    atk = UniversalPatchAttack(TinyDetector())
    assert (atk.method, atk.alpha, atk.location, atk.score_threshold, atk.iou_threshold) == \
        ("patch_iou", 0.5, "top", 0.5, 0.6)
    with pytest.raises(TypeError, match=r"^model: Identity has no dense\(\); a black-box detector cannot be attacked "
                                        r"with gradients \(use it as a transfer target instead\)$"):
        UniversalPatchAttack(nn.Identity())
    # an initial patch given as a float64 image is resized to a float32 patch
    atk = UniversalPatchAttack(TinyDetector(), init=torch.rand(3, 20, 30, dtype=torch.float64), size=16)
    assert atk.patch.dtype == torch.float32 and atk.patch.shape == (3, 16, 16)


def test_one_selected_sample_and_a_detector_without_logits():
    """N = 1: the loss is log S of that one sample itself (Eq. 1 with N = 1), from the scores when there are
    no logits; its mean score is S."""
    s = torch.tensor([0.8, 0.3, 0.1])
    for det in (FixedDetector(torch.logit(s)), NoLogitsDetector(torch.logit(s))):
        atk = UniversalPatchAttack(det, "patch_score", score_threshold=0.5, alpha=0.6)
        st = atk.evaluate(tiny_data(1))
        assert st.n == 1 and st.loss == pytest.approx(math.log(0.8), rel=1e-6)
        assert st.mean_score == pytest.approx(0.8, rel=1e-6)


def test_patch_combination_uses_the_attacks_patch_location():
    """λ2 tests IoU(A_i, P) with P at the attack's location: a prior on the face's bottom half matches a bottom
    patch (IoU 0.61) but not a top one (IoU 0.04)."""
    det = FixedDetector(torch.logit(torch.tensor([0.9])))
    det.anchors = torch.tensor([[14.0, 26.0, 34.0, 38.0]])
    face = torch.tensor([[8.0, 8.0, 40.0, 40.0]])  # 32 px: patch side 0.6 * 32 = 19.2
    data = [(torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0)), face)]
    for location, n in (("bottom", 1), ("top", 0)):
        atk = UniversalPatchAttack(det, "patch_combination", alpha=0.6, location=location, lambda1=0.9, lambda2=0.3)
        assert atk.evaluate(data).n == n, location


def test_patch_gradient_is_summed_over_processes_then_averaged(monkeypatch):
    """Under a process group of 2 (simulated): ``all_reduce(SUM)`` of the patch gradient, divided by 2."""
    import facelab.attacks.universal_patch as up

    data = tiny_data(2)
    ref = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center")
    ref.step(data)
    g = ref.patch.grad.clone()
    other = torch.full_like(g, 0.25)
    calls = []

    def all_reduce(t, op=None):
        calls.append(op)
        t += other  # the other process's gradient

    monkeypatch.setattr(up.distributed, "world", lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center")
    atk.step(data)
    assert calls == [torch.distributed.ReduceOp.SUM]
    torch.testing.assert_close(atk.patch.grad, (g + other) / 2)


def test_fit_shards_a_sequence_by_rank_but_not_an_iterable_of_batches(monkeypatch):
    import facelab.attacks.universal_patch as up

    data = tiny_data(5)
    seen: list[int] = []
    monkeypatch.setattr(up.distributed, "world", lambda: (1, 2))
    atk = UniversalPatchAttack(TinyDetector(), "patch_iou", alpha=0.6, location="center")
    monkeypatch.setattr(atk, "step", lambda batch: seen.extend(int(b[0].sum() * 1000) for b in batch))
    keys = [int(im.sum() * 1000) for im, _ in data]
    atk.fit(data, epochs=1, batch_size=2)
    assert sorted(seen) == sorted(keys[1::2])  # rank 1 of 2: samples 1 and 3
    seen.clear()
    atk.fit(iter([data[:2], data[2:]]), epochs=1)  # a DataLoader shards itself (DistributedSampler)
    assert sorted(seen) == sorted(keys)


# -- init_patch and the paste window, exactly (mutation survivors) -------------------------------------------------
def test_init_patch_defaults_and_image_resize_exactly():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(init_patch(), torch.rand(3, 128, 128, generator=g))  # noise, 128 px, seed 0
    ramp = torch.linspace(-0.5, 1.5, 40 * 30).reshape(1, 30, 40).expand(3, -1, -1).contiguous()
    want = F.interpolate(ramp[None], size=(12, 12), mode="bilinear", antialias=True, align_corners=False)[0]
    got = init_patch(ramp, 12)  # a tensor is resized directly: antialiased bilinear, then clipped to [0, 1]
    assert torch.equal(got, want.clamp(0, 1)) and got.min() == 0 and got.max() == 1 and 0 < got.mean() < 1
    assert not torch.equal(got, F.interpolate(ramp[None], size=(12, 12), mode="bilinear")[0].clamp(0, 1))
    # a box partly outside the image is clipped to it
    clipped = init_patch("image", 8, image=ramp, box=[-5, -3, 10, 12])
    assert torch.equal(clipped, init_patch("image", 8, image=ramp[:, 0:12, 0:10]))


def test_init_patch_box_and_image_messages():
    img = torch.rand(3, 50, 60)
    assert init_patch("image", 4, image=img, box=[20, 10, 22, 12]).shape == (3, 4, 4)  # 2 x 2 px: the least
    for box in ([20, 10, 21, 30], [20, 10, 40, 11]):
        with pytest.raises(ValueError, match=rf"^init_patch: box \[{float(box[0])}, {float(box[1])}, "
                                             rf"{float(box[2])}, {float(box[3])}\] is empty inside a 60x50 image$"):
            init_patch("image", 4, image=img, box=box)
    with pytest.raises(ValueError, match=r"^init_patch: kind='image' needs image=\[3,H,W\]$"):
        init_patch("image", 4)
    with pytest.raises(ValueError, match=r"^init_patch: image must be \[3,H,W\], got \(3, 8, 8, 1\)$"):
        init_patch("image", 4, image=torch.rand(3, 8, 8, 1))


def test_paste_window_rectangles_and_empty_boxes():
    from facelab.attacks.patch import _blend_window, _resized_texture
    img, p = torch.zeros(3, 20, 30), torch.rand(3, 8, 8)
    (rect, win) = _blend_window(img, p, torch.tensor([4.0, 2.0, 10.0, 6.0]), None)
    assert rect == (1, 7, 4, 10) and win.shape == (3, 6, 6)  # unrotated: a square of the larger half-side (3)
    rect, _ = _blend_window(img, p, torch.tensor([4.0, 2.0, 10.0, 6.0]), None, rotation=30.0)
    assert rect == (0, 8, 3, 11)  # rotated: a square of the half-diagonal (3.6) around the centre
    for box in ([5.0, 5.0, 5.0, 10.0], [5.0, 5.0, 10.0, 5.0],  # zero width / height
                [-10.0, 5.0, 0.0, 15.0], [5.0, -10.0, 15.0, 0.0],  # touching the left / top edge from outside
                [-20.0, 5.0, -10.0, 15.0], [40.0, 5.0, 50.0, 15.0]):  # left / right of the image
        assert _blend_window(img, p, torch.tensor(box), None) is None, box
    # defaults: no rotation, brightness 1
    box = torch.tensor([4.3, 2.2, 10.1, 6.7])
    d = _blend_window(img, p, box, None)
    e = _blend_window(img, p, box, None, rotation=0.0, brightness=1.0)
    assert d[0] == e[0] and torch.equal(d[1], e[1])
    # the texture is resampled down to the pasted size, never up, and to at least 2 px
    assert _resized_texture(p, 8.0) is p and _resized_texture(p, 7.2) is p
    assert _resized_texture(p, 1.0).shape == (3, 2, 2) and _resized_texture(p, 2.5).shape == (3, 3, 3)


def test_paste_one_passes_rotation_and_brightness():
    from facelab.attacks.patch import _blend_window, _paste_one
    img, p = torch.zeros(3, 20, 30), torch.full((3, 8, 8), 0.5)
    box = torch.tensor([8.0, 4.0, 16.0, 12.0])
    out = _paste_one(img, p, box, None, rotation=30.0, brightness=1.5)
    (r0, r1, c0, c1), win = _blend_window(img, p, box, None, 30.0, 1.5)
    want = img.clone()
    want[:, r0:r1, c0:c1] = win
    assert torch.equal(out, want)
    assert out.max() == pytest.approx(0.75)  # 0.5 x 1.5
    assert out[0, 4, 8] < 0.75  # the box's corner pixel is only partly covered once rotated
    bright = _paste_one(img, torch.full((3, 8, 8), 0.8), box, None, brightness=1.5)
    assert bright.max() == 1.0 and bright[0, 8, 12] == 1.0  # 0.8 x 1.5 saturates at 1


def test_disjoint_windows_rule():
    from facelab.attacks.patch import _disjoint
    assert _disjoint([]) and _disjoint([(0, 5, 0, 5)])
    assert not _disjoint([(0, 5, 0, 5), (0, 5, 0, 5)])       # the same window twice
    assert not _disjoint([(0, 10, 0, 10), (2, 5, 2, 5)])     # nested
    assert not _disjoint([(0, 5, 0, 5), (4, 9, 4, 9)])       # one shared pixel (4, 4)
    assert _disjoint([(0, 5, 0, 5), (5, 9, 0, 5)])           # touching rows, no shared pixel
    assert _disjoint([(0, 5, 0, 5), (0, 5, 7, 9)])           # the same rows, apart in columns
    assert _disjoint([(0, 5, 0, 5), (7, 9, 0, 5)])           # the same columns, apart in rows
    for a, b in (((0, 5, 0, 5), (5, 9, 0, 5)), ((0, 5, 0, 5), (0, 5, 5, 9))):  # touching, in both orders
        assert _disjoint([a, b]) and _disjoint([b, a]), (a, b)
    assert not _disjoint([(0, 5, 4, 9), (4, 9, 0, 5)]) and not _disjoint([(4, 9, 0, 5), (0, 5, 4, 9)])


def test_paste_defaults_messages_and_degenerate_boxes():
    gt = torch.tensor([[10.0, 20.0, 60.0, 90.0]])
    assert torch.equal(patch_boxes(gt), patch_boxes(gt, 0.5, "top"))
    assert patch_boxes(gt.double()).dtype == torch.float32 and patch_boxes([[1, 2, 5, 8]]).dtype == torch.float32
    assert patch_boxes(torch.tensor([[10.0, 20.0, 10.0, 90.0], [10.0, 20.0, 60.0, 20.0]])).tolist() == [
        [10.0, 20.0, 10.0, 20.0], [35.0, 20.0, 35.0, 20.0]]  # zero width or height: an empty patch box
    img, p = torch.rand(3, 100, 80), torch.rand(3, 32, 32)
    assert torch.equal(paste_patch(img, p, gt), paste_patch(img, p, gt, 0.5, "top"))
    with pytest.raises(ValueError, match=r"^patch: expected \[3,p,p\] RGB in \[0,1\], got \(1, 32, 32\)$"):
        paste_patch(img, p[:1], gt)
    with pytest.raises(ValueError, match=r"^image: expected \[3,H,W\], got \(3, 100, 80, 1\)$"):
        paste_patch(img[..., None], p, gt)


def test_eot_scale_keeps_the_patch_centre():
    """An EOT scale draw shrinks or grows the patch box about its own centre."""
    gt = torch.tensor([[40.0, 10.0, 80.0, 50.0]])  # patch box (alpha 0.5, top): [50, 10, 70, 30], centre (60, 20)
    out = paste_patch(torch.zeros(3, 64, 100), torch.ones(3, 32, 32), gt, 0.5, "top",
                      eot=EOT(rotation=0.0, scale=0.5, brightness=0.0), generator=torch.Generator().manual_seed(0))
    w = out[0]
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(100) + 0.5, indexing="ij")
    assert (w.sum() - 400).abs() > 1  # the draw changed the size
    assert float((w * xs).sum() / w.sum()) == pytest.approx(60.0, abs=1e-3)
    assert float((w * ys).sum() / w.sum()) == pytest.approx(20.0, abs=1e-3)


def test_overlapping_pastes_pass_mask_rotation_and_brightness():
    """Overlapping windows are pasted one after the other, each with the mask and its own EOT draw."""
    from facelab.attacks.patch import _paste_one
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0], [20.0, 14.0, 60.0, 54.0]])
    img, p, mask = torch.rand(3, 64, 72), torch.rand(3, 32, 32), partial_mask(32, 0.6, "left")
    eot = EOT(rotation=20.0, scale=0.0, brightness=0.3)
    out = paste_patch(img, p, gt, 0.5, "center", mask=mask, eot=eot, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    want = img
    for box in patch_boxes(gt, 0.5, "center"):
        rot, _, br = eot.sample(g)
        want = _paste_one(want, p, box, mask, rot, br)
    assert torch.equal(out, want)
    plain = img
    for box in patch_boxes(gt, 0.5, "center"):
        plain = _paste_one(plain, p, box, None)
    assert not torch.equal(out, plain)


def test_paste_coverage_in_float64_is_exact():
    """Coverage of a pixel = clip(half-width - |offset| + 0.5, 0, 1) per axis, computed in the image's dtype."""
    img = torch.zeros(3, 12, 12, dtype=torch.float64)
    p = torch.ones(3, 64, 64, dtype=torch.float64)
    gt = torch.tensor([[0.3, 0.3, 10.3, 10.3]])
    out = paste_patch(img, p, gt, 1.0, "top")
    assert out.dtype == torch.float64
    # pixel (0, 0): centre 0.5, box centre ~5.3, half-width ~5: ~5 - 4.8 + 0.5 = 0.7 per axis (the box itself is
    # float32, as patch_boxes makes it)
    x1, _, x2, _ = patch_boxes(gt, 1.0, "top")[0].tolist()
    cx, hw = (x1 + x2) / 2, (x2 - x1) / 2
    cover = min(max(hw - abs(0.5 - cx) + 0.5, 0.0), 1.0)
    assert out[0, 0, 0].item() == pytest.approx(cover * cover, rel=1e-12)
    assert out[0, 5, 0].item() == pytest.approx(cover, rel=1e-12)
    from facelab.attacks.patch import _blend_window
    _, win = _blend_window(img, torch.ones(3, 64, 64), patch_boxes(gt, 1.0, "top")[0], None)  # float32 texture
    assert win.dtype == torch.float64 and win[0, 0, 0].item() == pytest.approx(cover * cover, rel=1e-12)
