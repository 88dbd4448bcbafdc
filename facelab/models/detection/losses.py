"""Losses and sample selection of the trainable detectors.

* :func:`iou_ls_loss` -- patch paper §3.1, L_reg = 1/N_reg Σ ‖1 − IoU(A_i, B_j)‖², computed on the
  regressed box of each positive anchor against its matched face;
* :func:`group_sample` -- the group sampling of the paper's reference [26] (Ming et al., "Group
  sampling for scale invariant face detection", CVPR 2019). What we implement: anchors are grouped by
  their scale (one group per anchor size: 16/32/64/128 on SLN's P2); in every image each group
  contributes the *same* number of training samples ``per_group``, of which at most
  ``pos_fraction`` (default 1/4, i.e. positives:negatives = 1:3) are positives drawn uniformly at random
  from that group's positives, the rest negatives drawn uniformly at random from the group's
  negatives. Groups (scales) therefore weigh equally in L_cls however many faces of that scale an
  image has -- the scale-balance idea of [26]. [26]'s own sample counts are not given in the patch
  paper; ``per_group`` is our parameter;
* :func:`hard_negative_mining` -- SSD's 3:1 hard negative selection;
* :func:`balanced_sample` -- Faster R-CNN's second stage fg/bg sampling (like torchvision's
  ``BalancedPositiveNegativeSampler``, but drawing from an explicit generator so training is
  reproducible after a resume).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pairwise_iou", "iou_ls_loss", "group_sample", "hard_negative_mining", "balanced_sample"]


def pairwise_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Element-wise IoU of two box sets [N,4] x1y1x2y2 (differentiable)."""
    if a.shape != b.shape or a.shape[-1] != 4:
        raise ValueError(f"pairwise_iou: need two [N,4] tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    return inter / (area_a + area_b - inter + eps)


def iou_ls_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """IoU least-squares loss Σ (1 − IoU(pred_i, target_i))² / N (0 for N = 0)."""
    per = (1.0 - pairwise_iou(pred.float(), target.float())) ** 2
    if reduction == "sum":
        return per.sum()
    if reduction == "none":
        return per
    return per.sum() / max(1, per.numel())


def _pick(idx: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    if k >= idx.numel():
        return idx
    perm = torch.randperm(idx.numel(), generator=generator)[:k].to(idx.device)
    return idx[perm]


def group_sample(labels: Tensor, groups: Tensor, per_group: int = 64, pos_fraction: float = 0.25,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Group sampling (see module doc): indices of sampled positives and negatives of one image."""
    pos_out, neg_out = [], []
    max_pos = int(per_group * pos_fraction)
    for g in torch.unique(groups).tolist():
        in_g = groups == g
        pos = torch.nonzero(in_g & (labels == 1)).flatten()
        neg = torch.nonzero(in_g & (labels == 0)).flatten()
        p = _pick(pos, max_pos, generator)
        pos_out.append(p)
        neg_out.append(_pick(neg, per_group - p.numel(), generator))
    return torch.cat(pos_out), torch.cat(neg_out)


def hard_negative_mining(neg_loss: Tensor, labels: Tensor, ratio: int = 3, min_neg: int = 8) -> Tensor:
    """SSD: the indices of the ``ratio``·#positives negatives with the highest loss."""
    neg = torch.nonzero(labels == 0).flatten()
    k = min(neg.numel(), max(ratio * int((labels == 1).sum()), min_neg))
    order = neg_loss[neg].detach().argsort(descending=True)[:k]
    return neg[order]


def balanced_sample(labels: Tensor, batch: int = 128, pos_fraction: float = 0.25,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Up to ``batch·pos_fraction`` positives and the rest negatives, uniformly at random."""
    pos = _pick(torch.nonzero(labels == 1).flatten(), int(batch * pos_fraction), generator)
    neg = _pick(torch.nonzero(labels == 0).flatten(), batch - pos.numel(), generator)
    return pos, neg
