"""face-api's FaceLandmark68Net: FaceFeatureExtractor (4 dense blocks), 7x7 average pool, fc -> 68 points.

Port of faceLandmarkNet/FaceLandmark68Net.ts + FaceLandmark68NetBase.ts of @vladmandic/face-api 1.7.15.
Input: face crops [B,3,H,W] RGB in [0,1] (centred square pad, TF legacy bilinear resize to 112x112,
face-api mean RGB / 255). The 136 outputs are (x, y) pairs relative to the padded 112x112 square;
``postProcess`` maps them back to the unpadded crop assuming ``|w - h| / 2`` padding on each side (as
face-api does, even when the real padding is split unevenly).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.faceapi_backbones import FaceFeatureExtractor
from facelab.models.faceapi_crop import crop_face, to_net_input
from facelab.models.faceapi_weights import load_faceapi_weights

__all__ = ["FaceLandmark68Net", "landmarks68", "predict"]


class FaceLandmark68Net(nn.Module):
    """face crops [B,3,H,W] (or a list of [3,h,w]) in [0,1] -> landmarks [B,68,2] in crop pixels (x, y)."""

    input_size = 112

    def __init__(self):
        super().__init__()
        self.backbone = FaceFeatureExtractor()
        self.fc = nn.Linear(256, 136)

    def raw(self, images: Tensor | Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Net output [B,68,2] relative to the padded square, and each crop's (height, width)."""
        x, dims = to_net_input(images, self.input_size)
        return self.fc(F.avg_pool2d(self.backbone(x), 7, 2).flatten(1)).view(-1, 68, 2), dims

    def relative(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """Landmarks [B,68,2] relative to each crop (x / width, y / height), face-api's ``postProcess``."""
        out, dims = self.raw(images)
        s = float(self.input_size)
        pad, size = [], []
        for h, w in dims:
            scale = s / max(h, w)
            sw, sh = w * scale, h * scale
            pad.append([abs(sw - sh) / 2 if sw < sh else 0.0, abs(sw - sh) / 2 if sh < sw else 0.0])
            size.append([sw, sh])
        pad_t = torch.tensor(pad, dtype=out.dtype, device=out.device)[:, None]
        size_t = torch.tensor(size, dtype=out.dtype, device=out.device)[:, None]
        return (out * s - pad_t) / size_t

    def forward(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        rel = self.relative(images)
        if isinstance(images, Tensor):
            h, w = images.shape[-2:]
            wh = torch.tensor([[w, h]], dtype=rel.dtype, device=rel.device)
        else:
            wh = torch.tensor([[im.shape[-1], im.shape[-2]] for im in images], dtype=rel.dtype, device=rel.device)
        return rel * wh[:, None]

    def predict(self, image: Tensor, box: Sequence[float] | Tensor) -> Tensor:
        """Landmarks [68,2] (x, y image pixels) of the face in ``box`` (x1 y1 x2 y2) of ``image`` [3,H,W].

        As face-api (extendWithFaceLandmarks): crop-relative points times the clipped, floored crop size,
        shifted by the box's own (unclipped, unfloored) top-left corner.
        """
        crop, _ = crop_face(image, box)
        vals = box.tolist() if isinstance(box, Tensor) else list(box)
        shift = torch.tensor([float(vals[0]), float(vals[1])], dtype=image.dtype, device=image.device)
        return self(crop[None])[0] + shift

    def load_faceapi(self, w: dict[str, Tensor]) -> "FaceLandmark68Net":
        self.backbone.load(w)
        with torch.no_grad():
            self.fc.weight.copy_(w["fc/weights"].t())
            self.fc.bias.copy_(w["fc/bias"])
        return self.to(memory_format=torch.channels_last)  # channels-last convolutions are faster on CPU


def landmarks68() -> FaceLandmark68Net:
    """Pretrained face-api 68-point landmark net ("face_landmark_68_model"), eval mode."""
    return FaceLandmark68Net().load_faceapi(load_faceapi_weights("face_landmark_68_model")).eval()


@functools.lru_cache(maxsize=1)
def _default() -> FaceLandmark68Net:
    return landmarks68().requires_grad_(False)


def predict(image: Tensor, box: Sequence[float] | Tensor, model: FaceLandmark68Net | None = None) -> Tensor:
    """Landmarks [68,2] in image pixels of the face in ``box`` of ``image``, with ``model`` or a cached net."""
    return (model or _default()).to(image.device).predict(image, box)
