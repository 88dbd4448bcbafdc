"""The saliency-mask defense: the guided-backprop rule on an unedited model, each mask stage, BPDA, goodness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelab.attacks.base import state_fingerprint
from facelab.defenses import defended
from facelab.defenses.saliency_mask import (
    GuidedReLU, SaliencyMask, apply_mask, goodness, grid_search, guided_relus, mask_stages, normalize_saliency,
    saliency_map, saliency_mask,
)
from facelab.models.base import FaceClassifier


class Mixed(FaceClassifier):
    """One ReLU as an nn.ReLU module (in place), one through F.relu, one through torch.relu."""

    labels = ["a", "b", "c"]

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.c2(self.act(self.c1(x))))
        return self.fc(torch.relu(h.mean((2, 3)) - 0.01))


def manual_guided(model: Mixed, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """The same net written with GuidedReLU explicitly."""
    x = x.clone().requires_grad_(True)
    h = GuidedReLU.apply(model.c2(GuidedReLU.apply(model.c1(x))))
    out = model.fc(GuidedReLU.apply(h.mean((2, 3)) - 0.01))
    (g,) = torch.autograd.grad(out.gather(1, cls[:, None]).sum(), x)
    return g


def test_guided_relu_backward_hand_value():
    x = torch.tensor([-1.0, 2.0, 3.0, 0.5], requires_grad=True)
    y = GuidedReLU.apply(x)
    (g,) = torch.autograd.grad(y, x, torch.tensor([1.0, -1.0, 2.0, 0.0]))
    assert y.tolist() == [0.0, 2.0, 3.0, 0.5] and g.tolist() == [0.0, 0.0, 2.0, 0.0]


def test_guided_relus_hooks_every_kind_of_relu_without_editing_the_model():
    model = Mixed().eval().requires_grad_(False)
    before = state_fingerprint(model)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    cls = model(x).argmax(-1)
    g = saliency_map(model, x)
    assert torch.allclose(g, manual_guided(model, x, cls), atol=1e-6)
    # plain gradient differs (negative signals pass), and is restored after the context
    xr = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xr).gather(1, cls[:, None]).sum(), xr)
    assert not torch.allclose(plain, g)
    assert F.relu is torch.nn.functional.relu and F.relu.__name__ == "relu" and torch.relu.__name__ == "relu"
    assert not model.act._forward_hooks
    assert state_fingerprint(model) == before
    with guided_relus(model):
        assert F.relu.__name__ == "_guided_relu" and len(model.act._forward_hooks) == 1
    with pytest.raises(RuntimeError), guided_relus(model):
        raise RuntimeError("boom")
    assert F.relu.__name__ == "relu" and not model.act._forward_hooks


def test_saliency_map_rejects_wrong_class_count():
    with pytest.raises(ValueError, match="classes: expected 2"):
        saliency_map(Mixed().eval(), torch.rand(2, 3, 8, 8), torch.tensor([0]))


def test_normalize_saliency_scaling():
    g = torch.zeros(1, 3, 4, 4)
    g[0, 1, 0, 0] = -5.0  # |.| and max over channels
    s = normalize_saliency(g)
    vals = torch.zeros(16)
    vals[0] = 5.0
    z = (vals - vals.mean()) / vals.std()
    assert s.shape == (1, 4, 4) and torch.allclose(s.flatten(), (0.5 + 0.1 * z).clamp(0, 1), atol=1e-6)


def test_mask_stages_threshold_morphology_contours():
    s = np.zeros((20, 20), np.float32)
    s[2:8, 2:8] = 1.0
    s[4, 4] = 0.0  # a one-pixel hole in the blob
    s[15, 15] = 1.0  # an isolated salient pixel
    st = mask_stages(s, 0.5, 0, 0)
    assert st["threshold"].sum() == 36 - 1 + 1 and st["threshold"][4, 4] == 0
    assert np.array_equal(st["morphology"], st["threshold"])  # n = 0: no morphology
    closed = mask_stages(s, 0.5, 1, 0)
    assert closed["morphology"][4, 4] == 1 and closed["morphology"][15, 15] == 1  # hole closed, dot kept
    filt = mask_stages(s, 0.5, 1, 5)
    assert filt["contours"][15, 15] == 0 and filt["contours"][2:8, 2:8].all()  # the dot is below φ = 5
    assert mask_stages(s, 1.0, 1, 0)["contours"].sum() == 0  # μ = 1: nothing exceeds it
    for bad, match in (((s, 1.5, 1, 0), "mu"), ((s, 0.5, -1, 0), "n"), ((s, 0.5, 1, -2), "phi"),
                       ((s[None], 0.5, 1, 0), "one map")):
        with pytest.raises(ValueError, match=match):
            mask_stages(*bad)


def test_apply_mask_fills_and_bpda_gradient():
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    m = torch.zeros(1, 1, 6, 6)
    m[..., 1:3, 1:3] = 1
    y = apply_mask(x, m)
    assert float(y.detach()[..., 1:3, 1:3].abs().max()) == 0 and torch.equal(y[..., 4:, 4:], x[..., 4:, 4:])
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, (1 - m).expand_as(x))
    ym = apply_mask(x.detach(), m, "mean")
    assert torch.allclose(ym[0, :, 1, 1], x.detach().mean((2, 3))[0])
    yi = apply_mask(x.detach(), m, "inpaint")
    assert yi.shape == x.shape and float(yi.min()) >= 0
    with pytest.raises(ValueError, match="fill"):
        apply_mask(x, m, "blur")


def test_saliency_mask_module_defended_classifier_and_zero_mask_identity():
    model = Mixed().eval().requires_grad_(False)
    d = SaliencyMask(model, mu=1.0, n=0, phi=0)  # μ = 1 masks nothing: the identity
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(d(x), x)
    dm = defended(SaliencyMask(model, 0.5, 1, 0), model)
    assert isinstance(dm, FaceClassifier) and dm.labels == model.labels and not dm.defense.differentiable
    assert set(dm.state_dict()) == {f"1.{k}" for k in model.state_dict()}  # the victim is held once
    xr = x.clone().requires_grad_(True)
    dm(xr).sum().backward()  # BPDA: a gradient reaches the input through the mask
    assert xr.grad is not None and float(xr.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="mu"):
        SaliencyMask(model, mu=2.0)
    with pytest.raises(ValueError, match="fill"):
        SaliencyMask(model, fill="x")


def test_goodness_hand_value_and_grid_search():
    assert abs(goodness(0.9, 0.6, 0.3) - (0.9 + 0.6 + 0.7) / 3) < 1e-12
    model = Mixed().eval().requires_grad_(False)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    adv = x.clone()
    adv[..., 2:5, 2:5] = 1.0
    sc, sa = normalize_saliency(saliency_map(model, x)), normalize_saliency(saliency_map(model, adv))
    grid = grid_search(model, x, adv, sc, sa, (0.5, 0.7), (0,), (0.0, 3.0))
    assert [(r["mu"], r["n"], r["phi"]) for r in grid] == [(0.5, 0, 0.0), (0.5, 0, 3.0), (0.7, 0, 0.0), (0.7, 0, 3.0)]
    a = {(r["mu"], r["phi"]): r["area_adv"] for r in grid}
    assert bool((a[(0.7, 0.0)] <= a[(0.5, 0.0)]).all()) and bool((a[(0.5, 3.0)] <= a[(0.5, 0.0)]).all())
    r = grid[0]
    expect = F.softmax(model(apply_mask(adv, saliency_mask(sa, 0.5, 0, 0.0))), -1)
    assert torch.allclose(r["p_adv"], expect, atol=1e-6) and r["p_clean"].shape == (3, 3)
    with pytest.raises(ValueError, match="at least one"):
        grid_search(model, x, adv, sc, sa, (), (0,), (0.0,))


# ----------------------------------------------------------------------------- exact values (issue 19, mutation)
import re  # noqa: E402

import cv2  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402


def test_guided_relu_backward_at_the_boundaries():
    x = torch.tensor([-1.0, 0.0, 2.0, 0.5, 3.0], requires_grad=True)
    (g,) = torch.autograd.grad(GuidedReLU.apply(x), x, torch.tensor([1.0, 1.0, 0.5, 0.5, -1.0]))
    # x = 0 blocks, small positive x and small positive gradients pass, negative gradients block
    assert g.tolist() == [0.0, 0.0, 0.5, 0.5, 0.0]


class PlainReLU(FaceClassifier):
    """An out-of-place nn.ReLU module (the hook sees the input and the output as different tensors)."""

    labels = ["a", "b"]

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.c1(x)).mean((2, 3)))


def test_guided_relus_on_an_out_of_place_relu_module():
    model = PlainReLU().eval().requires_grad_(False)
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    cls = torch.tensor([0, 1])
    xr = x.clone().requires_grad_(True)
    out = model.fc(GuidedReLU.apply(model.c1(xr)).mean((2, 3)))
    (ref,) = torch.autograd.grad(out.gather(1, cls[:, None]).sum(), xr)
    assert torch.allclose(saliency_map(model, x, cls), ref, atol=1e-7)


def test_normalize_saliency_per_image_clamps_and_tiny_gradients():
    with pytest.raises(ValueError, match=re.escape("grad: expected [B,C,H,W] gradients, got (3, 4, 4)")):
        normalize_saliency(torch.zeros(3, 4, 4))
    # per-image statistics: a second image with other values does not change the first one's map
    g = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    g[1] *= 7.0
    s = normalize_saliency(g)
    assert torch.allclose(s[0], normalize_saliency(g[:1])[0]) and torch.allclose(s[1], normalize_saliency(g[1:])[0])
    # one outlier among 64 pixels is 7.9 standard deviations away: clamped to 1 (high) or 0 (low)
    hi = torch.zeros(1, 3, 8, 8)
    hi[0, 0, 0, 0] = 1.0
    assert float(normalize_saliency(hi)[0, 0, 0]) == 1.0
    lo = torch.ones(1, 3, 8, 8)
    lo[0, :, 0, 0] = 0.0
    assert float(normalize_saliency(lo)[0, 0, 0]) == 0.0
    # vanishing gradients (std 2e-12) are still scaled by their own std, not by the 1e-12 guard's sign
    tiny = torch.zeros(1, 3, 2, 2)
    tiny[0, 2, 0, 0] = 4e-12  # mean 1e-12, std 2e-12: z = (3, -1, -1, -1) / 3
    assert torch.allclose(normalize_saliency(tiny).flatten(), torch.tensor([0.6, 0.5 - 0.1 / 3, 0.5 - 0.1 / 3,
                                                                            0.5 - 0.1 / 3]), atol=1e-6)


@pytest.mark.parametrize("args, message", [
    ((1.5, 1, 0), "mask_stages: mu must be a number in [0.0, 1.0], got 1.5"),
    ((0.5, -1, 0), "mask_stages: n must be an integer >= 0, got -1"),
    ((0.5, 1, -2), "mask_stages: phi must be a number in >= 0.0, got -2"),
])
def test_mask_stages_error_messages(args, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        mask_stages(np.zeros((4, 4), np.float32), *args)


def test_mask_stages_reads_arrays_as_float32_like_tensors():
    # 0.98 + 1e-12 exceeds μ = 0.98 in float64 but not in float32, the precision of normalize_saliency's maps
    s64 = np.full((4, 4), 0.98 + 1e-12)
    t = torch.full((4, 4), 0.98 + 1e-12, requires_grad=True)  # a map still in a graph is read too
    assert np.array_equal(mask_stages(s64, 0.98, 0, 0)["threshold"], mask_stages(t, 0.98, 0, 0)["threshold"])
    assert mask_stages(s64, 0.98, 0, 0)["threshold"].sum() == 0 and mask_stages(t, 0.9, 0, 0)["threshold"].sum() == 16


def test_mask_stages_morphology_matches_scipy_closing():
    s = np.zeros((9, 11), np.float32)
    s[4, 3] = s[4, 7] = 1.0  # a gap of 3 pixels: closed by n = 2, not by n = 1
    s[1, 1] = 1.0
    for n in (1, 2, 3):
        k = np.ones((3, 3), bool)
        dil = ndi.binary_dilation(s > 0.5, k, iterations=n, border_value=0)
        ref = ndi.binary_erosion(dil, k, iterations=n, border_value=1)  # OpenCV erodes with a foreground border
        got = mask_stages(s, 0.5, n, 0)["morphology"]
        assert got.dtype == np.uint8 and np.array_equal(got, ref.astype(np.uint8)), n
    assert mask_stages(s, 0.5, 2, 0)["morphology"][4, 3:8].all() and not mask_stages(s, 0.5, 1, 0)["morphology"][4, 5]


def test_mask_stages_contours_keep_every_region_of_area_at_least_phi():
    s = np.zeros((10, 10), np.float32)
    s[1:3, 1:3] = 1.0  # area 4
    s[6:9, 6:9] = 1.0  # area 9
    s[1, 8] = 1.0  # area 1
    st = mask_stages(s, 0.5, 0, 4)
    expect = (s > 0.5).astype(np.uint8)
    expect[1, 8] = 0
    assert np.array_equal(st["contours"], expect)  # area == φ is kept; both large regions kept
    assert st["contours"].sum() == 13 and mask_stages(s, 0.5, 0, 5)["contours"].sum() == 9


def test_saliency_mask_shape_dtype_and_message():
    with pytest.raises(ValueError, match=re.escape("saliency: expected maps [B,H,W], got (4, 4)")):
        saliency_mask(torch.zeros(4, 4), 0.5, 0, 0)
    s = torch.zeros(2, 5, 5)
    s[1, 2, 2] = 1.0
    m = saliency_mask(s, 0.5, 0, 0)
    assert m.shape == (2, 1, 5, 5) and m.dtype == torch.float32 and m.sum() == 1 and m[1, 0, 2, 2] == 1


def test_apply_mask_accepts_any_mask_dtype():
    x = torch.rand(1, 3, 4, 4)
    m = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    m[..., 0, 0] = True
    ref = apply_mask(x, m.float())
    assert torch.equal(apply_mask(x, m), ref)
    y = apply_mask(x, m.double())
    assert y.dtype == torch.float32 and torch.equal(y, ref)


def test_apply_mask_inpaint_is_opencv_telea_radius_3():
    im = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    m = torch.zeros(1, 1, 12, 12)
    m[..., 4:7, 5:8] = 1
    u8 = (im[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ref = cv2.inpaint(u8, m[0, 0].numpy().astype(np.uint8), 3, cv2.INPAINT_TELEA)
    ref = torch.from_numpy(ref).permute(2, 0, 1).float() / 255
    y = apply_mask(im, m, "inpaint")[0]
    assert torch.allclose(y[:, 4:7, 5:8], ref[:, 4:7, 5:8], rtol=0, atol=1e-7)
    assert torch.equal(y[:, :4], im[0, :, :4])
    assert apply_mask(im.half(), m, "inpaint").dtype == torch.float16  # the fill takes the images' dtype


def test_saliency_mask_module_defaults_repr_messages_and_fill():
    model = Mixed().eval().requires_grad_(False)
    d = SaliencyMask(model)
    assert (d.mu, d.n, d.phi, d.fill) == (0.98, 8, 80.0, "zero") and d.victim is model
    assert d.extra_repr() == "mu=0.98, n=8, phi=80.0, fill='zero'"
    with pytest.raises(ValueError, match=f"^{re.escape('SaliencyMask: mu must be a number in [0.0, 1.0], got 2.0')}$"):
        SaliencyMask(model, mu=2.0)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    dm = SaliencyMask(PlainReLU().eval().requires_grad_(False), 0.5, 0, 0, fill="mean")
    mask = dm.mask(x)
    assert mask.sum() > 0 and torch.equal(dm(x), apply_mask(x, mask, "mean"))
    assert not torch.equal(dm(x), apply_mask(x, mask, "zero"))
