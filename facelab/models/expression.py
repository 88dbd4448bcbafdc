"""face-api's FaceExpressionNet: FaceFeatureExtractor (4 dense blocks), 7x7 average pool, fc, softmax.

Port of faceExpressionNet/FaceExpressionNet.ts + faceProcessor/FaceProcessor.ts of @vladmandic/face-api
1.7.15. Input: face crops [B,3,H,W] RGB in [0,1] (centred square pad, TF legacy bilinear resize to 112x112,
face-api mean RGB / 255). Output: [B,7] probabilities in :data:`LABELS` order.

As a :class:`~facelab.models.base.FaceClassifier`: :meth:`FaceExpressionNet.as_classifier` (or
:func:`expression_classifier`) gives :class:`ExpressionClassifier`, whose ``forward`` returns the 7
pre-softmax logits over ``labels = LABELS``; the expression is the argmax of the softmax (face-api's
``asSortedArray()[0]``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import FaceClassifier
from facelab.models.faceapi_backbones import FaceFeatureExtractor
from facelab.models.faceapi_crop import crop_face, to_net_input
from facelab.models.faceapi_weights import load_faceapi_weights

__all__ = ["LABELS", "FaceExpressionNet", "ExpressionClassifier", "expression", "expression_classifier", "predict"]

#: output order (faceExpressionNet/FaceExpressions.ts FACE_EXPRESSION_LABELS)
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


class FaceExpressionNet(nn.Module):
    """face crops [B,3,H,W] (or a list of [3,h,w]) in [0,1] -> expression probabilities [B,7]."""

    input_size = 112

    def __init__(self):
        super().__init__()
        self.backbone = FaceFeatureExtractor()
        self.fc = nn.Linear(256, len(LABELS))

    def logits(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Pre-softmax scores [B,7]."""
        x, _ = to_net_input(images, self.input_size)
        return self.fc(F.avg_pool2d(self.backbone(x), 7, 2).flatten(1))

    def forward(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        return F.softmax(self.logits(images), dim=1)

    def predict(self, image: Tensor, box: Sequence[float] | Tensor) -> Tensor:
        """Probabilities [7] (:data:`LABELS` order) of the face in ``box`` (x1 y1 x2 y2) of ``image`` [3,H,W]."""
        crop, _ = crop_face(image, box)
        return self(crop[None])[0]

    def as_classifier(self) -> "ExpressionClassifier":
        """This net as a :class:`FaceClassifier` returning logits (shares the weights)."""
        return ExpressionClassifier(self)

    def load_faceapi(self, w: dict[str, Tensor]) -> "FaceExpressionNet":
        self.backbone.load(w)
        with torch.no_grad():
            self.fc.weight.copy_(w["fc/weights"].t())
            self.fc.bias.copy_(w["fc/bias"])
        return self.to(memory_format=torch.channels_last)  # channels-last convolutions are faster on CPU


class ExpressionClassifier(FaceClassifier):
    """:class:`FaceExpressionNet` as a classifier: face crops -> logits [B,7] over :data:`LABELS`, softmax."""

    multilabel = False

    def __init__(self, net: FaceExpressionNet):
        super().__init__()
        self.net = net
        self.labels = list(LABELS)

    def forward(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        return self.net.logits(images)


def expression() -> FaceExpressionNet:
    """Pretrained face-api expression net ("face_expression_model"), eval mode."""
    return FaceExpressionNet().load_faceapi(load_faceapi_weights("face_expression_model")).eval()


def expression_classifier() -> ExpressionClassifier:
    """Pretrained face-api expression net as a :class:`FaceClassifier`, eval mode."""
    return expression().as_classifier().eval()


@functools.lru_cache(maxsize=1)
def _default() -> FaceExpressionNet:
    return expression().requires_grad_(False)


def predict(image: Tensor, box: Sequence[float] | Tensor, model: FaceExpressionNet | None = None) -> Tensor:
    """Expression probabilities [7] of the face in ``box`` of ``image``, with ``model`` or a cached net."""
    return (model or _default()).to(image.device).predict(image, box)
