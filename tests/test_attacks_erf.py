"""The ERF measurement (facelab.attacks.erf) on hand-made maps, anchors and a detector with known gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from facelab.attacks import erf
from facelab.models.base import DenseOutput


class QuadDense(nn.Module):
    """A 'detector' with logit z_a(x) = sum(w_a * x^2): d z_a / d x = 2 w_a x (known per image and pixel)."""

    def __init__(self, w: torch.Tensor, with_logits: bool = True) -> None:
        super().__init__()
        self.w, self.with_logits = w, with_logits

    def dense(self, x):
        z = (x[:, None] ** 2 * self.w).flatten(2).sum(-1)  # [B,A]
        boxes = torch.zeros(x.shape[0], self.w.shape[0], 4)
        return DenseOutput(boxes, boxes, torch.sigmoid(z), z if self.with_logits else None)


def _quad(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 5, 6, generator=g), torch.rand(2, 3, 5, 6, generator=g)


def test_erf_gradients_are_the_logit_gradient_magnitudes_summed_over_channels():
    w, x = _quad()
    for a in (0, 2):  # the first and the last anchor
        want = (2 * w[a] * x).abs().sum(1)
        torch.testing.assert_close(erf.erf_gradients(QuadDense(w), x, a), want)
        torch.testing.assert_close(erf.erf_heatmap(QuadDense(w), x, a), want.mean(0))
    # without logits: the score's gradient, sigmoid'(z) d z / d x
    z = (x[:, None] ** 2 * w).flatten(2).sum(-1)[:, 1]
    s = torch.sigmoid(z)
    want = (s * (1 - s)).view(-1, 1, 1) * (2 * w[1] * x).abs().sum(1)
    torch.testing.assert_close(erf.erf_gradients(QuadDense(w, with_logits=False), x, 1), want)


def test_erf_gradients_reject_bad_input_by_name():
    w, x = _quad()
    with pytest.raises(ValueError, match=r"^images: expected \[M,3,H,W\], got \(2, 4, 5, 6\)$"):
        erf.erf_gradients(QuadDense(w), torch.zeros(2, 4, 5, 6), 0)
    with pytest.raises(ValueError, match=r"^images: expected \[M,3,H,W\], got \(3, 5, 6\)$"):
        erf.erf_gradients(QuadDense(w), x[0], 0)
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=rf"^anchor: {bad} outside the 3 anchors$"):
            erf.erf_gradients(QuadDense(w), x, bad)


def test_anchor_scales_group_by_rounded_side():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [5, 5, 15, 15], [0, 0, 10, 20],
                            [10, 0, 5, 4],    # width < 0: side 0 (not 2)
                            [0, 10, 4, 5]])   # height < 0: side 0
    got = {k: v.tolist() for k, v in erf.anchor_scales(anchors).items()}
    assert got == {0.0: [4, 5], 10.0: [0, 2], 14.0: [3], 20.0: [1]}  # sqrt(200) = 14.14 -> 14
    got = {round(k, 4): v.tolist() for k, v in erf.anchor_scales(anchors, decimals=1).items()}
    assert got == {0.0: [4, 5], 10.0: [0, 2], 14.1: [3], 20.0: [1]}


def test_centre_anchor_is_the_nearest_centre_on_a_non_square_image():
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        xy = torch.rand(40, 2, generator=g) * torch.tensor([200.0, 60.0])
        wh = torch.rand(40, 2, generator=g) * 30 + 1
        anchors = torch.cat([xy, xy + wh], 1)
        cand = torch.randperm(40, generator=g)[:25]
        H, W = 60, 200
        want = min(cand.tolist(), key=lambda i: math.hypot((anchors[i, 0] + anchors[i, 2]).item() / 2 - W / 2,
                                                           (anchors[i, 1] + anchors[i, 3]).item() / 2 - H / 2))
        assert erf.centre_anchor(anchors, cand, (H, W)) == want


def _r2_reference(h: np.ndarray) -> float:
    """R² against the moment-matched Gaussian, by numpy's weighted covariance (an independent formulation)."""
    H, W = h.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    p = np.stack([xs.ravel(), ys.ravel()])
    cov = np.cov(p, aweights=h.ravel(), bias=True)
    d = p - np.average(p, axis=1, weights=h.ravel())[:, None]
    g = np.exp(-0.5 * np.einsum("in,ij,jn->n", d, np.linalg.inv(cov), d))
    a = (g * h.ravel()).sum() / (g * g).sum()
    return 1 - ((h.ravel() - a * g) ** 2).sum() / ((h.ravel() - h.mean()) ** 2).sum()


def test_gaussian_r2_against_an_independent_formulation():
    ys, xs = np.mgrid[0:31, 0:37].astype(float)
    u, v = xs - 17.3, ys - 14.6
    tilted = np.exp(-0.5 * (u * u / 30 + 2 * 0.6 * u * v / math.sqrt(30 * 8) + v * v / 8) / (1 - 0.36))
    rng = np.random.default_rng(0)
    for h in (tilted, tilted + 0.05 * rng.random(tilted.shape), (np.abs(u) < 6) & (np.abs(v) < 3),
              rng.random((9, 11))):
        h = h.astype(float)
        assert erf.gaussian_r2(torch.from_numpy(h)) == pytest.approx(_r2_reference(h), rel=1e-9, abs=1e-9)
    assert erf.gaussian_r2(torch.from_numpy(tilted)) > 0.9999  # a tilted Gaussian (correlated axes), cut by the frame
    assert erf.gaussian_r2(torch.from_numpy(tilted * 1e-3)) > 0.9999  # gradient maps are small numbers
    one = torch.zeros(7, 7, dtype=torch.float64)
    one[3, 4] = 1.0  # a single pixel: zero covariance, regularised, the Gaussian is that pixel
    assert erf.gaussian_r2(one) == 1.0
    assert math.isnan(erf.gaussian_r2(torch.ones(4, 4)))  # a flat map has no variance to explain


def test_erf_stats_hand_counted():
    h = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 2.0, 1.0]])
    st = erf.erf_stats(h, threshold=0.5)  # cut at 0.5 x 2 = 1: the pixel at exactly 1 counts
    assert st == {"erf_area": 2.0, "erf_radius": math.sqrt(2 / math.pi), "trf_area": 3.0,
                  "trf_radius": math.sqrt(3 / math.pi), "ratio": 2 / 3, "peak_x": 2.0, "peak_y": 1.0,
                  "gaussian_r2": erf.gaussian_r2(h)}
    wide = erf.erf_stats(h, support=torch.ones(2, 4), threshold=0.5)
    assert wide["trf_area"] == 8.0 and wide["ratio"] == 0.25
    one = torch.zeros(3, 3)
    one[1, 1] = 1e-4
    assert erf.erf_stats(one)["ratio"] == 1.0
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"^threshold: must lie in \(0, 1\)"):
            erf.erf_stats(h, threshold=bad)
    with pytest.raises(ValueError, match=r"^heat: the map is zero everywhere"):
        erf.erf_stats(torch.zeros(3, 3))
