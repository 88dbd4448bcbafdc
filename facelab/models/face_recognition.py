"""face-api's FaceRecognitionNet: a dlib-style ResNet-34-like net giving 128-D face descriptors.

Port of faceRecognitionNet/FaceRecognitionNet.ts (+ convLayer.ts, residualLayer.ts, scaleLayer.ts) of
@vladmandic/face-api 1.7.15. Input: face crops [B,3,H,W] RGB in [0,1]; each is zero-padded to a centred
square, resized to 150x150 (TF legacy bilinear), normalised ``(x*255 - [122.782,117.001,104.298]) / 255``.
Two faces match when the Euclidean distance of their descriptors is below 0.6 (face-api's FaceMatcher default).

A :class:`~facelab.models.base.FaceEmbedder`: ``net(crops)`` -> descriptors [B,128] (not unit-norm),
``net.distance`` (Euclidean), ``net.threshold`` (0.6), ``net.match(a, b)``; ``net.describe(image, box)``
crops a face from a photo as face-api does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import FaceEmbedder
from facelab.models.faceapi_crop import crop_face, to_net_input
from facelab.models.faceapi_weights import load_faceapi_weights

__all__ = ["FaceRecognitionNet", "face_recognition"]


class _ConvLayer(nn.Module):
    """conv + bias, then the per-channel scale layer ``x * weights + biases``, optional relu.

    The scale layer is folded into the convolution at load time (``W * s``, ``b * s + c``, float64
    arithmetic), so ``forward`` is one convolution (+ in-place relu).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, relu: bool, valid: bool = False):
        super().__init__()
        self.relu = relu
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=0 if valid else k // 2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return F.relu(out, inplace=True) if self.relu else out

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        scale = w[f"{prefix}/scale/weights"].double()
        filt = w[f"{prefix}/conv/filters"].permute(3, 2, 0, 1).double() * scale.view(-1, 1, 1, 1)
        bias = w[f"{prefix}/conv/bias"].double() * scale + w[f"{prefix}/scale/biases"].double()
        with torch.no_grad():
            self.conv.weight.copy_(filt)
            self.conv.bias.copy_(bias)


class _Residual(nn.Module):
    """residual / residualDown (residualLayer.ts): two 3x3 conv layers + shortcut, then relu.

    The down variant's first conv has stride 2 and "valid" padding; the shortcut is a 2x2 average pool,
    channel-padded with zeros, and the conv branch is zero-padded at the bottom/right when the pooled
    map is larger (odd sizes), exactly as face-api does.
    """

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = _ConvLayer(cin, cout, 3, 2 if down else 1, relu=True, valid=down)
        self.conv2 = _ConvLayer(cout, cout, 3, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        if not self.down:
            return F.relu(out + x, inplace=True)
        pooled = F.avg_pool2d(x, 2, 2)
        if pooled.shape[-2:] != out.shape[-2:]:
            out = F.pad(out, (0, 1, 0, 1))
        if pooled.shape[1] != out.shape[1]:
            pooled = torch.cat([pooled, torch.zeros_like(pooled)], 1)
        return F.relu(pooled + out, inplace=True)

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        self.conv1.load(w, f"{prefix}/conv1")
        self.conv2.load(w, f"{prefix}/conv2")


_LAYERS = [  # (tfjs name, cin, cout, down)
    ("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
]  # fmt: skip


class FaceRecognitionNet(FaceEmbedder):
    """face crops [B,3,H,W] (or a list of [3,h,w]) in [0,1] -> descriptors [B,128] (dlib-style, not unit-norm)."""

    input_size = 150
    threshold = 0.6  # face-api FaceMatcher's default distanceThreshold
    metric = "euclidean"  # face-api euclideanDistance
    normalize = False

    def __init__(self):
        super().__init__()
        self.conv32_down = _ConvLayer(3, 32, 7, 2, relu=True, valid=True)
        self.layers = nn.ModuleDict({name: _Residual(cin, cout, down) for name, cin, cout, down in _LAYERS})
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        x, _ = to_net_input(images, self.input_size)
        out = F.max_pool2d(self.conv32_down(x), 3, 2)
        for layer in self.layers.values():
            out = layer(out)
        return self.fc(out.mean(dim=(2, 3)))

    def describe(self, image: Tensor, box: Sequence[float] | Tensor) -> Tensor:
        """Descriptor [128] of the face in ``box`` (x1 y1 x2 y2) of ``image`` [3,H,W] (face-api's crop).

        Differentiable w.r.t. ``image`` (wrap in ``torch.no_grad()`` for plain inference).
        """
        crop, _ = crop_face(image, box)
        return self(crop[None])[0]

    def load_faceapi(self, w: dict[str, Tensor]) -> "FaceRecognitionNet":
        self.conv32_down.load(w, "conv32_down")
        for name, layer in self.layers.items():
            layer.load(w, name)
        with torch.no_grad():
            self.fc.weight.copy_(w["fc"].t())
        return self.to(memory_format=torch.channels_last)  # channels-last convolutions are faster on CPU


def face_recognition() -> FaceRecognitionNet:
    """Pretrained face-api face recognition net ("face_recognition_model"), eval mode."""
    return FaceRecognitionNet().load_faceapi(load_faceapi_weights("face_recognition_model")).eval()


@functools.lru_cache(maxsize=1)
def _default() -> FaceRecognitionNet:
    return face_recognition().requires_grad_(False)


def describe(image: Tensor, box: Sequence[float] | Tensor, model: FaceRecognitionNet | None = None) -> Tensor:
    """Descriptor [128] of the face in ``box`` of ``image`` [3,H,W], with ``model`` or a cached pretrained net."""
    return (model or _default()).to(image.device).describe(image, box)
