"""SLN, the Single Level Network of the patch paper (§3.1, Fig. 3), following its reference [26].

ResNet backbone (18 default; 34/50/101/ResNeXt-101 selectable) -> FPN top-down fusion down to P2
(1×1/256 lateral convs, bilinear ×2 upsampling, element-wise sum; a 3×3/256 smoothing conv on P2) ->
one detection level P2 (stride 4) with anchors of scales {16, 32, 64, 128}, ratio 1 -> head: a shared
3×3/256 conv + ReLU, then 3×3 convs giving 2 logits (softmax face score) and 4 box deltas per anchor.
The head depth is not given in the paper; this one is our choice. Training: IoU > 0.6 positive,
< 0.4 negative, group sampling, L = L_cls^p + L_cls^n + L_reg with the IoU least-squares L_reg
(see :mod:`facelab.models.detection.losses`).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.detection.anchors import grid_anchors
from facelab.models.detection.common import AnchorDetector, RawOutput, build_backbone, flat_head

__all__ = ["SLN", "TopDownP2"]


class TopDownP2(nn.Module):
    """FPN top-down pathway of Fig. 3 ending at P2: P5 = L5(C5); P_k = L_k(C_k) + up×2(P_{k+1})."""

    def __init__(self, in_channels: list[int], out_channels: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        p = self.lateral[-1](feats[-1])
        for lat, c in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            p = lat(c) + F.interpolate(p, size=c.shape[-2:], mode="bilinear", align_corners=False)
        return self.smooth(p)


class SLN(AnchorDetector):
    """Single Level Network face detector (softmax face score over P2 anchors)."""

    stride = 4
    num_classes = 2
    sampling = "group"

    def __init__(self, backbone: str = "resnet18", backbone_weights: str | os.PathLike | None = None,
                 anchor_sizes: tuple[float, ...] = (16, 32, 64, 128), channels: int = 256,
                 per_group: int = 64, prior: float = 0.01) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.per_group = per_group
        self.body, chans = build_backbone(backbone, backbone_weights)
        self.fpn = TopDownP2(chans, channels)
        k = len(self.anchor_sizes)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls = nn.Conv2d(channels, k * 2, 3, padding=1)
        self.reg = nn.Conv2d(channels, k * 4, 3, padding=1)
        for m in (self.conv, self.cls, self.reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        with torch.no_grad():  # face prior `prior` at start (stabilizes early training)
            self.cls.bias.view(k, 2)[:, 1] = -math.log((1 - prior) / prior)

    def p2(self, x: Tensor) -> Tensor:
        """P2 feature map [B,256,H/4,W/4] of a normalized padded batch."""
        return self.fpn(list(self.body(x).values()))

    def head_forward(self, x: Tensor) -> RawOutput:
        p2 = self.p2(x)
        t = F.relu(self.conv(p2))
        h, w = p2.shape[-2:]
        anchors = grid_anchors(h, w, self.stride, self.anchor_sizes, device=x.device)
        k = len(self.anchor_sizes)
        groups = torch.arange(k, device=x.device).repeat(h * w)
        return RawOutput(flat_head(self.cls(t), 2), flat_head(self.reg(t), 4), anchors, groups, {"p2": p2})
