"""Anchor-to-face matching (patch paper §3.1: IoU(A_i, B_j) > 0.6 positive, < 0.4 negative)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["match_anchors", "POSITIVE", "NEGATIVE", "IGNORE"]

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def match_anchors(anchors: Tensor, gt_boxes: Tensor, pos_iou: float = 0.6, neg_iou: float = 0.4,
                  best_anchor_per_gt: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Label every anchor positive (1), negative (0) or ignored (-1).

    An anchor is positive when its best IoU with a face is > ``pos_iou``, negative when < ``neg_iou``,
    ignored in between. With ``best_anchor_per_gt`` (the usual low-quality rule of anchor detectors,
    which keeps faces smaller than any anchor trainable) each face's highest-IoU anchor(s) are also
    made positive for that face, when that IoU is > 0.

    Returns (labels [A] long, matched_gt [A] long index into gt_boxes (0 where no face), best_iou [A]).
    """
    if anchors.dim() != 2 or anchors.shape[-1] != 4:
        raise ValueError(f"match_anchors: anchors must be [A,4], got {tuple(anchors.shape)}")
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"match_anchors: gt_boxes must be [G,4] x1y1x2y2, got {tuple(gt_boxes.shape)}")
    n = anchors.shape[0]
    labels = torch.full((n,), IGNORE, dtype=torch.long, device=anchors.device)
    matched = torch.zeros(n, dtype=torch.long, device=anchors.device)
    if gt_boxes.shape[0] == 0:
        labels.fill_(NEGATIVE)
        return labels, matched, torch.zeros(n, device=anchors.device)
    iou = box_iou(gt_boxes.float(), anchors.float())  # [G, A]
    best_iou, matched = iou.max(dim=0)
    labels[best_iou < neg_iou] = NEGATIVE
    labels[best_iou > pos_iou] = POSITIVE
    if best_anchor_per_gt:
        gt_best = iou.max(dim=1, keepdim=True).values
        g, a = torch.nonzero((iou == gt_best) & (gt_best > 0), as_tuple=True)
        labels[a] = POSITIVE
        matched[a] = g
    return labels, matched, best_iou
