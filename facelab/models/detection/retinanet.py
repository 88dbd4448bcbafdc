"""RetinaNet [22] for faces (patch paper §3.2 "Detection frameworks"): ResNet backbone, torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork` on C3-C5 with P6/P7 (``LastLevelP6P7``), strides 8-128,
anchors 2·stride × {2⁰, 2^⅓, 2^⅔} with ratio 1 (faces), torchvision's RetinaNet classification and
regression heads (4 conv layers each, prior 0.01), sigmoid face score and the sigmoid focal loss
(``torchvision.ops.sigmoid_focal_loss``, α = 0.25, γ = 2, normalized by #positives) over all non-ignored
anchors. Matching (0.6/0.4) and the IoU least-squares regression loss are the paper's shared setup.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from torch import Tensor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from facelab.models.detection.anchors import multi_level_anchors
from facelab.models.detection.common import AnchorDetector, RawOutput, build_backbone

__all__ = ["RetinaNetFace"]


class RetinaNetFace(AnchorDetector):
    """RetinaNet face detector (sigmoid scores, focal loss)."""

    num_classes = 1
    sampling = "focal"
    size_divisor = 128
    strides = (8, 16, 32, 64, 128)

    def __init__(self, backbone: str = "resnet18", backbone_weights: str | os.PathLike | None = None,
                 channels: int = 256, octave_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.sizes = tuple(tuple(2.0 * s * o for o in octave_scales) for s in self.strides)
        self.body, chans = build_backbone(backbone, backbone_weights, levels=(3, 4, 5))
        self.fpn = FeaturePyramidNetwork(chans, channels, extra_blocks=LastLevelP6P7(channels, channels))
        k = len(octave_scales)
        self.cls_head = RetinaNetClassificationHead(channels, k, 1)
        self.reg_head = RetinaNetRegressionHead(channels, k)

    def head_forward(self, x: Tensor) -> RawOutput:
        feats = self.fpn(OrderedDict(self.body(x)))
        levels = list(feats.values())
        anchors, groups = multi_level_anchors([f.shape[-2:] for f in levels], self.strides, self.sizes,
                                              device=x.device)
        return RawOutput(self.cls_head(levels), self.reg_head(levels), anchors, groups, dict(feats))
