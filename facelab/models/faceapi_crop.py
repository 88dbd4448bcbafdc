"""face-api's face cropping and per-net input preparation, differentiable.

Mirrors @vladmandic/face-api 1.7.15:

* ``extractFaceTensors`` (dom/extractFaceTensors.ts + Box.clipAtImageBorders): the box ``x, y, w, h`` is
  clipped to the image (``x' = max(x, 0)``, ``w' = min(right - x', W - x')``, same for y) and then each of
  ``x', y', w', h'`` is floored separately; boxes with an empty clipped area are rejected.
* ``NetInput.toBatchTensor(size, isCenterInputs=true)``: the crop (pixel values 0..255) is zero-padded to a
  square centred on the minor axis (``ops/padToSquare.ts``: ``Math.round(diff / 2)`` rows/columns after,
  the rest before), then resized with TF's legacy bilinear (``src = dst * in / out``, no half-pixel
  centres, no antialias; :func:`facelab.models.tf_ops.tf_resize_bilinear`) to ``size x size``.
* ``ops/normalize.ts``: ``(x - [122.782, 117.001, 104.298]) / 255`` (shared by all four nets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from facelab.models.base import check_image, check_images
from facelab.models.tf_ops import tf_resize_bilinear

__all__ = [
    "MEAN_RGB",
    "clip_box",
    "crop_face",
    "crop_faces",
    "pad_to_square",
    "centred_padding",
    "to_net_input",
    "normalize",
]

#: face-api's mean RGB (in 0..255 pixel units) subtracted before dividing by 255
MEAN_RGB = (122.782, 117.001, 104.298)


def _js_round(v: float) -> int:
    """JavaScript ``Math.round``: halves round towards +infinity."""
    return math.floor(v + 0.5)


def clip_box(box: Sequence[float] | Tensor, width: int, height: int, name: str = "box") -> tuple[int, int, int, int]:
    """face-api's crop rectangle ``(x, y, w, h)`` (ints) of ``box`` = x1 y1 x2 y2 in an image ``width x height``.

    ``Box.clipAtImageBorders`` followed by ``floor`` of each of x, y, w, h (dom/extractFaceTensors.ts).
    Raises ``ValueError`` when the clipped crop is empty (box outside the image or degenerate).
    """
    vals = [float(v) for v in (box.tolist() if isinstance(box, Tensor) else box)]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name}: expected 4 finite numbers x1 y1 x2 y2, got {vals}")
    x1, y1, x2, y2 = vals
    x, y = max(x1, 0.0), max(y1, 0.0)
    w = min(x1 + (x2 - x1) - x, width - x)
    h = min(y1 + (y2 - y1) - y, height - y)
    x, y, w, h = math.floor(x), math.floor(y), math.floor(w), math.floor(h)
    if w <= 0 or h <= 0:
        raise ValueError(
            f"{name}: box {vals} gives an empty crop (x={x}, y={y}, w={w}, h={h}) in a {width}x{height} image "
            "(box outside the image or zero-sized)"
        )
    return x, y, w, h


def crop_face(
    image: Tensor, box: Sequence[float] | Tensor, name: str = "image"
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Crop ``box`` (x1 y1 x2 y2) from ``image`` [3,H,W] as face-api does; returns ([3,h,w] view, (x, y, w, h))."""
    image = check_image(image, name)
    x, y, w, h = clip_box(box, image.shape[2], image.shape[1])
    return image[:, y : y + h, x : x + w], (x, y, w, h)


def crop_faces(image: Tensor, boxes: Tensor | Sequence[Sequence[float]], name: str = "image") -> list[Tensor]:
    """face-api crops of several ``boxes`` [K,4] (x1 y1 x2 y2) of ``image`` [3,H,W]: a list of [3,h,w] views.

    The face-api nets take this list directly (``net(crops)``); gradients flow back to ``image``.
    """
    return [crop_face(image, box, name)[0] for box in boxes]


def centred_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of :func:`pad_to_square` for a ``height x width`` crop."""
    diff = abs(height - width)
    after = _js_round(diff * 0.5)
    before = diff - after
    if height == width:
        return (0, 0, 0, 0)
    return (before, after, 0, 0) if height > width else (0, 0, before, after)


def pad_to_square(x: Tensor) -> Tensor:
    """Zero-pad [B,C,H,W] to a square, centred on the minor axis like face-api's ``padToSquare(t, true)``.

    ``Math.round(diff / 2)`` rows/columns go after the image and the remaining ``diff - round(diff / 2)``
    before it.
    """
    h, w = x.shape[-2:]
    if h == w:
        return x
    return F.pad(x, centred_padding(h, w))


def normalize(pixels: Tensor) -> Tensor:
    """``(pixels - MEAN_RGB) / 255`` for [B,3,S,S] pixel values in 0..255 (face-api ops/normalize.ts)."""
    mean = torch.tensor(MEAN_RGB, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / 255


def to_net_input(images: Tensor | Sequence[Tensor], size: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """face-api ``toBatchTensor(size, true)`` + normalisation of face crops in [0,1].

    ``images``: [B,3,H,W] or a list of [3,h,w] crops of any sizes. Returns the normalised batch
    [B,3,size,size] and each crop's original (height, width).
    """
    if isinstance(images, Tensor) and images.dim() == 4:
        crops = [check_images(images)]
        dims = [(images.shape[2], images.shape[3])] * images.shape[0]
    elif isinstance(images, Tensor):
        im = check_image(images)
        crops = [im[None]]
        dims = [(im.shape[1], im.shape[2])]
    else:
        if len(images) == 0:
            raise ValueError("images: empty list of face crops")
        crops = [check_image(im, f"images[{i}]")[None] for i, im in enumerate(images)]
        dims = [(c.shape[2], c.shape[3]) for c in crops]
    # pad + resize in one step (the padding is folded into the interpolation weights), on [0,1] values:
    # (255 r - mean) / 255 = r - mean / 255; channels-last for the nets' convolutions
    batch = [tf_resize_bilinear(c, (size, size), pad=centred_padding(c.shape[2], c.shape[3])) for c in crops]
    x = batch[0] if len(batch) == 1 else torch.cat(batch, 0)
    mean = torch.tensor(MEAN_RGB, dtype=torch.float64).div(255).to(dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean).contiguous(memory_format=torch.channels_last), dims
