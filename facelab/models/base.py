"""The shared detector interface and input checks used by every model in the zoo.

All models take float tensors ``[B,3,H,W]``, RGB in ``[0,1]``, and preprocess inside ``forward``
differentiably. Detectors expose two views of one computation:

* :meth:`FaceDetector.dense` -> :class:`DenseOutput`: per-anchor priors, decoded boxes (input pixels,
  x1 y1 x2 y2) and face scores, differentiable w.r.t. the input pixels (attacks use this);
* :meth:`FaceDetector.detect` -> one :class:`Detections` per image after score threshold and NMS
  (evaluation uses this).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import nms

__all__ = ["DenseOutput", "Detections", "FaceDetector", "check_images", "check_image", "as_batches", "ImageList"]

ImageList = Tensor | Sequence[Tensor]


@dataclasses.dataclass
class DenseOutput:
    """Dense, differentiable detector output for a batch.

    anchors: [B,A,4] priors in input pixels (x1 y1 x2 y2); boxes: [B,A,4] decoded boxes in input
    pixels; scores: [B,A] face probability per anchor; logits: optional [B,A] pre-sigmoid/softmax
    face logit (when the architecture has one).
    """

    anchors: Tensor
    boxes: Tensor
    scores: Tensor
    logits: Tensor | None = None


@dataclasses.dataclass
class Detections:
    """Post-NMS detections of one image: boxes [K,4] (x1 y1 x2 y2, input pixels), scores [K], descending."""

    boxes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to(self, device: str | torch.device) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device))


def check_image(image: Tensor, name: str = "image") -> Tensor:
    """Validate one image tensor [3,H,W] float in [0,1]; clear error otherwise."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [3,H,W] RGB in [0,1], got {type(image).__name__}")
    if image.dim() != 3:
        raise ValueError(f"{name}: expected shape [3,H,W], got {tuple(image.shape)}")
    return check_images(image[None], name)[0]


def check_images(images: Tensor, name: str = "images") -> Tensor:
    """Validate a batch [B,3,H,W] of float RGB images in [0,1]; return it unchanged.

    Errors name the problem: wrong rank, grayscale (1 channel) or RGBA (4 channels), integer dtype
    (convert with ``/255``), values outside [0,1], zero-sized images.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B,3,H,W] RGB in [0,1], got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name}: expected shape [B,3,H,W], got {tuple(images.shape)}")
    c = images.shape[1]
    if c == 1:
        raise ValueError(f"{name}: grayscale input (1 channel); repeat it to 3 channels (x.expand(-1,3,-1,-1))")
    if c == 4:
        raise ValueError(f"{name}: RGBA input (4 channels); drop or composite the alpha channel first")
    if c != 3:
        raise ValueError(f"{name}: expected 3 RGB channels in dim 1, got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name}: zero-sized input {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0,1], got {images.dtype} (divide uint8 images by 255)")
    with torch.no_grad():
        lo, hi = (float(v) for v in torch.aminmax(images))
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{name}: values must lie in [0,1], got range [{lo:.4g}, {hi:.4g}]")
    return images


def as_batches(images: ImageList) -> list[Tensor]:
    """Validated batches for ``detect``: one [B,3,H,W] batch, or one [1,3,H,W] batch per list item."""
    if isinstance(images, Tensor) and images.dim() == 4:
        return [check_images(images)]
    if isinstance(images, Tensor):
        return [check_image(images)[None]]
    return [check_image(im, f"images[{i}]")[None] for i, im in enumerate(images)]


class FaceDetector(nn.Module):
    """Base class of every face detector (ported or trained). Subclasses implement :meth:`dense`."""

    #: default score threshold of :meth:`detect`
    score_threshold: float = 0.5
    #: IoU threshold of NMS
    nms_iou: float = 0.5
    #: max detections kept per image
    max_detections: int = 100

    def dense(self, images: Tensor) -> DenseOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: Tensor) -> DenseOutput:
        return self.dense(images)

    def postprocess(self, boxes: Tensor, scores: Tensor, score_threshold: float) -> Detections:
        """Threshold, NMS and sort one image's dense output. Override to match an original's NMS."""
        keep = scores >= score_threshold
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes.float(), scores.float(), self.nms_iou)[: self.max_detections]
        return Detections(boxes[keep], scores[keep])

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[Detections]:
        """Post-NMS detections per image, sorted by descending score.

        ``images``: a tensor [B,3,H,W] or a list of [3,H,W] tensors of different sizes.
        """
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        results = []
        for batch in as_batches(images):
            out = self.dense(batch)
            for b in range(batch.shape[0]):
                results.append(self.postprocess(out.boxes[b], out.scores[b], thr))
        return results
