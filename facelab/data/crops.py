"""Face crops, mosaics and downscaled photos as detection samples.

A :class:`Sample` is one image for a detector with its ground truth: boxes ``[N,4]`` (x1y1x2y2), ignore flags
``[N]`` (faces cut by a crop border are *ignored* by the metrics) and one *unit* label per box. Units say
which boxes belong together for the uncertainty of a metric: the face a crop was cut around (all crops and
augmented views of one face share it), or the photo for a full image. :mod:`facelab.metrics.uncertainty`
resamples units, not boxes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Sample", "crop_resize", "crops_around_faces", "face_crops", "view_crops", "mosaic", "downscale",
           "wider_samples", "units_of"]


class Sample(NamedTuple):
    """One image and its ground truth."""

    image: Tensor            # [3, H, W] RGB in [0, 1]
    boxes: Tensor            # [N, 4] x1 y1 x2 y2
    ignore: Tensor           # [N] bool: True = not counted by the metrics
    units: tuple[str, ...]   # [N] the sampling unit of each box (a face id or a photo id)


def crop_resize(image: Tensor, boxes: Tensor, x0: float, y0: float, side: float, out: int,
                min_visible: float = 0.6) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Square crop ``[x0, x0+side)²`` (zero padded outside the photo) resized to out×out.

    Returns ``(crop, boxes, ignore, kept)``: boxes moved and clipped, the faces with less than
    ``min_visible`` of their area inside flagged ignored, ``kept`` the bool mask of the input boxes that
    are (partly, > 5 %) inside at all.
    """
    H, W = image.shape[-2:]
    s = out / side
    theta = torch.tensor([[side / W, 0, (2 * x0 + side) / W - 1], [0, side / H, (2 * y0 + side) / H - 1]],
                         dtype=image.dtype)
    src = image
    if side / out > 1.5:  # antialias: shrink the photo first
        src = F.interpolate(image[None], scale_factor=out / side, mode="bilinear", antialias=True,
                            align_corners=False)[0]
    grid = F.affine_grid(theta[None], [1, 3, out, out], align_corners=False)
    crop = F.grid_sample(src[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].clamp(0, 1)
    b = (boxes - torch.tensor([x0, y0, x0, y0])) * s
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = b.clamp(0, out)
    inside = ((c[:, 2] - c[:, 0]).clamp(min=0) * (c[:, 3] - c[:, 1]).clamp(min=0)) / area.clamp(min=1e-6)
    kept = inside > 0.05
    return crop, c[kept], (inside < min_visible)[kept], kept


def crops_around_faces(image: Tensor, boxes: Tensor, face_ids: Sequence[str], out: int, context: float,
                       generator: torch.Generator | None = None, scale_jitter: float = 0.0,
                       shift_jitter: float = 0.0) -> list[Sample]:
    """One out×out crop per face of one photo, the face centred with a side of ``context``·sqrt(area).

    With ``generator``: context × U(1 ± ``scale_jitter``), centre shifted by U(± ``shift_jitter``)·side.
    Every box of a crop gets the unit of the face the crop is cut around.
    """
    items = []
    for box, fid in zip(boxes, face_ids):
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        side = context * math.sqrt(w * h)
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        if generator is not None:
            u = torch.rand(3, generator=generator).tolist()
            side *= 1 + scale_jitter * (2 * u[0] - 1)
            cx += shift_jitter * side * (2 * u[1] - 1)
            cy += shift_jitter * side * (2 * u[2] - 1)
        crop, b, ign, _ = crop_resize(image, boxes, cx - side / 2, cy - side / 2, side, out)
        items.append(Sample(crop, b, ign, (fid,) * len(b)))
    return items


def face_crops(photo_ids: Sequence[str], out: int = 160, context: float = 2.2) -> list[Sample]:
    """One out×out crop per face of the bundled photos ``photo_ids`` (see :func:`crops_around_faces`)."""
    from facelab.data.faces import bundled_faces

    fs = bundled_faces()
    items: list[Sample] = []
    for pid in photo_ids:
        p = fs.photo(pid)
        items += crops_around_faces(p.image(), p.boxes, p.face_ids, out, context)
    return items


def view_crops(photo_ids: Sequence[str], views_per_photo: int, seed: int, out: int = 160, context: float = 2.2,
               scale_jitter: float = 0.2, shift_jitter: float = 0.1, max_side: int = 640) -> list[Sample]:
    """Face crops of ``views_per_photo`` seeded augmented views of each bundled photo in ``photo_ids``.

    Views come from :meth:`facelab.data.faces.FaceSet.views` (flip, crop keeping every face, rescale,
    colour jitter; photos first downscaled to ``max_side``); each face is then cropped as in
    :func:`face_crops` with a seeded jitter of the context (× U(1 ± ``scale_jitter``)) and of the centre
    (± ``shift_jitter``·side). Same ``seed`` -> same crops. These are new *instances* of the same faces
    (same units), not new faces.
    """
    from facelab.data.faces import bundled_faces

    if views_per_photo <= 0 or not photo_ids:
        return []
    g = torch.Generator().manual_seed(int(seed) + 7919)
    items: list[Sample] = []
    for v in bundled_faces().views(views_per_photo * len(photo_ids), seed, photo_ids=photo_ids, max_side=max_side):
        items += crops_around_faces(v.image.clamp(0, 1), v.boxes, v.face_ids, out, context, g, scale_jitter,
                                    shift_jitter)
    return items


def mosaic(items: Sequence[Sample], grid: int = 4, fill_with_repeats: bool = False) -> list[Sample]:
    """Tile equal-size crops into grid×grid mosaics (boxes shifted, ignore flags and units kept).

    A compute device for the CPU run: face-api's SSD resizes every input to 512×512, so one pass over a
    4×4 mosaic of 128-px face crops scores 16 faces for the price of one. Empty tiles are mid-gray, or
    (``fill_with_repeats``, for training) filled by cycling through the crops again.
    """
    if not items:
        return []
    c = items[0].image.shape[-1]
    per = grid * grid
    out = []
    for m in range(math.ceil(len(items) / per)):
        canvas = torch.full((3, grid * c, grid * c), 0.5)
        boxes, ign, units = [], [], []
        for t in range(per):
            k = m * per + t
            if k >= len(items):
                if not fill_with_repeats:
                    continue
                k %= len(items)
            it = items[k]
            r, q = divmod(t, grid)
            canvas[:, r * c:(r + 1) * c, q * c:(q + 1) * c] = it.image
            boxes.append(it.boxes + torch.tensor([q * c, r * c, q * c, r * c], dtype=it.boxes.dtype))
            ign.append(it.ignore)
            units += it.units
        out.append(Sample(canvas, torch.cat(boxes), torch.cat(ign), tuple(units)))
    return out


def downscale(img: Tensor, boxes: Tensor, max_side: int) -> tuple[Tensor, Tensor]:
    """``img`` shrunk (antialiased) so its longest side is at most ``max_side``, boxes scaled alike."""
    s = min(1.0, max_side / max(img.shape[-2:]))
    if s < 1:
        img = F.interpolate(img[None], scale_factor=s, mode="bilinear", antialias=True, align_corners=False)[0]
        boxes = boxes * s
    return img.clamp(0, 1), boxes


def wider_samples(root: str, split: str, max_images: int | None, max_side: int) -> list[Sample]:
    """WIDER FACE items downscaled to ``max_side``; faces flagged invalid (or < 1 px) are ignored; the
    unit of every face is its image."""
    from facelab.data.wider import WiderFace

    ds = WiderFace(root, split)
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    out = []
    for i in range(n):
        img, boxes, info = ds[i]
        img, boxes = downscale(img, boxes, max_side)
        ign = info["invalid"].bool() | ((boxes[:, 2] - boxes[:, 0]) < 1) | ((boxes[:, 3] - boxes[:, 1]) < 1)
        out.append(Sample(img, boxes, ign, (f"{split}/{i}",) * len(boxes)))
    return out


def units_of(items: Iterable[Sample]) -> list[str]:
    """The distinct units of ``items`` in order of first appearance."""
    return list(dict.fromkeys(u for it in items for u in it.units))
