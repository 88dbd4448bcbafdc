"""Effective receptive field (Luo, Li, Urtasun & Zemel, NIPS 2016) of a detector's anchors, against the
theoretical receptive field (TRF).

For one output unit (an anchor's face logit) the ERF is the map of ``|d z / d x|`` (summed over the colour
channels) averaged over images (:func:`erf_heatmap`). Luo et al. find it Gaussian-like and a small fraction
of the TRF. We measure, per map:

* the **ERF region**: pixels whose value is at least ``threshold`` of the peak -- by default 1 − 95.45 %
  (a 2-σ Gaussian's edge, Luo et al.'s choice as we read it); its radius is ``sqrt(area / pi)``
  (:func:`erf_stats`);
* the **TRF**: the support of the gradient (any non-zero value in any image), the pixels that can influence
  the unit at all; its radius likewise;
* how **Gaussian-like** the map is: R² of the map against the 2-D Gaussian with the map's own centre and
  second moments (:func:`gaussian_r2`).

Anchors are grouped by *scale* (the side of their prior box, :func:`anchor_scales`); each scale is measured at
the anchor nearest the image centre. Maps are in the detector's input pixels (images of its ``input_size``);
:func:`erf_radius_in_image` converts a radius to the pixels of an image the detector resizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from facelab.attacks.lip import dense_of

__all__ = ["ERF_THRESHOLD", "anchor_scales", "centre_anchor", "erf_gradients", "erf_heatmap", "erf_stats",
           "gaussian_r2", "erf_radius_in_image"]

#: Luo et al.'s effective pixels: value >= 1 − 95.45 % of the peak
ERF_THRESHOLD = 1 - 0.9545


def anchor_scales(anchors: Tensor, decimals: int = 0) -> dict[float, Tensor]:
    """Indices of the anchors ([A,4] priors) of each scale, keyed by the prior's side ``sqrt(w h)`` rounded."""
    side = ((anchors[:, 2] - anchors[:, 0]).clamp(min=0) * (anchors[:, 3] - anchors[:, 1]).clamp(min=0)).sqrt()
    side = torch.round(side * 10 ** decimals) / 10 ** decimals
    return {float(s): torch.nonzero(side == s).flatten() for s in torch.unique(side).tolist()}


def centre_anchor(anchors: Tensor, candidates: Tensor, size: tuple[int, int]) -> int:
    """The index (among ``candidates``) of the anchor whose centre is nearest the image centre."""
    H, W = size
    c = (anchors[candidates, :2] + anchors[candidates, 2:]) / 2
    d = (c[:, 0] - W / 2) ** 2 + (c[:, 1] - H / 2) ** 2
    return int(candidates[int(torch.argmin(d))])


def erf_gradients(model: torch.nn.Module, images: Tensor, anchor: int) -> Tensor:
    """``[M,H,W]``: ``|d z_anchor / d x|`` summed over channels, for each image (one backward for all)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [M,3,H,W], got {tuple(images.shape)}")
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        d = dense_of(model, x)
        z = d.logits if d.logits is not None else d.scores
        if not 0 <= anchor < z.shape[1]:
            raise ValueError(f"anchor: {anchor} outside the {z.shape[1]} anchors")
        (g,) = torch.autograd.grad(z[:, anchor].sum(), x)
    return g.abs().sum(1)


def erf_heatmap(model: torch.nn.Module, images: Tensor, anchor: int) -> Tensor:
    """Luo et al.'s ERF map of one anchor: the per-image gradient magnitudes averaged over images ([H,W])."""
    return erf_gradients(model, images, anchor).mean(0)


def erf_stats(heat: Tensor, support: Tensor | None = None, threshold: float = ERF_THRESHOLD) -> dict[str, float]:
    """ERF and TRF of a map: ``erf_area`` (pixels >= ``threshold`` x peak), ``erf_radius``, ``trf_area`` (non-zero
    pixels of ``support``, default the map itself), ``trf_radius``, ``ratio`` (ERF / TRF area), peak position."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: must lie in (0, 1), got {threshold}")
    h = heat.detach().double()
    peak = float(h.max())
    if not peak > 0:
        raise ValueError("heat: the map is zero everywhere (the anchor does not depend on the image)")
    erf = int((h >= threshold * peak).sum())
    sup = (h > 0) if support is None else (support > 0)
    trf = int(sup.sum())
    iy, ix = divmod(int(torch.argmax(h)), h.shape[1])
    return {"erf_area": float(erf), "erf_radius": math.sqrt(erf / math.pi), "trf_area": float(trf),
            "trf_radius": math.sqrt(trf / math.pi), "ratio": erf / max(trf, 1), "peak_x": float(ix),
            "peak_y": float(iy), "gaussian_r2": gaussian_r2(h)}


def gaussian_r2(heat: Tensor) -> float:
    """R² of ``heat`` against the 2-D Gaussian with the map's centre of mass and covariance, scaled by least
    squares: 1 = exactly Gaussian."""
    h = heat.detach().double()
    H, W = h.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    w = h / h.sum()
    mx, my = float((w * xs).sum()), float((w * ys).sum())
    dx, dy = xs - mx, ys - my
    cov = torch.tensor([[float((w * dx * dx).sum()), float((w * dx * dy).sum())],
                        [float((w * dx * dy).sum()), float((w * dy * dy).sum())]], dtype=torch.float64)
    inv = torch.linalg.inv(cov + 1e-9 * torch.eye(2, dtype=torch.float64))
    q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
    g = torch.exp(-0.5 * q)
    a = float((g * h).sum() / (g * g).sum())
    ss_res = float(((h - a * g) ** 2).sum())
    ss_tot = float(((h - h.mean()) ** 2).sum())
    return 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def erf_radius_in_image(radius: float, input_size: int, image_size: Sequence[int]) -> float:
    """A radius in the detector's ``input_size`` pixels, in the pixels of an image of ``image_size`` (H, W)
    that the detector resizes to its input (longest side -> ``input_size``)."""
    return float(radius) * max(image_size) / float(input_size)
