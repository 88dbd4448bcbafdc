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
