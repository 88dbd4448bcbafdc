"""JPEG compression as a defense (Dziugaite et al. 2016; Das et al. 2017; Guo et al. ICLR 2018).

Each image is rounded to 8 bits, encoded as a baseline JPEG at ``quality`` (1..100) with OpenCV's
libjpeg (4:2:0 chroma subsampling) and decoded. The codec is not differentiable: the backward pass is
straight-through (BPDA, the identity's gradient) by default; ``bpda=False`` cuts the graph instead
(no gradient reaches the input: a gradient-masked defense, for demonstrations).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from facelab.defenses.base import Defense, check_int, straight_through
from facelab.models.base import check_images

__all__ = ["jpeg_compress", "JPEGCompression"]


def _codec(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of one HxWx3 RGB uint8 image."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - libjpeg failure
        raise RuntimeError("jpeg_compress: OpenCV could not encode the image")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def jpeg_compress(images: Tensor, quality: int, bpda: bool = True) -> Tensor:
    """``images`` [B,3,H,W] in [0,1] after a JPEG round trip at ``quality`` (1..100)."""
    quality = check_int("jpeg_compress", "quality", quality, 1, 100)
    images = check_images(images)
    pixels = torch.round(images.detach() * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([_codec(p, quality) for p in pixels])
    decoded = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=images.device, dtype=images.dtype) / 255
    return straight_through(images, decoded) if bpda else decoded


class JPEGCompression(Defense):
    """Module form of :func:`jpeg_compress`."""

    differentiable = False

    def __init__(self, quality: int = 75, bpda: bool = True):
        super().__init__()
        self.quality = check_int("JPEGCompression", "quality", quality, 1, 100)
        self.bpda = bool(bpda)

    def forward(self, images: Tensor) -> Tensor:
        return jpeg_compress(images, self.quality, self.bpda)

    def extra_repr(self) -> str:
        return f"quality={self.quality}, bpda={self.bpda}"
