"""face-api's AgeGenderNet: TinyXception(2) backbone, 7x7 average pool, age regression + gender softmax.

Port of ageGenderNet/AgeGenderNet.ts and xception/TinyXception.ts of @vladmandic/face-api 1.7.15.
Input: face crops [B,3,H,W] RGB in [0,1] (padded to a centred square, resized to 112x112 with TF legacy
bilinear, normalised with face-api's mean RGB / 255). Output: ``age`` [B] in years and ``gender``
[B,2] softmax probabilities (male, female); face-api reports ``gender = male if p_male > 0.5`` and
``genderProbability = max(p_male, 1 - p_male)``.

As a :class:`~facelab.models.base.FaceClassifier`: :meth:`AgeGenderNet.as_classifier` (or
:func:`gender_classifier`) gives :class:`GenderClassifier`, whose ``forward`` returns the gender logits
[B,2] over ``labels = ["male", "female"]`` (softmax; the class is the argmax, i.e. male iff p_male > 0.5,
face-api's rule) and whose ``age(crops)`` gives the age regression [B] of the same backbone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import FaceClassifier
from facelab.models.faceapi_backbones import TinyXception
from facelab.models.faceapi_crop import crop_face, to_net_input
from facelab.models.faceapi_weights import load_faceapi_weights

__all__ = ["GENDER_LABELS", "AgeGenderNet", "GenderClassifier", "age_gender", "gender_classifier", "predict"]

#: order of the gender head's outputs
GENDER_LABELS = ("male", "female")


class AgeGenderNet(nn.Module):
    """face crops [B,3,H,W] (or a list of [3,h,w]) in [0,1] -> (age [B], gender probabilities [B,2])."""

    input_size = 112

    def __init__(self):
        super().__init__()
        self.backbone = TinyXception(num_main_blocks=2)
        self.fc_age = nn.Linear(512, 1)
        self.fc_gender = nn.Linear(512, 2)

    def logits(self, images: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(age [B], gender logits [B,2]) before the softmax."""
        x, _ = to_net_input(images, self.input_size)
        pooled = F.avg_pool2d(self.backbone(x), 7, 2).flatten(1)
        return self.fc_age(pooled)[:, 0], self.fc_gender(pooled)

    def forward(self, images: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        age, gender = self.logits(images)
        return age, F.softmax(gender, dim=1)

    @torch.no_grad()
    def predict(self, image: Tensor, box: Sequence[float] | Tensor) -> tuple[float, float]:
        """(age in years, probability of male) of the face in ``box`` (x1 y1 x2 y2) of ``image`` [3,H,W]."""
        crop, _ = crop_face(image, box)
        age, gender = self(crop[None])
        return float(age[0]), float(gender[0, 0])

    def as_classifier(self) -> "GenderClassifier":
        """This net's gender head as a :class:`FaceClassifier` (shares the weights)."""
        return GenderClassifier(self)

    def load_faceapi(self, w: dict[str, Tensor]) -> "AgeGenderNet":
        self.backbone.load(w)
        with torch.no_grad():
            for fc, name in ((self.fc_age, "fc/age"), (self.fc_gender, "fc/gender")):
                fc.weight.copy_(w[f"{name}/weights"].t())
                fc.bias.copy_(w[f"{name}/bias"])
        return self.to(memory_format=torch.channels_last)  # channels-last convolutions are faster on CPU


class GenderClassifier(FaceClassifier):
    """:class:`AgeGenderNet`'s gender head: face crops -> logits [B,2] over ("male", "female"), softmax.

    The age head of the same forward pass is :meth:`age` (years, [B]); :meth:`outputs` gives both.
    """

    multilabel = False

    def __init__(self, net: AgeGenderNet):
        super().__init__()
        self.net = net
        self.labels = list(GENDER_LABELS)

    def forward(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        return self.net.logits(images)[1]

    def age(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Age regression [B] in years."""
        return self.net.logits(images)[0]

    def outputs(self, images: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(age [B], gender logits [B,2]) from one forward pass."""
        return self.net.logits(images)


def age_gender() -> AgeGenderNet:
    """Pretrained face-api age/gender net ("age_gender_model"), eval mode."""
    return AgeGenderNet().load_faceapi(load_faceapi_weights("age_gender_model")).eval()


def gender_classifier() -> GenderClassifier:
    """Pretrained face-api age/gender net as a gender :class:`FaceClassifier`, eval mode."""
    return age_gender().as_classifier().eval()


@functools.lru_cache(maxsize=1)
def _default() -> AgeGenderNet:
    return age_gender().requires_grad_(False)


def predict(image: Tensor, box: Sequence[float] | Tensor, model: AgeGenderNet | None = None) -> tuple[float, float]:
    """(age, p_male) of the face in ``box`` of ``image`` [3,H,W], with ``model`` or a cached pretrained net."""
    return (model or _default()).to(image.device).predict(image, box)
