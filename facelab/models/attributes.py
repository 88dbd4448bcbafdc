"""Binary facial-attribute nets (Rozsa et al., §2.1): zoo adapters and trainable VGG-16 separate / MOON nets.

An :class:`AttributeNet` maps images ``[B,3,H,W]`` RGB in [0, 1] to scores ``[B,A]`` over :attr:`attributes`
(CelebA names); attribute ``i`` is present iff ``score_i > 0`` (Eq. 2). ``loss_kind`` tells the attacks of
:mod:`facelab.attacks.ffa` what the scores are (``"euclidean"``, ``"logodds"``, ``"softmax"``).

**Zoo adapters** (pretrained nets of :mod:`facelab.models`, ``loss_kind = "logodds"``: the score is the log-odds
of the binary attribute, so ``score > 0`` is exactly the stated threshold). Each takes a face crop and runs the
net's own preprocessing, differentiably. :data:`ADAPTERS` lists them with their rule:

=====================  =========================  ===============================================================
name                   attributes                 rule (threshold)
=====================  =========================  ===============================================================
``human_gender``       Male                       Human's gender net: p(male) > 0.5
``ssrnet_age``         Young                      SSR-Net age < 35 years; score = (35 - age) / 5 (5 years per unit)
``emotion``            Smiling                    Human's emotion net (7-way softmax): p(happy) > 0.5
``faceapi_gender``     Male                       face-api age/gender net, gender head: p(male) > 0.5
``faceapi_age``        Young                      face-api age/gender net, age head: age < 35 years, as above
``faceapi_expression`` Smiling                    face-api expression net (7-way softmax): p(happy) > 0.5
``age_gender``         Male, Young                face-api's age/gender net, both heads of one backbone
``gear``               Male, Young                GEAR (one backbone, gender/age/race heads): p(male) > 0.5;
                                                  p(age bin 15, 23 or 28) > 0.5 (bins are Human's, roughly < 32)
=====================  =========================  ===============================================================

``age_gender`` and ``gear`` are *multi-output* nets, the analogue of MOON (one net, all attributes); the
others are *separate* nets (one attribute each). CelebA's "Young" has no age in years: the 35-year threshold
is our choice.

**Trainable nets** (full scale, :class:`VGGAttributes`): VGG-16 (Parkhi et al. topology: 13 conv3x3 + 3 fc)
on CelebA's aligned 178x218 images (the input layer sized to them, as the paper does), with either a Euclidean
head (``A`` outputs, ±1 targets, Eq. 1 / 4; a separate net has ``A = 1``, MOON ``A = 40``) or a softmax head
(two logits per attribute, §5). :func:`euclidean_loss`, :func:`softmax_loss` and :func:`moon_weights`
(Rudd et al.'s domain-adaptive re-weighting) are the training losses. ``width`` scales every layer's channels
(1.0 is VGG-16; the tests use a narrow one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import check_images

__all__ = ["AttributeNet", "ADAPTERS", "RULES", "SEPARATE", "MULTI", "YOUNG_AGE", "load_attribute_net",
           "VGGAttributes", "euclidean_loss", "softmax_loss", "moon_weights"]

#: age (years) below which the age regressors call a face "Young" (our choice; CelebA gives no age)
YOUNG_AGE = 35.0
#: years per unit of log-odds for the age regressors' score (only its sign matters to the decision)
AGE_SCALE = 5.0


class AttributeNet(nn.Module):
    """Base of binary attribute nets: ``forward(images) -> scores [B,A]``, present iff score > 0."""

    attributes: tuple[str, ...] = ()
    loss_kind: str = "logodds"
    #: how each output becomes a binary attribute (shown in the notebook)
    rule: str = ""

    def index(self, attribute: str) -> int:
        try:
            return self.attributes.index(attribute)
        except ValueError:
            raise KeyError(f"{type(self).__name__}: no attribute {attribute!r}; it has {list(self.attributes)}") from None

    def decide(self, images: Tensor) -> Tensor:
        """``[B,A]`` bool decisions (Eq. 2)."""
        with torch.no_grad():
            return self(images) > 0


def _log_odds(p_pos: Tensor) -> Tensor:
    tiny = torch.finfo(p_pos.dtype).tiny
    return torch.log(p_pos.clamp_min(tiny)) - torch.log((1 - p_pos).clamp_min(tiny))


def _log_odds_from_logits(logits: Tensor, positive: Sequence[int]) -> Tensor:
    """log p(pos) - log p(neg) of a softmax over ``logits`` [B,K], ``positive`` the classes that count as present."""
    pos = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    pos[list(positive)] = True
    return torch.logsumexp(logits[:, pos], 1) - torch.logsumexp(logits[:, ~pos], 1)


class _Human(AttributeNet):
    """Human's gender / emotion net as one binary attribute."""

    def __init__(self, net: str) -> None:
        super().__init__()
        from facelab.models.human import HumanClassifier

        self.clf = HumanClassifier(net)
        if net == "gender":
            self.attributes, self.positive = ("Male",), [self.clf.labels.index("male")]
            self.rule = "Human gender net: p(male) > 0.5"
        else:
            self.attributes, self.positive = ("Smiling",), [self.clf.labels.index("happy")]
            self.rule = "Human emotion net (7 classes): p(happy) > 0.5"

    def forward(self, images: Tensor) -> Tensor:
        return _log_odds_from_logits(self.clf(images), self.positive)[:, None]  # clf logits are log p


class _SsrNetYoung(AttributeNet):
    attributes = ("Young",)
    rule = f"SSR-Net age < {YOUNG_AGE:g} years; score = ({YOUNG_AGE:g} - age) / {AGE_SCALE:g}"

    def __init__(self) -> None:
        super().__init__()
        from facelab.models.human import SsrNetAge

        self.net = SsrNetAge()

    def forward(self, images: Tensor) -> Tensor:
        return ((YOUNG_AGE - self.net(images)) / AGE_SCALE)[:, None]


class _FaceApiAgeGender(AttributeNet):
    """face-api's age/gender net: heads chosen by ``heads`` among ("Male", "Young")."""

    def __init__(self, heads: Sequence[str]) -> None:
        super().__init__()
        from facelab.models.age_gender import age_gender

        self.net = age_gender()
        self.attributes = tuple(heads)
        self.rule = "; ".join({"Male": "face-api gender head: p(male) > 0.5",
                               "Young": f"face-api age head: age < {YOUNG_AGE:g} years"}[h] for h in heads)

    def forward(self, images: Tensor) -> Tensor:
        age, logits = self.net.logits(check_images(images))
        out = {"Male": logits[:, 0] - logits[:, 1], "Young": (YOUNG_AGE - age) / AGE_SCALE}
        return torch.stack([out[a] for a in self.attributes], 1)


class _FaceApiExpression(AttributeNet):
    attributes = ("Smiling",)
    rule = "face-api expression net (7 classes): p(happy) > 0.5"

    def __init__(self) -> None:
        super().__init__()
        from facelab.models.expression import LABELS, expression

        self.net, self.happy = expression(), LABELS.index("happy")

    def forward(self, images: Tensor) -> Tensor:
        return _log_odds_from_logits(self.net.logits(check_images(images)), [self.happy])[:, None]


class _Gear(AttributeNet):
    """GEAR's gender and age heads from one forward pass of its backbone."""

    attributes = ("Male", "Young")
    rule = "GEAR: p(male) > 0.5; p(age bin 15, 23 or 28) > 0.5"
    young_bins = (0, 1, 2)

    def __init__(self) -> None:
        super().__init__()
        from facelab.models.human import HumanClassifier, load_human_graph

        self.clf = HumanClassifier("gear", "gender",
                                   graph=load_human_graph("gear", outputs=["gender_output", "age_output"]))

    def forward(self, images: Tensor) -> Tensor:
        gender, age = self.clf.graph(self.clf.preprocess(images))
        young = age[:, list(self.young_bins)].sum(1)
        return torch.stack([_log_odds(gender[:, 0]), _log_odds(young)], 1)


def _eval(m: nn.Module) -> nn.Module:
    return m.eval().requires_grad_(False)


#: adapter name -> builder; see the module docstring for the rules
ADAPTERS = {
    "human_gender": lambda: _Human("gender"),
    "ssrnet_age": _SsrNetYoung,
    "emotion": lambda: _Human("emotion"),
    "faceapi_gender": lambda: _FaceApiAgeGender(("Male",)),
    "faceapi_age": lambda: _FaceApiAgeGender(("Young",)),
    "faceapi_expression": _FaceApiExpression,
    "age_gender": lambda: _FaceApiAgeGender(("Male", "Young")),
    "gear": _Gear,
}
#: adapter name -> its attributes (without building it)
RULES: dict[str, tuple[str, ...]] = {
    "human_gender": ("Male",), "ssrnet_age": ("Young",), "emotion": ("Smiling",), "faceapi_gender": ("Male",),
    "faceapi_age": ("Young",), "faceapi_expression": ("Smiling",), "age_gender": ("Male", "Young"),
    "gear": ("Male", "Young"),
}
SEPARATE = ("human_gender", "ssrnet_age", "emotion", "faceapi_gender", "faceapi_age", "faceapi_expression")
MULTI = ("age_gender", "gear")


def load_attribute_net(name: str, device: str | torch.device = "cpu", checkpoint: str | None = None) -> AttributeNet:
    """A zoo adapter (:data:`ADAPTERS`), or with ``checkpoint`` a trained :class:`VGGAttributes` (``name`` is
    then only a label); eval mode, frozen."""
    if checkpoint is not None:
        return _eval(VGGAttributes.from_checkpoint(checkpoint)).to(device)
    if name not in ADAPTERS:
        raise KeyError(f"unknown attribute net {name!r}; choose from {', '.join(ADAPTERS)} or give a checkpoint")
    return _eval(ADAPTERS[name]()).to(device)


# -- trainable VGG-16 nets ---------------------------------------------------------------------------------
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGGAttributes(AttributeNet):
    """VGG-16 for ``attributes`` on ``input_size`` (H, W) images: Euclidean (``loss="euclidean"``: one score per
    attribute, trained on ±1) or softmax (``loss="softmax"``: two logits per attribute, :meth:`logits`).
    Input normalisation: ``x - 0.5`` (the paper's Caffe mean subtraction is not given)."""

    def __init__(self, attributes: Sequence[str], loss: str = "euclidean", input_size: tuple[int, int] = (218, 178),
                 width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        if loss not in ("euclidean", "softmax"):
            raise ValueError(f"loss: must be 'euclidean' or 'softmax', got {loss!r}")
        if not attributes:
            raise ValueError("attributes: need at least one attribute")
        if not width > 0:
            raise ValueError(f"width: must be > 0, got {width}")
        self.attributes, self.loss_kind = tuple(attributes), loss
        self.config = {"attributes": list(attributes), "loss": loss, "input_size": list(input_size),
                       "width": float(width), "dropout": float(dropout)}
        self.rule = f"VGG-16 {loss} head: score > 0" if loss == "euclidean" else "VGG-16 softmax: p(present) > 0.5"
        layers: list[nn.Module] = []
        c, h, w = 3, *input_size
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            else:
                n = max(1, int(round(v * width)))
                layers += [nn.Conv2d(c, n, 3, padding=1), nn.ReLU(inplace=True)]
                c = n
        self.features = nn.Sequential(*layers)
        fc = max(1, int(round(4096 * width)))
        out = len(attributes) * (2 if loss == "softmax" else 1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, fc), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(fc, out))
        self.input_size = tuple(input_size)

    def raw(self, images: Tensor) -> Tensor:
        x = check_images(images)
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"images: expected {self.input_size[0]}x{self.input_size[1]} inputs, got "
                             f"{tuple(x.shape[-2:])}")
        return self.classifier(self.features(x - 0.5))

    def logits(self, images: Tensor) -> Tensor:
        """Softmax nets: ``[B,A,2]`` logits (absent, present)."""
        if self.loss_kind != "softmax":
            raise ValueError("logits: only a softmax net has two logits per attribute")
        return self.raw(images).view(images.shape[0], len(self.attributes), 2)

    def forward(self, images: Tensor, logits: bool = False) -> Tensor:
        """Scores ``[B,A]``; ``logits=True`` (softmax nets): the ``[B,A,2]`` logits (for training under DDP)."""
        if self.loss_kind == "softmax":
            lg = self.logits(images)
            return lg if logits else lg[..., 1] - lg[..., 0]
        if logits:
            raise ValueError("logits: only a softmax net has two logits per attribute")
        return self.raw(images)

    @classmethod
    def from_checkpoint(cls, path: str) -> VGGAttributes:
        """A net saved by the chapter's trainer (``{"config": ..., "model": state_dict, ...}``)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"{path}: checkpoint not found") from None
        if not isinstance(state, dict) or "config" not in state or "model" not in state:
            raise ValueError(f"{path}: not an attribute-net checkpoint (needs 'config' and 'model')")
        cfg = state["config"]
        net = cls(cfg["attributes"], cfg["loss"], tuple(cfg["input_size"]), cfg["width"], cfg.get("dropout", 0.5))
        net.load_state_dict(state["model"])
        return net


def euclidean_loss(scores: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Eq. 1 / 4: ``sum_i w_i(y_i) ||f_i(x) - y_i||^2`` averaged over the batch; ``labels`` in {0, 1} ``[B,A]``
    (mapped to ±1), ``weights`` ``[A,2]`` (weight of a negative, of a positive label) or None."""
    y = labels.to(scores.dtype) * 2 - 1
    err = (scores - y) ** 2
    if weights is not None:
        err = err * torch.where(labels > 0, weights[:, 1], weights[:, 0])
    return err.sum(1).mean()


def softmax_loss(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of ``[B,A,2]`` logits against ``labels`` in {0, 1} ``[B,A]``, summed over attributes."""
    ce = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1).long(), reduction="none").view(labels.shape)
    if weights is not None:
        ce = ce * torch.where(labels > 0, weights[:, 1], weights[:, 0])
    return ce.sum(1).mean()


def moon_weights(source_pos: Tensor, target_pos: float | Tensor = 0.5) -> Tensor:
    """Rudd et al.'s domain-adaptive re-weighting (MOON, as we read it): per attribute ``[A,2]`` weights of
    (negative, positive) labels; the class that is more frequent in the training data (``source_pos``, the
    positive fraction per attribute) than in the target distribution (``target_pos``, balanced 0.5 by default)
    is down-weighted by the odds ratio, the other keeps weight 1, so the weighted positive fraction equals
    the target's."""
    s = source_pos.double().clamp(1e-6, 1 - 1e-6)
    t = torch.as_tensor(target_pos, dtype=torch.float64).expand_as(s).clamp(1e-6, 1 - 1e-6)
    ratio = (t / (1 - t)) / (s / (1 - s))  # < 1: positives over-represented
    w_pos = torch.where(ratio < 1, ratio, torch.ones_like(ratio))
    w_neg = torch.where(ratio < 1, torch.ones_like(ratio), 1 / ratio)
    return torch.stack([w_neg, w_pos], 1).float()
