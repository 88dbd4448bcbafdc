"""Gaussian blur, the classic denoising input transformation (fully differentiable).

A separable, normalised Gaussian kernel of standard deviation ``sigma`` pixels, ``2 * ceil(3 sigma) + 1``
taps unless ``kernel_size`` is given, with replicated borders (the output is a convex combination of
input pixels, so it stays in [0,1]). ``sigma = 0`` is the identity. Plain torch convolutions (kornia's
``gaussian_blur2d`` computes the same with its own border choice).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from facelab.defenses.base import Defense, check_float, check_int
from facelab.models.base import check_images

__all__ = ["gaussian_blur", "GaussianBlur", "gaussian_kernel1d"]


def gaussian_kernel1d(sigma: float, kernel_size: int, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Tensor:
    """Normalised 1-D Gaussian taps ``[kernel_size]`` centred on the middle tap."""
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(images: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """``images`` [B,3,H,W] in [0,1] blurred with a Gaussian of ``sigma`` pixels (odd ``kernel_size``)."""
    sigma = check_float("gaussian_blur", "sigma", sigma, 0.0)
    if kernel_size is not None:
        kernel_size = check_int("gaussian_blur", "kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"gaussian_blur: kernel_size must be odd, got {kernel_size}")
    images = check_images(images)
    if sigma == 0 or kernel_size == 1:
        return images
    k = kernel_size or 2 * math.ceil(3 * sigma) + 1
    taps = gaussian_kernel1d(sigma, k, images.dtype, images.device)
    c, r = images.shape[1], k // 2
    x = F.pad(images, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


class GaussianBlur(Defense):
    """Module form of :func:`gaussian_blur`."""

    def __init__(self, sigma: float = 1.0, kernel_size: int | None = None):
        super().__init__()
        self.sigma = check_float("GaussianBlur", "sigma", sigma, 0.0)
        if kernel_size is not None and (check_int("GaussianBlur", "kernel_size", kernel_size, 1) % 2 == 0):
            raise ValueError(f"GaussianBlur: kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size

    def forward(self, images: Tensor) -> Tensor:
        return gaussian_blur(images, self.sigma, self.kernel_size)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, kernel_size={self.kernel_size}"
