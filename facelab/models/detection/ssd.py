"""SSD [23] for faces (patch paper §3.2 "Detection frameworks"): the same ResNet backbone, no top-down
fusion; detection on C3, C4, C5 and one extra stride-64 layer, each with its own anchors
(sizes s and √2·s, ratio 1, s = 16, 32, 64, 128), torchvision's :class:`~torchvision.models.detection.ssd.SSDHead`
(3×3 conv classifier and regressor per level), softmax face score, SSD's 3:1 hard negative mining.
Matching (0.6/0.4) and the IoU least-squares regression loss are the paper's shared setup.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn
from torchvision.models.detection.ssd import SSDHead

from facelab.models.detection.anchors import multi_level_anchors
from facelab.models.detection.common import AnchorDetector, RawOutput, build_backbone

__all__ = ["SSDFace"]


class SSDFace(AnchorDetector):
    """SSD face detector on a ResNet backbone."""

    num_classes = 2
    sampling = "hard_negative"
    size_divisor = 64
    strides = (8, 16, 32, 64)

    def __init__(self, backbone: str = "resnet18", backbone_weights: str | os.PathLike | None = None,
                 base_sizes: tuple[float, ...] = (16, 32, 64, 128), extra_channels: int = 256) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.sizes = tuple((float(s), float(s) * math.sqrt(2)) for s in base_sizes)
        self.body, chans = build_backbone(backbone, backbone_weights, levels=(3, 4, 5))
        self.extra = nn.Sequential(nn.Conv2d(chans[-1], extra_channels // 2, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(extra_channels // 2, extra_channels, 3, stride=2, padding=1),
                                   nn.ReLU(inplace=True))
        self.head = SSDHead(chans + [extra_channels], [len(s) for s in self.sizes], 2)

    def head_forward(self, x: Tensor) -> RawOutput:
        feats = list(self.body(x).values())
        feats.append(self.extra(feats[-1]))
        out = self.head(feats)
        anchors, groups = multi_level_anchors([f.shape[-2:] for f in feats], self.strides, self.sizes,
                                              device=x.device)
        return RawOutput(out["cls_logits"], out["bbox_regression"], anchors, groups,
                         {f"c{i + 3}": f for i, f in enumerate(feats)})
