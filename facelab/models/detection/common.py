"""Shared parts of the trainable detectors: ResNet backbones (torchvision builders, ``weights=None``),
input preprocessing, and :class:`AnchorDetector`, a :class:`~facelab.models.base.FaceDetector` whose
dense output is (anchors, decoded boxes, face scores) and which computes its own training loss.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection._utils import BoxCoder

from facelab.models.base import DenseOutput, FaceDetector, check_images
from facelab.models.detection.losses import group_sample, hard_negative_mining, iou_ls_loss
from facelab.models.detection.matching import match_anchors

__all__ = ["BACKBONES", "build_backbone", "AnchorDetector", "RawOutput"]

#: backbone name -> (torchvision builder, channels of C2..C5)
BACKBONES: dict[str, tuple[Callable[..., nn.Module], list[int]]] = {
    "resnet18": (torchvision.models.resnet18, [64, 128, 256, 512]),
    "resnet34": (torchvision.models.resnet34, [64, 128, 256, 512]),
    "resnet50": (torchvision.models.resnet50, [256, 512, 1024, 2048]),
    "resnet101": (torchvision.models.resnet101, [256, 512, 1024, 2048]),
    "resnext101": (torchvision.models.resnext101_32x8d, [256, 512, 1024, 2048]),
}

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def build_backbone(name: str = "resnet18", weights_path: str | os.PathLike | None = None,
                   levels: tuple[int, ...] = (2, 3, 4, 5)) -> tuple[nn.Module, list[int]]:
    """A torchvision ResNet/ResNeXt (``weights=None``) returning ``{"c2": .., "c5": ..}`` feature maps.

    ``weights_path``: a local torchvision-format ImageNet checkpoint (state dict of the classifier, the
    ``fc`` entries are ignored); nothing is downloaded.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r}: choose one of {', '.join(BACKBONES)}")
    builder, chans = BACKBONES[name]
    net = builder(weights=None)
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"backbone weights_path={weights_path!s}: no such file")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing:
            raise ValueError(f"backbone weights {weights_path!s} lack {len(missing)} keys of {name}, "
                             f"e.g. {missing[:3]}")
    body = IntermediateLayerGetter(net, {f"layer{i - 1}": f"c{i}" for i in levels})
    return body, [chans[i - 2] for i in levels]


@dataclasses.dataclass
class RawOutput:
    """Head output before decoding: logits [B,A,C], deltas [B,A,4], anchors [A,4], groups [A], features."""

    logits: Tensor
    deltas: Tensor
    anchors: Tensor
    groups: Tensor
    features: dict[str, Tensor]


class AnchorDetector(FaceDetector):
    """An anchor-based face detector with its own loss.

    Subclasses implement :meth:`head_forward` (normalized padded batch -> :class:`RawOutput`) and set
    ``num_classes`` (2: softmax face/background, 1: sigmoid) and ``sampling`` ("group" for SLN's group
    sampling, "hard_negative" for SSD, "focal" for RetinaNet's focal loss over all anchors).
    """

    num_classes: int = 2
    sampling: str = "group"
    size_divisor: int = 32
    pos_iou: float = 0.6
    neg_iou: float = 0.4
    per_group: int = 64
    #: BoxCoder weights of the (dx, dy, dw, dh) parametrization
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)

    def __init__(self) -> None:
        super().__init__()
        self.box_coder = BoxCoder(weights=self.box_weights)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    # -- input ---------------------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """ImageNet normalization, then zero padding (bottom/right) to a multiple of ``size_divisor``."""
        x = (images - self.mean) / self.std
        h, w = x.shape[-2:]
        d = self.size_divisor
        ph, pw = (-h) % d, (-w) % d
        return F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x

    def head_forward(self, x: Tensor) -> RawOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def raw(self, images: Tensor) -> RawOutput:
        return self.head_forward(self.preprocess(images))

    # -- outputs -------------------------------------------------------------------------------
    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes [B,A,4] from deltas [B,A,4] (Faster R-CNN parametrization, torchvision BoxCoder)."""
        b, a, _ = deltas.shape
        boxes = self.box_coder.decode_single(deltas.reshape(-1, 4).float(), anchors.repeat(b, 1).float())
        return boxes.view(b, a, 4)

    def scores_and_logit(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        logits = logits.float()
        if self.num_classes == 2:
            return logits.softmax(-1)[..., 1], logits[..., 1] - logits[..., 0]
        return logits[..., 0].sigmoid(), logits[..., 0]

    def dense(self, images: Tensor) -> DenseOutput:
        check_images(images)
        r = self.raw(images)
        boxes = self.decode(r.deltas, r.anchors)
        scores, logit = self.scores_and_logit(r.logits)
        b = images.shape[0]
        return DenseOutput(r.anchors[None].expand(b, -1, -1), boxes, scores, logit)

    # -- training ------------------------------------------------------------------------------
    def loss_from_raw(self, r: RawOutput, targets: list[Tensor],
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """L = L_cls^p + L_cls^n + L_reg (§3.1), averaged over the images of the batch."""
        boxes = self.decode(r.deltas, r.anchors)
        logits = r.logits.float()
        lp, ln, lr = [], [], []
        for b, gt in enumerate(targets):
            gt = gt.to(r.anchors.device, torch.float32).reshape(-1, 4)
            labels, matched, _ = match_anchors(r.anchors, gt, self.pos_iou, self.neg_iou)
            if self.sampling == "focal":
                from torchvision.ops import sigmoid_focal_loss

                valid = labels >= 0
                fl = sigmoid_focal_loss(logits[b, :, 0], (labels == 1).float(), reduction="none")
                npos = max(1, int((labels == 1).sum()))
                lp.append(fl[labels == 1].sum() / npos)
                ln.append(fl[valid & (labels == 0)].sum() / npos)
                pos = torch.nonzero(labels == 1).flatten()
            else:
                if self.sampling == "group":
                    pos, neg = group_sample(labels, r.groups, self.per_group, generator=generator)
                elif self.sampling == "hard_negative":
                    ce_bg = F.cross_entropy(logits[b], torch.zeros_like(labels), reduction="none")
                    pos = torch.nonzero(labels == 1).flatten()
                    neg = hard_negative_mining(ce_bg, labels)
                else:
                    raise ValueError(f"unknown sampling {self.sampling!r}")
                ce = F.cross_entropy(logits[b], labels.clamp(min=0), reduction="none")
                lp.append(ce[pos].sum() / max(1, pos.numel()))
                ln.append(ce[neg].sum() / max(1, neg.numel()))
            lr.append(iou_ls_loss(boxes[b, pos], gt[matched[pos]]) if pos.numel() else boxes.sum() * 0)
        out = {"cls_pos": torch.stack(lp).mean(), "cls_neg": torch.stack(ln).mean(), "reg": torch.stack(lr).mean()}
        out["loss"] = out["cls_pos"] + out["cls_neg"] + out["reg"]
        return out

    def compute_loss(self, images: Tensor, targets: list[Tensor],
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training losses of a batch (images [B,3,H,W] in [0,1], targets: B boxes [N_b,4] x1y1x2y2)."""
        if len(targets) != images.shape[0]:
            raise ValueError(f"compute_loss: {images.shape[0]} images but {len(targets)} target box sets")
        return self.loss_from_raw(self.raw(images), targets, generator)


def flat_head(x: Tensor, c: int) -> Tensor:
    """[B, A·C, H, W] -> [B, H·W·A, C] (order y, x, anchor)."""
    b, _, h, w = x.shape
    return x.view(b, -1, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, c)
