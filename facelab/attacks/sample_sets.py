"""The four adversarial-sample-set rules and their losses (Yang et al., §3.2 and §4.2).

An adversarial sample AS_i = (A_i, B_i, S_i, P) is an anchor A_i, its ground-truth face B_i, the
face score S_i and the patch P. Each rule below selects, for one image, which anchors enter the
loss; every rule is a function of (anchors [A,4], gt boxes [G,4], patch boxes [G,4], scores [A])
returning a bool mask [A].

* Patch-IoU          IoU(A_i, B_i) > 0.6                                  loss Eq. 1
* Patch-Score        S_i > δ − m                                          loss Eq. 1
* Patch-Score-Focal  S_i > δ − m                                          loss Eq. 2 (γ = 2)
* Patch-Combination  S_i > δ − m and (IoU(A_i,B_i) > λ1 or IoU(A_i,P) > λ2), λ1 = λ2 = 0.3, Eq. 1

The paper *maximises* L_adv (Eq. 1: −1/N Σ log S_i) by gradient ascent; :func:`adversarial_loss`
returns −L_adv so that an optimiser *minimises* it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

__all__ = [
    "METHODS",
    "max_iou",
    "select_patch_iou",
    "select_patch_score",
    "select_patch_combination",
    "select_samples",
    "adversarial_loss",
    "log_scores",
]

METHODS = ("patch_iou", "patch_score", "patch_score_focal", "patch_combination")


def max_iou(anchors: Tensor, boxes: Tensor) -> Tensor:
    """max_j IoU(A_i, boxes_j) per anchor, [A] (0 when there are no boxes)."""
    if boxes.numel() == 0:
        return anchors.new_zeros(anchors.shape[0])
    return box_iou(anchors.float(), boxes.float().reshape(-1, 4)).max(dim=1).values


def select_patch_iou(anchors: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.6,
                     include_best: bool = True) -> Tensor:
    """Patch-IoU (§3.2): anchors with IoU(A_i, B_i) > 0.6, "exactly the same as the selection of positive
    samples" of the detector. As in SSD/RetinaNet/SLN anchor matching, ``include_best`` also makes each
    face's best-IoU anchor positive, so a face whose anchors all fall below the threshold (common for
    detectors with coarse priors, e.g. face-api's SSD) still enters the set."""
    mask = max_iou(anchors, gt_boxes) > iou_threshold
    if include_best and gt_boxes.numel() and anchors.numel():
        mask[box_iou(anchors.float(), gt_boxes.float().reshape(-1, 4)).argmax(dim=0)] = True
    return mask


def select_patch_score(scores: Tensor, score_threshold: float) -> Tensor:
    """Patch-Score / Patch-Score-Focal (§4.2): anchors with S_i > δ − m."""
    return scores > score_threshold


def select_patch_combination(anchors: Tensor, gt_boxes: Tensor, patch_boxes: Tensor, scores: Tensor,
                             score_threshold: float, lambda1: float = 0.3, lambda2: float = 0.3) -> Tensor:
    """Patch-Combination (§4.2): S_i > δ − m and (IoU(A_i, B_i) > λ1 or IoU(A_i, P) > λ2)."""
    near = (max_iou(anchors, gt_boxes) > lambda1) | (max_iou(anchors, patch_boxes) > lambda2)
    return (scores > score_threshold) & near


def select_samples(method: str, anchors: Tensor, gt_boxes: Tensor, patch_boxes: Tensor, scores: Tensor, *,
                   score_threshold: float = 0.5, iou_threshold: float = 0.6,
                   lambda1: float = 0.3, lambda2: float = 0.3, include_best: bool = True) -> Tensor:
    """The adversarial sample set of ``method`` (one of :data:`METHODS`) as a bool mask [A]."""
    scores = scores.detach()
    if method == "patch_iou":
        return select_patch_iou(anchors, gt_boxes, iou_threshold, include_best)
    if method in ("patch_score", "patch_score_focal"):
        return select_patch_score(scores, score_threshold)
    if method == "patch_combination":
        return select_patch_combination(anchors, gt_boxes, patch_boxes, scores, score_threshold, lambda1, lambda2)
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def log_scores(scores: Tensor, logits: Tensor | None = None) -> Tensor:
    """log S_i, from the face logits when the detector exposes them (numerically stable)."""
    if logits is not None and logits.shape == scores.shape:
        return F.logsigmoid(logits)
    return torch.log(scores.clamp_min(1e-12))


def adversarial_loss(method: str, scores: Tensor, mask: Tensor, logits: Tensor | None = None,
                     gamma: float = 2.0, literal_focal: bool = False) -> tuple[Tensor, Tensor]:
    """(sum of −L_adv terms over the selected samples, N) for one or more images.

    Eq. 1: −L_adv = 1/N Σ log S_i. Eq. 2 (Patch-Score-Focal): −L_adv = 1/N Σ S_i^γ log S_i.
    Taken literally, Eq. 2's term −S^γ log S peaks at S = e^{−1/γ} (≈ 0.61 for γ = 2), so gradient
    ascent would *raise* scores in (δ − m, 0.61); the paper's stated intent is a modulating weight
    that favours high-score samples, so by default S_i^γ is a (detached) weight. ``literal_focal``
    keeps the gradient through S_i^γ. Returns the sum (not yet divided by N) so batches can be pooled.
    """
    logs = log_scores(scores, logits)[mask]
    n = mask.sum()
    if method == "patch_score_focal":
        w = scores[mask] ** gamma
        if not literal_focal:
            w = w.detach()
        return (w * logs).sum(), n
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return logs.sum(), n


def focal_peak(gamma: float) -> float:
    """Where the literal Eq.-2 term −S^γ log S is maximal: S = exp(−1/γ)."""
    return math.exp(-1.0 / gamma)
