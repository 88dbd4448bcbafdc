"""``defended(defense, victim)``: a defended model that is itself a victim, attackable end to end.

The result is an ``nn.Sequential(defense, victim)`` that also keeps the victim's interface: a defended
:class:`~facelab.models.base.FaceClassifier` is a ``FaceClassifier`` (same labels; ``predict`` and
``classify`` see the defended logits), a defended ``FaceEmbedder`` is a ``FaceEmbedder`` (same distance
and threshold; :meth:`~facelab.models.base.FaceEmbedder.match` transforms both faces), a defended
``FaceDetector`` is a ``FaceDetector`` (``dense`` and ``detect`` on the transformed images). Any other
module gives a plain ``nn.Sequential``. Gradients flow through the defense: its true gradient, or the
BPDA estimate when ``defense.differentiable`` is False.
"""

from __future__ import annotations

from torch import Tensor, nn

from facelab.models.base import DenseOutput, Detections, FaceClassifier, FaceDetector, FaceEmbedder

__all__ = ["defended", "DefendedClassifier", "DefendedEmbedder", "DefendedDetector"]


class _Defended(nn.Sequential):
    """``Sequential(defense, victim)`` with named access to both parts."""

    @property
    def defense(self) -> nn.Module:
        return self[0]

    @property
    def victim(self) -> nn.Module:
        return self[1]


class DefendedClassifier(_Defended, FaceClassifier):
    """A :class:`FaceClassifier` behind a defense: logits of ``victim(defense(images))``."""

    @property
    def labels(self) -> list[str]:  # type: ignore[override]
        return self.victim.labels

    @property
    def multilabel(self) -> bool:  # type: ignore[override]
        return self.victim.multilabel


class DefendedEmbedder(_Defended, FaceEmbedder):
    """A :class:`FaceEmbedder` behind a defense: descriptors of ``victim(defense(images))``, victim's metric."""

    @property
    def threshold(self) -> float:  # type: ignore[override]
        return self.victim.threshold

    @property
    def metric(self) -> str:  # type: ignore[override]
        return self.victim.metric

    @property
    def normalize(self) -> bool:  # type: ignore[override]
        return self.victim.normalize

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        return self.victim.distance(a, b)


class DefendedDetector(_Defended, FaceDetector):
    """A :class:`FaceDetector` behind a defense: ``dense`` / ``detect`` of the transformed images."""

    def dense(self, images: Tensor) -> DenseOutput:
        return self.victim.dense(self.defense(images))

    def forward(self, images: Tensor) -> DenseOutput:
        return self.dense(images)

    def postprocess(self, boxes: Tensor, scores: Tensor, score_threshold: float) -> Detections:
        return self.victim.postprocess(boxes, scores, score_threshold)

    @property
    def score_threshold(self) -> float:  # type: ignore[override]
        return self.victim.score_threshold

    @property
    def nms_iou(self) -> float:  # type: ignore[override]
        return self.victim.nms_iou

    @property
    def max_detections(self) -> int:  # type: ignore[override]
        return self.victim.max_detections


def defended(defense: nn.Module, victim: nn.Module) -> nn.Sequential:
    """``nn.Sequential(defense, victim)``, typed after the victim (see the module docstring).

    The defended model is in the victim's train/eval mode; the victim's own parameters are untouched.
    """
    if not isinstance(defense, nn.Module) or not isinstance(victim, nn.Module):
        raise TypeError(f"defended: defense and victim must be nn.Modules, got {type(defense).__name__} and "
                        f"{type(victim).__name__}")
    for kind, cls in ((FaceClassifier, DefendedClassifier), (FaceEmbedder, DefendedEmbedder),
                      (FaceDetector, DefendedDetector)):
        if isinstance(victim, kind):
            return cls(defense, victim).train(victim.training)
    return nn.Sequential(defense, victim).train(victim.training)
