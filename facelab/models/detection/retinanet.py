"""RetinaNet [22] for faces (patch paper §3.2 "Detection frameworks"): ResNet backbone, torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork` on C3-C5 with P6/P7 (``LastLevelP6P7``), strides 8-128,
anchors 2·stride × {2⁰, 2^⅓, 2^⅔} with ratio 1 (faces), torchvision's RetinaNet classification and
regression heads (4 conv layers each, prior π = 0.01: classification bias −log((1 − π)/π)), sigmoid face
score and the sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``, α = 0.25, γ = 2, normalized by
#positives) over all non-ignored anchors. Matching (0.6/0.4) and the IoU least-squares regression loss are
the paper's shared setup.

Head normalization (deviation from [22], default ``head_norm="group"``): the heads put GroupNorm after
each of their 4 convs, as torchvision's ``retinanet_resnet50_fpn_v2`` does. [22]'s plain heads initialize
those convs with N(0, 0.01²) weights, which shrinks the activations by ~0.17× (64 channels) to ~0.34×
(256 channels) per layer: at the start the classification logits are almost constant over the anchors
(their spread is ~1e-3 of the FPN features'), so neither the head nor the backbone gets a useful
gradient and, from a from-scratch backbone, the face scores stay near the 0.01 prior for many steps.
GroupNorm restores unit-scale activations in the head; ``head_norm=None`` gives [22]'s original heads.
"""

from __future__ import annotations

import functools
import math
import os
from collections import OrderedDict

from torch import Tensor, nn
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
                 channels: int = 256, octave_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
                 head_norm: str | None = "group") -> None:
        super().__init__()
        if head_norm not in ("group", None):
            raise ValueError(f"head_norm={head_norm!r}: choose 'group' or None")
        self.backbone_name = backbone
        self.sizes = tuple(tuple(2.0 * s * o for o in octave_scales) for s in self.strides)
        self.body, chans = build_backbone(backbone, backbone_weights, levels=(3, 4, 5))
        self.fpn = FeaturePyramidNetwork(chans, channels, extra_blocks=LastLevelP6P7(channels, channels))
        k = len(octave_scales)
        # GroupNorm(32, C) as in torchvision's v2 heads (fewer groups when C is not a multiple of 32)
        norm = functools.partial(nn.GroupNorm, math.gcd(32, channels)) if head_norm == "group" else None
        self.cls_head = RetinaNetClassificationHead(channels, k, 1, prior_probability=0.01, norm_layer=norm)
        self.reg_head = RetinaNetRegressionHead(channels, k, norm_layer=norm)

    def head_forward(self, x: Tensor) -> RawOutput:
        feats = self.fpn(OrderedDict(self.body(x)))
        levels = list(feats.values())
        anchors, groups = multi_level_anchors([f.shape[-2:] for f in levels], self.strides, self.sizes,
                                              device=x.device)
        return RawOutput(self.cls_head(levels), self.reg_head(levels), anchors, groups, dict(feats))
