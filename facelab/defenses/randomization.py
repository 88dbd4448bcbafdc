"""Randomization (Xie, Wang, Zhang, Ren, Yuille, ICLR 2018): random resizing, then random zero padding.

An ``H x W`` image is resized (nearest neighbour, as the paper) by a random factor ``s`` in
``[1, max_scale)`` to ``round(s H) x round(s W)``, then placed at a random offset on a zero canvas of
``round(max_scale H) x round(max_scale W)``. The paper's ImageNet setting, 299 -> [299, 331) -> 331,
is ``max_scale = 331 / 299``. ``max_scale = 1`` is the identity. One draw per image and per call;
differentiable for a fixed draw (attack it with EOT over draws). Victims that take crops of any size
(every :class:`~facelab.models.base.FaceClassifier` / ``FaceEmbedder``) accept the larger output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facelab.defenses.base import Defense, check_float
from facelab.models.base import check_images

__all__ = ["random_resize_pad", "RandomResizePad"]


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """A uniform integer in ``lo..hi`` (inclusive)."""
    return lo + int(torch.randint(0, hi - lo + 1, (), generator=generator))


def random_resize_pad(images: Tensor, max_scale: float = 331 / 299,
                      generator: torch.Generator | None = None) -> Tensor:
    """``images`` [B,3,H,W] in [0,1] -> [B,3,round(max_scale H),round(max_scale W)], each resized and padded
    at random (``max_scale`` in [1, 4])."""
    max_scale = check_float("random_resize_pad", "max_scale", max_scale, 1.0, 4.0)
    images = check_images(images)
    b, _, h, w = images.shape
    out_h, out_w = round(max_scale * h), round(max_scale * w)
    if (out_h, out_w) == (h, w):
        return images
    out = []
    for i in range(b):
        # s in [1, max_scale): the new side in [h, out_h) (the paper's rnd in [299, 331)), same factor for width
        new_h = _randint(h, max(h, out_h - 1), generator)
        new_w = min(out_w, max(w, round(new_h * w / h)))
        x = F.interpolate(images[i : i + 1], size=(new_h, new_w), mode="nearest")
        top, left = _randint(0, out_h - new_h, generator), _randint(0, out_w - new_w, generator)
        out.append(F.pad(x, (left, out_w - new_w - left, top, out_h - new_h - top)))
    return torch.cat(out, 0)


class RandomResizePad(Defense):
    """Module form of :func:`random_resize_pad`; ``seed`` makes its sequence of draws reproducible."""

    random = True

    def __init__(self, max_scale: float = 331 / 299, seed: int | None = None):
        super().__init__()
        self.max_scale = check_float("RandomResizePad", "max_scale", max_scale, 1.0, 4.0)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def forward(self, images: Tensor) -> Tensor:
        return random_resize_pad(images, self.max_scale, self.generator)

    def extra_repr(self) -> str:
        return f"max_scale={self.max_scale:.4g}, seed={self.seed}"
