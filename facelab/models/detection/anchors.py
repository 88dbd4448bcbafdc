"""Anchor tiling for the trainable detectors (patch paper §3.1: SLN tiles anchors of scales
{16, 32, 64, 128}, aspect ratio 1, with stride 4 on P2).

Convention: the anchor of feature cell (y, x) is centred at ((x + 0.5)·stride, (y + 0.5)·stride) in
input pixels, boxes are x1 y1 x2 y2, and the flattened order is (y, x, anchor) -- the order in which
a head's ``[B, A·C, H, W]`` output becomes ``[B, H·W·A, C]`` (torchvision's SSD/RetinaNet heads use
the same order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["cell_anchors", "grid_anchors", "multi_level_anchors"]


def cell_anchors(sizes: Sequence[float], ratios: Sequence[float] = (1.0,)) -> Tensor:
    """Zero-centred anchors [len(sizes)·len(ratios), 4] (size-major); ratio = height / width, area size²."""
    out = []
    for s in sizes:
        for r in ratios:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(feat_h: int, feat_w: int, stride: float, sizes: Sequence[float],
                 ratios: Sequence[float] = (1.0,), device: torch.device | str = "cpu") -> Tensor:
    """All anchors [feat_h·feat_w·K, 4] of one feature map, ordered (y, x, k)."""
    if feat_h <= 0 or feat_w <= 0 or stride <= 0:
        raise ValueError(f"grid_anchors: need positive feat_h, feat_w, stride; got {feat_h}, {feat_w}, {stride}")
    base = cell_anchors(sizes, ratios).to(device)
    cy = (torch.arange(feat_h, device=device, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(feat_w, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(cy, cx, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def multi_level_anchors(shapes: Sequence[tuple[int, int]], strides: Sequence[float],
                        sizes: Sequence[Sequence[float]], ratios: Sequence[float] = (1.0,),
                        device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Anchors of several levels concatenated level by level, plus a group id per anchor.

    Group ids number the distinct anchor sizes (level-major, size-minor) so that the group sampling
    of SLN can balance them. Returns (anchors [A,4], groups [A] long).
    """
    anchors, groups, g0 = [], [], 0
    for (h, w), s, sz in zip(shapes, strides, sizes, strict=True):
        a = grid_anchors(h, w, s, sz, ratios, device)
        k = len(sz) * len(ratios)
        gid = (torch.arange(k, device=device) // len(ratios)) + g0
        anchors.append(a)
        groups.append(gid.repeat(h * w))
        g0 += len(sz)
    return torch.cat(anchors), torch.cat(groups)
