"""Trainable face detectors of the patch paper (000_2d206f6d835d60ed, §3.1 and §3.2): SLN and SSD /
RetinaNet / Faster R-CNN for faces, all :class:`facelab.models.base.FaceDetector` s, with their losses,
a training loop (:mod:`.train`, ``facelab train-detector``) and WIDER FACE layout helpers.
"""

from __future__ import annotations

from torch import nn

from facelab.models.detection.faster_rcnn import FasterRCNNFace
from facelab.models.detection.retinanet import RetinaNetFace
from facelab.models.detection.sln import SLN
from facelab.models.detection.ssd import SSDFace

__all__ = ["ARCHS", "build_detector", "SLN", "SSDFace", "RetinaNetFace", "FasterRCNNFace"]

#: --arch name -> detector class
ARCHS: dict[str, type[nn.Module]] = {
    "sln": SLN,
    "ssd": SSDFace,
    "retinanet": RetinaNetFace,
    "faster_rcnn": FasterRCNNFace,
}


def build_detector(arch: str = "sln", backbone: str = "resnet18", **kwargs) -> nn.Module:
    """A freshly initialized trainable detector ``arch`` (one of :data:`ARCHS`) on ``backbone``."""
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: choose one of {', '.join(ARCHS)}")
    return ARCHS[arch](backbone=backbone, **kwargs)
