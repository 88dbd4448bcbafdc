"""ONNX export of the zoo's nets (``torch.onnx.export``, TorchScript-based exporter) for graph runtimes.

Each zoo net is exported as a tensors-only view (:class:`TensorView`) of the computation that attacks and
evaluation use, for one fixed input shape (the resize / padding matrices of the ports depend on it):

* detectors with :meth:`~facelab.models.base.FaceDetector.dense`: ``(boxes [B,A,4], scores [B,A])`` in input
  pixels, before NMS (NMS stays in Python, as in ``detect``); MTCNN: P-Net over the image pyramid (its
  ``dense``), and R-Net / O-Net as separate stage nets (:data:`MTCNN_STAGES`);
* face nets (classifiers, embedders, Human's graph models, CenterNet): their ``forward`` outputs.

``haar`` is an OpenCV cascade, not a torch module: it has nothing to export (:data:`NOT_EXPORTABLE`).
The exporter needs the ``onnx`` package (``pip install -e .[bench]``); ``onnxruntime`` runs the result.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["TensorView", "NOT_EXPORTABLE", "MTCNN_STAGES", "exportable_names", "is_image_model", "load_view",
           "example_input", "export_onnx"]

#: zoo names with nothing to export, and why
NOT_EXPORTABLE: dict[str, str] = {"haar": "OpenCV's Viola-Jones cascade (cv2), not a torch module"}
#: MTCNN's stage nets exported on their own (name -> (attribute, input side))
MTCNN_STAGES: dict[str, tuple[str, int]] = {"mtcnn_rnet": ("rnet", 24), "mtcnn_onet": ("onet", 48)}
#: default input (H, W) of the detectors and of the face nets
DETECTOR_SIZE = (480, 640)
CROP_SIZE = (160, 130)


class TensorView(nn.Module):
    """The tensors-only computation of a zoo net: ``dense`` -> ``(boxes, scores)`` for detectors, else the
    ``forward`` outputs as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.detector = callable(getattr(model, "dense", None))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.detector:
            out = self.model.dense(x)
            return out.boxes, out.scores
        out = self.model(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def exportable_names() -> list[str]:
    """Every zoo name that exports (all of :data:`facelab.models.MODELS` but :data:`NOT_EXPORTABLE`), plus
    MTCNN's R-Net and O-Net."""
    from facelab.models import MODELS

    return [n for n in MODELS if n not in NOT_EXPORTABLE] + list(MTCNN_STAGES)


def is_image_model(name: str) -> bool:
    """Whether ``name`` takes whole images (detectors, CenterNet) rather than face crops."""
    return name in ("ssd_mobilenetv1", "tiny_face_detector", "mtcnn", "blazeface", "blazeface_front", "centernet")


def load_view(name: str, **kwargs) -> TensorView:
    """The :class:`TensorView` of a zoo net or MTCNN stage (eval mode, frozen)."""
    from facelab import models

    if name in NOT_EXPORTABLE:
        raise ValueError(f"{name}: not exportable ({NOT_EXPORTABLE[name]})")
    if name in MTCNN_STAGES:
        return TensorView(getattr(models.load("mtcnn"), MTCNN_STAGES[name][0])).eval()
    return TensorView(models.load(name, **kwargs)).eval()


def example_input(name: str, batch: int = 1, size: tuple[int, int] | None = None, seed: int = 0) -> Tensor:
    """Random [batch,3,H,W] images in [0,1] of the size the net is benchmarked at (``size`` overrides)."""
    if name in MTCNN_STAGES:
        side = MTCNN_STAGES[name][1]
        # the stage nets take normalised crops ((x*255 - 127.5) / 128, in [-1, 1))
        return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    h, w = size or (DETECTOR_SIZE if is_image_model(name) else CROP_SIZE)
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def export_onnx(model: nn.Module, example: Tensor, path: str | Path | None = None, opset: int = 17) -> bytes:
    """Export ``model`` (a :class:`TensorView` or any tensors-only module) traced on ``example``; returns the
    ONNX bytes and also writes them to ``path`` when given. The graph is specialised to ``example``'s shape."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # tracing turns the ports' shape arithmetic into constants, which is what a fixed-shape graph wants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on constant folding of slices
        torch.onnx.export(model.eval(), (example,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                          do_constant_folding=True)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
