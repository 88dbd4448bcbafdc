"""OpenCV's Viola-Jones Haar cascade as a black-box :class:`FaceDetector` (transfer target, Table 2).

It has no gradients and no per-anchor scores, so :meth:`HaarCascadeDetector.dense` raises; use
:meth:`HaarCascadeDetector.detect`. Scores are 1.0 for every detection (a yes/no decision, so any
threshold δ in (0, 1] gives the same result); ``scores="weights"`` maps OpenCV's level weights
``w`` through ``sigmoid(w)`` instead, for ranking.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from facelab.models.base import Detections, FaceDetector, ImageList, check_image, check_images

__all__ = ["HaarCascadeDetector", "haar"]


class HaarCascadeDetector(FaceDetector):
    """``cv2.CascadeClassifier`` (default: haarcascade_frontalface_default.xml from ``cv2.data``)."""

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 20, scores: str = "binary") -> None:
        super().__init__()
        path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
        if not path.is_file():
            raise FileNotFoundError(f"Haar cascade {cascade!r} not found (looked in {cv2.data.haarcascades})")
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load the Haar cascade {path}")
        if scores not in ("binary", "weights"):
            raise ValueError(f"scores: expected 'binary' or 'weights', got {scores!r}")
        self.path, self.scale_factor, self.min_neighbors = path, scale_factor, min_neighbors
        self.min_size, self.scores_mode = int(min_size), scores

    def dense(self, images: Tensor):
        raise NotImplementedError(
            "HaarCascadeDetector is a black-box detector (OpenCV cascade): it has no dense, differentiable "
            "per-anchor output; use detect() (e.g. as a transfer target)")

    def _detect_one(self, image: Tensor) -> Detections:
        gray = cv2.cvtColor((image.detach().cpu().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                            cv2.COLOR_RGB2GRAY)
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
        weights = np.asarray(weights, dtype=np.float32).reshape(-1)
        boxes = torch.from_numpy(np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1))
        if self.scores_mode == "binary":
            scores = torch.ones(len(boxes))
        else:
            scores = torch.sigmoid(torch.from_numpy(weights))
        order = torch.argsort(scores, descending=True)
        return Detections(boxes[order], scores[order])

    @torch.no_grad()
    def detect(self, images: ImageList, score_threshold: float | None = None) -> list[Detections]:
        """Detections per image; ``score_threshold`` filters the (binary or sigmoid-weight) scores."""
        if isinstance(images, Tensor) and images.dim() == 4:
            ims = list(check_images(images))
        elif isinstance(images, Tensor):
            ims = [check_image(images)]
        else:
            ims = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        thr = 0.0 if score_threshold is None else float(score_threshold)
        out = []
        for im in ims:
            d = self._detect_one(im)
            keep = d.scores >= thr
            out.append(Detections(d.boxes[keep][: self.max_detections], d.scores[keep][: self.max_detections]))
        return out


def haar(**kwargs) -> HaarCascadeDetector:
    """The default frontal-face Haar cascade."""
    return HaarCascadeDetector(**kwargs)
