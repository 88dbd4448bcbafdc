"""The WIDER FACE matching rule, shared by :mod:`facelab.metrics.widerface` and :mod:`.detection`.

Official rule (``eval_tools/evaluation.m``, ``image_evaluation``): detections are visited in
descending score order; each looks only at its best-IoU face. If that IoU is >= the threshold and
the face is *ignored* in the setting, the detection is removed from the proposal count; if the face
counts and is not yet recalled it becomes recalled (a true positive); a second detection on an
already recalled face stays a proposal (a false positive). Everything is vectorised over
concatenated images with global face ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_array", "xywh_to_xyxy", "iou_matrix", "best_match", "apply_rule", "counts_at"]


def as_array(x: Any, name: str, shape_tail: tuple[int, ...] = (), dtype: Any = np.float64) -> np.ndarray:
    """torch tensor / numpy array / list -> numpy array, checking the trailing shape."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if shape_tail:
        if a.size == 0:
            a = a.reshape((0, *shape_tail))
        if a.ndim != 1 + len(shape_tail) or a.shape[1:] != shape_tail:
            raise ValueError(f"{name}: expected shape [N, {', '.join(map(str, shape_tail))}], got {list(a.shape)}")
    elif a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {list(a.shape)}")
    return a


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """WIDER ``x y w h`` -> ``x1 y1 x2 y2`` with x2 = x + w (the evaluator's convention)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """IoU of x1y1x2y2 boxes ``a`` [P,4] vs ``b`` [G,4] -> [P,G].

    ``plus_one=True`` is the official WIDER FACE (``boxoverlap.m``/``bbox_overlaps``) pixel convention:
    width = x2 - x1 + 1, intersection width = min(x2) - max(x1) + 1, overlap 0 unless both > 0.
    """
    e = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + e
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + e
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + e) * (a[:, 3] - a[:, 1] + e)
    area_b = (b[:, 2] - b[:, 0] + e) * (b[:, 3] - b[:, 1] + e)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    return np.where((iw > 0) & (ih > 0), iou, 0.0)


def best_match(dets: np.ndarray, gts: np.ndarray, plus_one: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For each detection (x1y1x2y2) its best IoU and the index of that face (first maximum; -1 if no faces)."""
    if len(gts) == 0 or len(dets) == 0:
        return np.full(len(dets), -np.inf), np.full(len(dets), -1, dtype=np.int64)
    iou = iou_matrix(dets, gts, plus_one)
    idx = iou.argmax(axis=1)
    return iou[np.arange(len(dets)), idx], idx.astype(np.int64)


def apply_rule(best_iou: np.ndarray, best_gid: np.ndarray, keep: np.ndarray, iou_thresh: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray]:
    """Official matching given detections in descending score order (within each image).

    ``best_gid``: global face id of each detection's best-IoU face (-1: none); ``keep``: bool per
    global face (False = ignored). Returns ``counted`` (still a proposal) and ``tp`` (the first
    detection of a counted face), both bool per detection.
    """
    matched = (best_gid >= 0) & (best_iou >= iou_thresh)
    gid = np.where(matched, best_gid, 0)
    face_counts = keep[gid] if len(keep) else np.zeros(len(gid), dtype=bool)
    counted = ~(matched & ~face_counts)
    cand = np.flatnonzero(matched & face_counts)
    tp = np.zeros(len(best_iou), dtype=bool)
    if len(cand):
        _, first = np.unique(best_gid[cand], return_index=True)  # first occurrence = highest score
        tp[cand[first]] = True
    return counted, tp


def counts_at(scores: np.ndarray, tp: np.ndarray, counted: np.ndarray, thresholds: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of true positives and of proposals with score >= each threshold (via searchsorted)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)

    def n_ge(s: np.ndarray) -> np.ndarray:
        s = np.sort(s)
        return len(s) - np.searchsorted(s, thresholds, side="left")

    return n_ge(scores[tp]), n_ge(scores[counted])
