"""Bit-depth reduction, the first squeezer of feature squeezing (Xu, Evans, Qi, NDSS 2018).

Each colour value is rounded to ``2**bits`` levels: ``round(x * (2**bits - 1)) / (2**bits - 1)``.
Rounding has a zero gradient almost everywhere, so the backward pass is straight-through (BPDA) by
default; ``bpda=False`` gives the true, zero gradient (a gradient-masked defense, for demonstrations).
"""

from __future__ import annotations

import torch
from torch import Tensor

from facelab.defenses.base import Defense, check_int, straight_through
from facelab.models.base import check_images

__all__ = ["bit_depth_reduction", "BitDepthReduction"]


def bit_depth_reduction(images: Tensor, bits: int, bpda: bool = True) -> Tensor:
    """``images`` [B,3,H,W] in [0,1] squeezed to ``bits`` (1..8) bits per channel.

    ``bits=8`` leaves 8-bit images (values k/255) unchanged; applying it twice equals applying it once.
    """
    bits = check_int("bit_depth_reduction", "bits", bits, 1, 8)
    images = check_images(images)
    levels = 2**bits - 1
    squeezed = torch.round(images.detach() * levels) / levels
    return straight_through(images, squeezed) if bpda else squeezed


class BitDepthReduction(Defense):
    """Module form of :func:`bit_depth_reduction`."""

    differentiable = False

    def __init__(self, bits: int = 5, bpda: bool = True):
        super().__init__()
        self.bits = check_int("BitDepthReduction", "bits", bits, 1, 8)
        self.bpda = bool(bpda)

    def forward(self, images: Tensor) -> Tensor:
        return bit_depth_reduction(images, self.bits, self.bpda)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, bpda={self.bpda}"
