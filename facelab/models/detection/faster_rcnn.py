"""Faster R-CNN [29] for faces as the patch paper builds it (§3.2 "Detection frameworks"): SLN is the
region proposal network; RoIAlign [13] (``torchvision.ops.roi_align``, 7×7, on P2) pools each proposal,
and a second stage (torchvision's ``TwoMLPHead`` + ``FastRCNNPredictor``) re-classifies (softmax face
score) and regresses it.

Proposals: per image the SLN boxes are ranked by SLN score, ``pre_nms`` kept, NMS at ``rpn_nms_iou``,
then exactly ``num_proposals`` kept (topped up with the next best boxes when NMS leaves fewer) so the
dense output has a fixed size [B, R, 4]. Proposals are detached (as in Faster R-CNN); the second-stage
scores stay differentiable w.r.t. the input pixels through the RoI features.

Training: L = L_SLN (the RPN, §3.1 loss) + second-stage L_cls^p + L_cls^n + L_reg, where proposals
(plus the ground-truth boxes) with IoU >= 0.5 are foreground, < 0.5 background, 128 sampled per image at
most 1/4 foreground, and L_reg is the IoU least-squares loss of the refined boxes.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import nms, roi_align

from facelab.models.base import DenseOutput, FaceDetector, check_images
from facelab.models.detection.losses import balanced_sample, iou_ls_loss
from facelab.models.detection.matching import match_anchors
from facelab.models.detection.sln import SLN

__all__ = ["FasterRCNNFace"]


class FasterRCNNFace(FaceDetector):
    """Two-stage face detector: SLN proposals -> RoIAlign -> face classifier/regressor."""

    def __init__(self, backbone: str = "resnet18", backbone_weights: str | os.PathLike | None = None,
                 num_proposals: int = 300, pre_nms: int = 2000, rpn_nms_iou: float = 0.7,
                 roi_size: int = 7, representation: int = 1024, roi_batch: int = 128, **sln_kwargs) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.rpn = SLN(backbone, backbone_weights, **sln_kwargs)
        self.num_proposals, self.pre_nms, self.rpn_nms_iou = num_proposals, pre_nms, rpn_nms_iou
        self.roi_size, self.roi_batch = roi_size, roi_batch
        c = self.rpn.fpn.smooth.out_channels
        self.box_head = TwoMLPHead(c * roi_size * roi_size, representation)
        self.predictor = FastRCNNPredictor(representation, 2)
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))

    @torch.no_grad()
    def _select(self, boxes: Tensor, scores: Tensor, h: int, w: int) -> Tensor:
        """Fixed-size proposal set [R,4] of one image (clipped to the image)."""
        boxes = boxes.float().clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        order = scores.float().argsort(descending=True)[: self.pre_nms]
        keep = order[nms(boxes[order], scores[order].float(), self.rpn_nms_iou)][: self.num_proposals]
        if keep.numel() < self.num_proposals:
            rest = order[~torch.isin(order, keep)][: self.num_proposals - keep.numel()]
            keep = torch.cat([keep, rest])
        if keep.numel() < self.num_proposals:  # fewer anchors than proposals: repeat
            keep = keep.repeat((self.num_proposals + keep.numel() - 1) // keep.numel())[: self.num_proposals]
        return boxes[keep]

    def _second_stage(self, p2: Tensor, proposals: list[Tensor]) -> tuple[Tensor, Tensor]:
        feats = roi_align(p2, proposals, self.roi_size, spatial_scale=1.0 / self.rpn.stride, sampling_ratio=2,
                          aligned=True)
        logits, deltas = self.predictor(self.box_head(feats))
        return logits.float(), deltas[:, 4:].float()  # class-1 (face) deltas

    def _stage_one(self, images: Tensor):
        r = self.rpn.raw(images)
        boxes = self.rpn.decode(r.deltas, r.anchors)
        scores, _ = self.rpn.scores_and_logit(r.logits)
        h, w = images.shape[-2:]
        props = [self._select(boxes[b].detach(), scores[b].detach(), h, w) for b in range(images.shape[0])]
        return r, props

    def dense(self, images: Tensor) -> DenseOutput:
        check_images(images)
        r, props = self._stage_one(images)
        logits, deltas = self._second_stage(r.features["p2"], props)
        p = torch.cat(props)
        boxes = self.box_coder.decode_single(deltas, p)
        b = images.shape[0]
        return DenseOutput(p.view(b, -1, 4), boxes.view(b, -1, 4), logits.softmax(-1)[:, 1].view(b, -1),
                           (logits[:, 1] - logits[:, 0]).view(b, -1))

    def compute_loss(self, images: Tensor, targets: list[Tensor],
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """RPN (SLN) loss + second-stage loss (see module doc)."""
        if len(targets) != images.shape[0]:
            raise ValueError(f"compute_loss: {images.shape[0]} images but {len(targets)} target box sets")
        r, props = self._stage_one(images)
        rpn = self.rpn.loss_from_raw(r, targets, generator)
        rois, labels, gts = [], [], []
        for prop, gt in zip(props, targets):
            gt = gt.to(prop.device, torch.float32).reshape(-1, 4)
            cand = torch.cat([prop, gt])
            _, matched, best = match_anchors(cand, gt, 0.5, 0.5, best_anchor_per_gt=False)
            lab = (best >= 0.5).long()
            pos, neg = balanced_sample(lab, self.roi_batch, 0.25, generator)
            idx = torch.cat([pos, neg])
            rois.append(cand[idx])
            labels.append(lab[idx].clamp(min=0))
            gts.append(gt[matched[idx]] if gt.shape[0] else cand[idx])
        logits, deltas = self._second_stage(r.features["p2"], rois)
        labels_t, gts_t, rois_t = torch.cat(labels), torch.cat(gts), torch.cat(rois)
        ce = F.cross_entropy(logits, labels_t, reduction="none")
        pos = labels_t == 1
        boxes = self.box_coder.decode_single(deltas, rois_t)
        out = {f"rpn_{k}": v for k, v in rpn.items() if k != "loss"}
        out["cls_pos"] = ce[pos].sum() / max(1, int(pos.sum()))
        out["cls_neg"] = ce[~pos].sum() / max(1, int((~pos).sum()))
        out["reg"] = iou_ls_loss(boxes[pos], gts_t[pos]) if pos.any() else boxes.sum() * 0
        out["loss"] = rpn["loss"] + out["cls_pos"] + out["cls_neg"] + out["reg"]
        return out

