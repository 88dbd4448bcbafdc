"""Universal-patch geometry (Yang et al., §3.2 and §3.3) and differentiable pasting.

For a ground-truth box B_i = (x, y, w, h) the square patch P is resized to side
``s = α·sqrt(w·h)`` and centred, relative to the box's top-left corner, at

* ``"top"``    (w/2, s/2)        -- the paper's default, α = 0.5 (on the forehead);
* ``"center"`` (w/2, h/2);
* ``"bottom"`` (w/2, h − s/2).

Pasting is an inverse affine warp evaluated with ``grid_sample`` on the integer window that
covers the patch box, composited with an analytic pixel-coverage mask, so it is exact to
sub-pixel positions and differentiable w.r.t. the patch. Patches smaller than the patch
texture are first downsampled with an antialiased resize (no aliasing when 128 px shrink to 20).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOCATIONS",
    "EOT",
    "patch_boxes",
    "paste_patch",
    "init_patch",
    "partial_mask",
]

LOCATIONS = ("top", "center", "bottom")


def patch_boxes(gt_boxes: Tensor, alpha: float = 0.5, location: str = "top") -> Tensor:
    """Patch boxes [K,4] (x1 y1 x2 y2, pixels) for GT boxes [K,4] (x1 y1 x2 y2), §3.2/§3.3."""
    if location not in LOCATIONS:
        raise ValueError(f"location: expected one of {LOCATIONS}, got {location!r}")
    if not 0 < float(alpha) <= 1:
        raise ValueError(f"alpha: expected 0 < alpha <= 1 (patch side = alpha*sqrt(w*h)), got {alpha}")
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    x1, y1, x2, y2 = gt_boxes.unbind(-1)
    w, h = (x2 - x1).clamp(min=0), (y2 - y1).clamp(min=0)
    s = alpha * torch.sqrt(w * h)
    cx = x1 + w / 2
    if location == "top":
        cy = y1 + s / 2
    elif location == "center":
        cy = y1 + h / 2
    else:
        cy = y1 + h - s / 2
    return torch.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], dim=-1)


@dataclasses.dataclass
class EOT:
    """Expectation over transformation for the pasted patch (goes beyond the paper, off by default).

    Each paste draws a rotation in ±``rotation`` degrees, a side scale in 1 ± ``scale`` and a
    brightness factor in 1 ± ``brightness`` (uniform).
    """

    rotation: float = 10.0
    scale: float = 0.1
    brightness: float = 0.1

    def sample(self, generator: torch.Generator | None = None) -> tuple[float, float, float]:
        u = torch.rand(3, generator=generator) * 2 - 1
        return (float(u[0]) * self.rotation, 1.0 + float(u[1]) * self.scale, 1.0 + float(u[2]) * self.brightness)


def _resized_texture(patch: Tensor, side: float) -> Tensor:
    """Antialiased downsample of the patch texture to about the pasted size (never upsample)."""
    h, w = patch.shape[-2:]
    target = max(2, int(math.ceil(side)))
    if target >= min(h, w):
        return patch
    return F.interpolate(patch[None], size=(target, target), mode="bilinear", antialias=True, align_corners=False)[0]


def _blend_window(image: Tensor, patch: Tensor, box: Tensor, mask: Tensor | None, rotation: float = 0.0,
                  brightness: float = 1.0) -> tuple[tuple[int, int, int, int], Tensor] | None:
    """The pixels of ``image`` [3,H,W] that pasting ``patch`` [3,p,p] at ``box`` (x1 y1 x2 y2, may be fractional)
    changes: ``((r0, r1, c0, c1), window [3, r1-r0, c1-c0])``, or None when the box covers no pixel."""
    H, W = image.shape[-2:]
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
    if hw <= 0 or hh <= 0:
        return None
    r = math.hypot(hw, hh) if rotation else max(hw, hh)
    c0, c1 = max(0, math.floor(cx - r)), min(W, math.ceil(cx + r))
    r0, r1 = max(0, math.floor(cy - r)), min(H, math.ceil(cy + r))
    if c0 >= c1 or r0 >= r1:
        return None
    tex = _resized_texture(patch, 2 * max(hw, hh))
    if mask is not None:
        tex = torch.cat([tex, _resized_texture(mask.to(tex), 2 * max(hw, hh))], 0)
    dev, dt = image.device, image.dtype
    ys = torch.arange(r0, r1, device=dev, dtype=dt) + 0.5 - cy
    xs = torch.arange(c0, c1, device=dev, dtype=dt) + 0.5 - cx
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    if rotation:
        t = math.radians(rotation)
        xx, yy = math.cos(t) * xx + math.sin(t) * yy, -math.sin(t) * xx + math.cos(t) * yy
    # distance (px) from each pixel centre to the patch's edges -> coverage in [0,1]
    cover = ((hw - xx.abs()) + 0.5).clamp(0, 1) * ((hh - yy.abs()) + 0.5).clamp(0, 1)
    grid = torch.stack([xx / hw, yy / hh], dim=-1)[None]
    sampled = F.grid_sample(tex[None].to(dt), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    rgb = sampled[:3] * brightness
    if mask is not None:
        cover = cover * sampled[3]
    rgb = rgb.clamp(0, 1)
    window = image[:, r0:r1, c0:c1]
    return (r0, r1, c0, c1), window * (1 - cover) + rgb * cover


def _paste_one(image: Tensor, patch: Tensor, box: Tensor, mask: Tensor | None,
               rotation: float = 0.0, brightness: float = 1.0) -> Tensor:
    """``image`` with ``patch`` pasted at ``box`` (a new tensor; ``image`` itself when nothing is covered)."""
    blended = _blend_window(image, patch, box, mask, rotation, brightness)
    if blended is None:
        return image
    (r0, r1, c0, c1), window = blended
    out = image.clone()
    out[:, r0:r1, c0:c1] = window
    return out


def _disjoint(rects: Sequence[tuple[int, int, int, int]]) -> bool:
    """True when no two pixel rectangles (r0, r1, c0, c1) share a pixel."""
    if len(rects) < 2:
        return True
    r = torch.tensor(rects)
    rows = (r[:, None, 0] < r[None, :, 1]) & (r[None, :, 0] < r[:, None, 1])
    cols = (r[:, None, 2] < r[None, :, 3]) & (r[None, :, 2] < r[:, None, 3])
    return not bool((rows & cols).triu(1).any())


def paste_patch(image: Tensor, patch: Tensor, gt_boxes: Tensor, alpha: float = 0.5, location: str = "top",
                mask: Tensor | None = None, eot: EOT | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """``image`` [3,H,W] with ``patch`` [3,p,p] pasted on every GT box [K,4] (differentiable in both).

    ``mask`` [1,p,p] in [0,1] keeps part of the patch (Appendix-A style partial patches, see
    :func:`partial_mask`); ``eot`` jitters each paste (:class:`EOT`).
    """
    if patch.dim() != 3 or patch.shape[0] != 3:
        raise ValueError(f"patch: expected [3,p,p] RGB in [0,1], got {tuple(patch.shape)}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected [3,H,W], got {tuple(image.shape)}")
    boxes = patch_boxes(gt_boxes, alpha, location)
    patch = patch.to(image)
    pastes = []
    for box in boxes:
        rot, sc, br = eot.sample(generator) if eot is not None else (0.0, 1.0, 1.0)
        if sc != 1.0:
            c = (box[:2] + box[2:]) / 2
            half = (box[2:] - box[:2]) / 2 * sc
            box = torch.cat([c - half, c + half])
        pastes.append((box, rot, br))
    windows = [w for w in (_blend_window(image, patch, b, mask, rot, br) for b, rot, br in pastes) if w is not None]
    if not _disjoint([rect for rect, _ in windows]):
        out = image  # overlapping patches: later pastes cover earlier ones, in box order
        for box, rot, br in pastes:
            out = _paste_one(out, patch, box, mask, rot, br)
        return out
    if not windows:
        return image
    # Disjoint windows (the usual case): the same pixel values written with one out-of-place index_copy, whose
    # backward is one masked copy of the gradient; pasting face by face cost a full-image clone per face.
    H, W = image.shape[-2:]
    flat_idx = torch.cat([(torch.arange(r0, r1)[:, None] * W + torch.arange(c0, c1)[None]).reshape(-1)
                          for (r0, r1, c0, c1), _ in windows]).to(image.device)
    values = torch.cat([w.reshape(image.shape[0], -1) for _, w in windows], 1)
    return image.reshape(image.shape[0], H * W).index_copy(1, flat_idx, values).reshape(image.shape)


def init_patch(kind: str | Tensor = "noise", size: int = 128, image: Tensor | None = None,
               box: Sequence[float] | Tensor | None = None, seed: int = 0) -> Tensor:
    """An initial patch [3,size,size] in [0,1] (§3.3 / Fig. 2).

    ``kind``: ``"noise"`` (uniform), ``"gray"``, or ``"image"`` (``image`` [3,H,W] resized; with
    ``box`` x1 y1 x2 y2 the crop of that box -- a face crop for the FaceA/B/C rows of Table 1);
    a tensor [3,h,w] is resized directly.
    """
    if isinstance(kind, Tensor):
        image, kind = kind, "image"
    if kind == "noise":
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand(3, size, size, generator=g)
    if kind == "gray":
        return torch.full((3, size, size), 0.5)
    if kind == "image":
        if image is None:
            raise ValueError("init_patch: kind='image' needs image=[3,H,W]")
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"init_patch: image must be [3,H,W], got {tuple(image.shape)}")
        if box is not None:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            H, W = image.shape[-2:]
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(W, x2), min(H, y2)
            if x2 - x1 < 2 or y2 - y1 < 2:
                raise ValueError(f"init_patch: box {list(map(float, box))} is empty inside a {W}x{H} image")
            image = image[:, y1:y2, x1:x2]
        out = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False)[0]
        return out.clamp(0, 1)
    raise ValueError(f"init_patch: kind must be 'noise', 'gray', 'image' or a tensor, got {kind!r}")


def partial_mask(size: int = 128, keep: float = 1.0, side: str = "top") -> Tensor:
    """A [1,size,size] mask keeping the ``keep`` fraction of the patch area on ``side`` (top/bottom/
    left/right); the rest is removed, i.e. the face shows through (Appendix-A style)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep: expected a fraction in (0,1], got {keep}")
    m = torch.zeros(1, size, size)
    n = max(1, int(round(keep * size)))
    if side == "top":
        m[:, :n] = 1
    elif side == "bottom":
        m[:, size - n:] = 1
    elif side == "left":
        m[:, :, :n] = 1
    elif side == "right":
        m[:, :, size - n:] = 1
    else:
        raise ValueError(f"side: expected top/bottom/left/right, got {side!r}")
    return m
