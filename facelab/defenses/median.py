"""Median smoothing, the second squeezer of feature squeezing (Xu, Evans, Qi, NDSS 2018).

Each pixel of each channel becomes the median of its ``k x k`` window, as ``scipy.ndimage.median_filter``
computes it (which Xu et al. used): the border is mirrored with the edge pixel repeated (scipy's
"reflect"), an even window spans ``k // 2`` pixels before and ``(k - 1) // 2`` after its pixel, and an
even count takes the upper of the two middle values. The gradient flows to the selected pixel of each
window (like max pooling): ``differentiable`` but sparse. ``bpda=True`` replaces it with the identity's
gradient (the straight-through estimate of Athalye et al. 2018).
"""

from __future__ import annotations

import torch
from torch import Tensor

from facelab.defenses.base import Defense, check_int, straight_through
from facelab.models.base import check_images

__all__ = ["median_smooth", "MedianSmoothing", "symmetric_pad"]


def symmetric_pad(x: Tensor, before: int, after: int) -> Tensor:
    """Pad the last two dims of ``x`` by mirroring with the edge repeated (``d c b a | a b c d | d c``)."""
    for dim in (-1, -2):
        n = x.shape[dim]
        if max(before, after) > n:
            raise ValueError(f"median_smooth: kernel_size too large for an image side of {n} pixels")
        parts = [x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, n - after, after).flip(dim)]
        x = torch.cat(parts, dim)
    return x


def median_smooth(images: Tensor, kernel_size: int, bpda: bool = False) -> Tensor:
    """``images`` [B,3,H,W] in [0,1] median-filtered over ``kernel_size x kernel_size`` windows (1 = identity)."""
    k = check_int("median_smooth", "kernel_size", kernel_size, 1)
    images = check_images(images)
    if k == 1:
        return images
    b, c, h, w = images.shape
    src = images.detach() if bpda else images
    padded = symmetric_pad(src, k // 2, (k - 1) // 2)
    windows = padded.unfold(2, k, 1).unfold(3, k, 1).reshape(b, c, h, w, k * k)
    smoothed = windows.kthvalue(k * k // 2 + 1, dim=-1).values
    return straight_through(images, smoothed) if bpda else smoothed


class MedianSmoothing(Defense):
    """Module form of :func:`median_smooth`."""

    def __init__(self, kernel_size: int = 2, bpda: bool = False):
        super().__init__()
        self.kernel_size = check_int("MedianSmoothing", "kernel_size", kernel_size, 1)
        self.bpda = bool(bpda)
        self.differentiable = not self.bpda

    def forward(self, images: Tensor) -> Tensor:
        return median_smooth(images, self.kernel_size, self.bpda)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, bpda={self.bpda}"
