"""The patch paper's detection metrics (Yang et al., ECCV 2020, §3.2 and §4.1) on in-memory detections.

* **Precision / recall at a raw score threshold δ** (Tables 1-3 use δ = 0.99): detections with
  score >= δ are the output; they are matched to faces with the WIDER FACE rule (descending score,
  best-IoU face, IoU >= 0.5, a detection on an *ignored* face is dropped, one true positive per face)
  but scores are **not** normalised. Precision = TP / kept detections, recall = TP / counted faces.
* **Fβ** (§4.1): Fβ = (1 + β²) / (β²/P + 1/R) = (1 + β²) P R / (β² R + P).
* **Threshold-Fβ curve and AFβ** (Fig. 7): Fβ as a function of δ; AFβ is the area under it
  (lower = better attack), here the trapezoidal area divided by the threshold range, i.e. the
  average Fβ over the thresholds (equal to the area for the default thresholds spanning [0, 1]).
  The paper plots the curve on logit scores s = s_p - s_n (footnote 4): pass such scores and a
  matching ``thresholds`` grid to reproduce that.

**No detections.** When no detection passes δ there are no false positives, so precision is defined
as 1 (vacuous truth: every output box is a face; this is what Criterion 2 asks of an attack); recall
is then 0, so Fβ = 0 (R = 0 gives 1/R = ∞). Fβ is 0 whenever R = 0, including P = R = 0. With no
counted faces at all recall is NaN.

**Why P/R at δ differ from AP.** AP (:mod:`facelab.metrics.widerface`) integrates precision over all
recall levels of the *ranking* of detections, after min-max normalising scores over the set, so it
is invariant to any monotone rescaling of the scores: an attack that pushes every face score below
δ but keeps faces ranked above the background leaves AP unchanged while the recall at δ collapses;
a face-like patch that is detected with a high score ranks above the real faces and lowers AP a lot
although, at δ, it is "only" a false positive (§4.1, "Shortcomings of AP"). P/R at δ measure the
operating point a deployed detector actually uses.

Boxes are x1 y1 x2 y2; IoU is continuous (``plus_one=False``) unless ``plus_one=True`` (WIDER's
integer-pixel convention, used by :func:`wider_detection_metrics`). Unlike the official AP script,
detections on images without faces are counted (as false positives). Inputs may be torch tensors or
numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facelab.data.wider_mat import WiderMat
from facelab.metrics._matching import apply_rule, as_array, best_match, counts_at, xywh_to_xyxy
from facelab.metrics.uncertainty import UnitTable

__all__ = ["Matches", "match_detections", "patch_as_face_rate", "detection_unit_table", "fbeta", "precision_recall_at", "threshold_fbeta_curve", "area_fbeta",
           "wider_detection_metrics", "DEFAULT_BETAS", "DEFAULT_THRESHOLDS"]

DEFAULT_BETAS = (0.001, 0.01, 0.1, 0.5)
DEFAULT_THRESHOLDS = np.linspace(0.0, 1.0, 1001)
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


@dataclass
class Matches:
    """Per-detection outcome (input order) of :func:`match_detections`."""

    scores: np.ndarray      # [K] scores as given
    iou: np.ndarray         # [K] IoU with the best-IoU face (-inf if the image has no faces)
    matched_gt: np.ndarray  # [K] index of that face if IoU >= threshold, else -1
    tp: np.ndarray          # [K] bool: first (highest-score) detection of a counted face
    ignored: np.ndarray     # [K] bool: matched an ignored face -> not a proposal
    n_faces: int            # counted (non-ignored) faces

    @property
    def fp(self) -> np.ndarray:
        """[K] bool: kept proposals that are not true positives (background or duplicates)."""
        return ~self.tp & ~self.ignored


def _image_arrays(det_boxes: Any, det_scores: Any, gt_boxes: Any, ignore: Any, where: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    b = as_array(det_boxes, f"{where}det_boxes", (4,))
    s = as_array(det_scores, f"{where}det_scores")
    g = as_array(gt_boxes, f"{where}gt_boxes", (4,))
    if len(b) != len(s):
        raise ValueError(f"{where}det_boxes has {len(b)} rows but det_scores has {len(s)}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{where}det_scores contains NaN/inf")
    if ignore is None:
        keep = np.ones(len(g), dtype=bool)
    else:
        ig = as_array(ignore, f"{where}ignore", dtype=bool)
        if len(ig) != len(g):
            raise ValueError(f"{where}ignore has {len(ig)} entries but there are {len(g)} faces")
        keep = ~ig
    return b, s, g, keep


def _match_one(b: np.ndarray, s: np.ndarray, g: np.ndarray, plus_one: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="stable")
    iou_sorted, idx_sorted = best_match(b[order], g, plus_one)
    iou = np.empty(len(s)); idx = np.empty(len(s), dtype=np.int64)
    iou[order], idx[order] = iou_sorted, idx_sorted
    return order, iou, idx


def match_detections(det_boxes: Any, det_scores: Any, gt_boxes: Any, ignore: Any = None, iou: float = 0.5,
                     plus_one: bool = False) -> Matches:
    """Match one image's detections [K,4] (x1y1x2y2) + scores [K] to faces [N,4] with the WIDER rule.

    ``ignore``: bool [N], True = ignored face (a detection on it is dropped, not a false positive).
    """
    b, s, g, keep = _image_arrays(det_boxes, det_scores, gt_boxes, ignore, "")
    order, best_iou, best_idx = _match_one(b, s, g, plus_one)
    counted_o, tp_o = apply_rule(best_iou[order], best_idx[order], keep, iou)
    counted = np.empty(len(s), dtype=bool); tp = np.empty(len(s), dtype=bool)
    counted[order], tp[order] = counted_o, tp_o
    matched = np.where((best_idx >= 0) & (best_iou >= iou), best_idx, -1)
    return Matches(scores=s, iou=best_iou, matched_gt=matched, tp=tp, ignored=~counted, n_faces=int(keep.sum()))


@dataclass
class _Prepared:
    """Setting-independent part of the matching over a list of images (per-image descending order)."""

    scores: np.ndarray
    best_iou: np.ndarray
    best_gid: np.ndarray
    keep: np.ndarray  # bool per global face, from the ``ignores`` given to _prepare


def _prepare(dets: Sequence[Any], gts: Sequence[Any], ignores: Sequence[Any] | None, plus_one: bool) -> _Prepared:
    if len(dets) != len(gts):
        raise ValueError(f"dets has {len(dets)} images but gts has {len(gts)}")
    if ignores is not None and len(ignores) != len(gts):
        raise ValueError(f"ignores has {len(ignores)} images but gts has {len(gts)}")
    scores, best_iou, best_gid, keeps = [], [], [], []
    offset = 0
    for i, (d, g) in enumerate(zip(dets, gts)):
        if not (isinstance(d, (tuple, list)) and len(d) == 2):
            raise ValueError(f"dets[{i}]: expected a (boxes [K,4], scores [K]) pair")
        b, s, gb, keep = _image_arrays(d[0], d[1], g, None if ignores is None else ignores[i], f"image {i}: ")
        order, bi, idx = _match_one(b, s, gb, plus_one)
        scores.append(s[order]); best_iou.append(bi[order])
        best_gid.append(np.where(idx[order] >= 0, idx[order] + offset, -1)); keeps.append(keep)
        offset += len(gb)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return _Prepared(cat(scores, np.float64), cat(best_iou, np.float64), cat(best_gid, np.int64), cat(keeps, bool))


def _counts(prep: _Prepared, thresholds: np.ndarray, iou: float, keep: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """(#TP, #kept detections) with score >= each threshold, and #counted faces."""
    keep = prep.keep if keep is None else keep
    counted, tp = apply_rule(prep.best_iou, prep.best_gid, keep, iou)
    tp_n, prop_n = counts_at(prep.scores, tp, counted, thresholds)
    return tp_n, prop_n, int(keep.sum())


def _pr(tp_n: np.ndarray, prop_n: np.ndarray, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    tp_n = np.asarray(tp_n, dtype=np.float64); prop_n = np.asarray(prop_n, dtype=np.float64)
    precision = np.where(prop_n > 0, tp_n / np.maximum(prop_n, 1), 1.0)
    recall = tp_n / n_faces if n_faces > 0 else np.full_like(tp_n, np.nan)
    return precision, recall


def fbeta(precision: Any, recall: Any, beta: float) -> np.ndarray:
    """Fβ = (1 + β²) P R / (β² R + P) (§4.1); 0 where R = 0 (or P = 0). Works elementwise."""
    p = np.asarray(precision, dtype=np.float64); r = np.asarray(recall, dtype=np.float64)
    b2 = float(beta) ** 2
    den = b2 * r + p
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(den > 0, (1 + b2) * p * r / np.where(den > 0, den, 1.0), 0.0)
    return np.where(np.isnan(r) | np.isnan(p), np.nan, f)


def precision_recall_at(dets: Sequence[Any], gts: Sequence[Any], delta: float = 0.99, ignores: Sequence[Any] | None = None,
                        iou: float = 0.5, plus_one: bool = False) -> dict[str, float]:
    """Precision and recall over a list of images at score threshold ``delta`` (Tables 1-3).

    ``dets``: list of (boxes [K,4] x1y1x2y2, scores [K]); ``gts``: list of [N,4]; ``ignores``: list of
    bool [N] or None. Returns precision, recall, tp, fp, n_detections (kept, score >= δ), n_faces.
    """
    return _pr_dict(_counts(_prepare(dets, gts, ignores, plus_one), np.array([float(delta)]), iou), delta)


def _pr_dict(counts: tuple[np.ndarray, np.ndarray, int], delta: float) -> dict[str, float]:
    tp_n, prop_n, n_faces = counts
    p, r = _pr(tp_n, prop_n, n_faces)
    return {"precision": float(p[0]), "recall": float(r[0]), "tp": int(tp_n[0]), "fp": int(prop_n[0] - tp_n[0]),
            "n_detections": int(prop_n[0]), "n_faces": n_faces, "delta": float(delta)}


def threshold_fbeta_curve(dets: Sequence[Any], gts: Sequence[Any], betas: Sequence[float] = DEFAULT_BETAS,
                          thresholds: Any = None, ignores: Sequence[Any] | None = None, iou: float = 0.5,
                          plus_one: bool = False) -> dict[str, Any]:
    """Threshold-Fβ curves (Fig. 7): ``{"thresholds", "precision", "recall", "fbeta": {β: [T]}}``."""
    th = _check_thresholds(thresholds)
    return _curve(_counts(_prepare(dets, gts, ignores, plus_one), th, iou), th, betas)


def _check_thresholds(thresholds: Any) -> np.ndarray:
    th = DEFAULT_THRESHOLDS if thresholds is None else as_array(thresholds, "thresholds")
    if len(th) < 2 or np.any(np.diff(th) <= 0):
        raise ValueError("thresholds: need at least two strictly increasing values")
    return th


def _curve(counts: tuple[np.ndarray, np.ndarray, int], th: np.ndarray, betas: Sequence[float]) -> dict[str, Any]:
    tp_n, prop_n, n_faces = counts
    p, r = _pr(tp_n, prop_n, n_faces)
    return {"thresholds": th, "precision": p, "recall": r, "tp": tp_n, "n_detections": prop_n, "n_faces": n_faces,
            "fbeta": {float(b): fbeta(p, r, b) for b in betas}}


def area_fbeta(dets: Sequence[Any] | None = None, gts: Sequence[Any] | None = None, betas: Sequence[float] = DEFAULT_BETAS,
               thresholds: Any = None, ignores: Sequence[Any] | None = None, iou: float = 0.5, plus_one: bool = False,
               curve: dict[str, Any] | None = None) -> dict[float, float]:
    """AFβ (§4.1): area under the threshold-Fβ curve / threshold range, per β (lower = stronger attack).

    Give ``dets``/``gts`` (as :func:`threshold_fbeta_curve`) or a precomputed ``curve``.
    """
    if curve is None:
        if dets is None or gts is None:
            raise ValueError("area_fbeta: give dets and gts, or curve")
        curve = threshold_fbeta_curve(dets, gts, betas, thresholds, ignores, iou, plus_one)
    th = np.asarray(curve["thresholds"], dtype=np.float64)
    span = th[-1] - th[0]
    return {b: float(_trapezoid(f, th) / span) for b, f in curve["fbeta"].items()}


def wider_detection_metrics(predictions: dict[str, dict[str, Any]], gt: dict[str, WiderMat],
                            settings: Sequence[str] = ("easy", "medium", "hard", "all"), delta: float = 0.99,
                            betas: Sequence[float] = DEFAULT_BETAS, thresholds: Any = None, iou: float = 0.5,
                            missing: str = "empty") -> dict[str, dict[str, Any]]:
    """P/R at δ and AFβ on WIDER FACE val per setting (the paper's Tables 1-3 and Fig. 7 columns).

    ``predictions``: ``{event: {image: [N, 5] x y w h score}}`` (e.g. :func:`read_predictions`), raw
    scores (no normalisation); ``gt``: :func:`facelab.data.wider_mat.load_wider_gt`. Boxes use the
    WIDER convention (x2 = x + w, +1 pixel IoU); faces outside a setting's gt_list are ignored ("all":
    none ignored). ``missing``: "empty" (image without predictions = no detections) or "error".
    Returns ``{setting: {"precision", "recall", "tp", "fp", "n_detections", "n_faces", "afbeta": {β: AFβ}}}``.
    """
    if missing not in ("error", "empty"):
        raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
    dets, gts, keys = [], [], []
    for event, ev in gt["all"].items():
        for name, rec in ev.items():
            p = predictions.get(event, {}).get(name)
            if p is None:
                if missing == "error":
                    raise FileNotFoundError(f"no prediction for {event}/{name}")
                p = np.zeros((0, 5))
            p = as_array(p, f"predictions[{event!r}][{name!r}]", (5,))
            dets.append((xywh_to_xyxy(p[:, :4]), p[:, 4]))
            gts.append(xywh_to_xyxy(rec["boxes"]))
            keys.append((event, name))
    th = _check_thresholds(thresholds)
    grid = np.concatenate([[float(delta)], th])
    prep = _prepare(dets, gts, None, plus_one=True)
    out: dict[str, dict[str, Any]] = {}
    for s in settings:
        if s == "all":
            keep = np.ones(len(prep.keep), dtype=bool)
        else:
            if s not in gt:
                raise ValueError(f"settings: {s!r} not in gt (have {sorted(gt)})")
            keep = np.concatenate([_keep_mask(gt[s][e][n]["keep"], len(g)) for (e, n), g in zip(keys, gts)]
                                  or [np.zeros(0, bool)])
        tp_n, prop_n, n_faces = _counts(prep, grid, iou, keep)
        res = _pr_dict((tp_n[:1], prop_n[:1], n_faces), delta)
        curve = _curve((tp_n[1:], prop_n[1:], n_faces), th, betas)
        res["afbeta"] = area_fbeta(curve=curve)
        out[s] = res
    return out


def _keep_mask(keep_idx: np.ndarray | None, n: int) -> np.ndarray:
    if keep_idx is None:
        raise ValueError("gt setting has no gt_list")
    keep = np.zeros(n, dtype=bool)
    keep[np.asarray(keep_idx, dtype=np.int64) - 1] = True
    return keep


def patch_as_face_rate(dets: Sequence[Any], patch_boxes: Sequence[Any], delta: float, iou: float = 0.5) -> float:
    """Share of pasted patches that some detection with score ≥ δ covers with IoU ≥ ``iou`` (§3.2: the
    Patch-IoU patch is itself detected as a face); NaN without patches."""
    hit = total = 0
    for (boxes, scores), pb in zip(dets, patch_boxes):
        h, n = _patch_hits(boxes, scores, pb, delta, iou)
        hit += int(h.sum()); total += n
    return hit / total if total else float("nan")


def _patch_hits(boxes: Any, scores: Any, pb: Any, delta: float, iou: float) -> tuple[np.ndarray, int]:
    from facelab.metrics._matching import iou_matrix

    p = as_array(pb, "patch_boxes", (4,))
    b = as_array(boxes, "det_boxes", (4,))[as_array(scores, "det_scores") >= delta]
    if not len(p) or not len(b):
        return np.zeros(len(p), dtype=bool), len(p)
    return iou_matrix(p, b, False).max(axis=1) >= iou, len(p)


def detection_unit_table(dets: Sequence[Any], gts: Sequence[Any], ignores: Sequence[Any] | None,
                         units: Sequence[Sequence[str]], delta: float, iou: float = 0.5,
                         patch_boxes: Sequence[Any] | None = None) -> UnitTable:
    """P/R counts at δ split by sampling unit, for :func:`facelab.metrics.uncertainty.bootstrap`.

    ``units[i][j]`` is the unit of face j of image i. Columns: ``tp`` (recalled counted faces), ``faces``
    (counted faces), ``fp`` (kept detections that are no true positive; each is charged to the unit of the
    face whose centre is nearest to its centre, or to a unit of its own image when the image has no face),
    and with ``patch_boxes`` (one per face) ``patch_hits`` / ``patches`` (:func:`patch_as_face_rate`).
    Column sums equal :func:`precision_recall_at`'s tp, fp and n_faces.
    """
    cols: dict[str, dict[str, float]] = {k: {} for k in ("tp", "fp", "faces", "patch_hits", "patches")}
    order: dict[str, None] = {}

    def add(col: str, unit: str, v: float) -> None:
        order.setdefault(unit)
        cols[col][unit] = cols[col].get(unit, 0.0) + v

    for i, ((b, s), g) in enumerate(zip(dets, gts)):
        ign = None if ignores is None else ignores[i]
        u = list(units[i])
        g = as_array(g, f"image {i}: gt_boxes", (4,))
        if len(u) != len(g):
            raise ValueError(f"image {i}: {len(u)} units for {len(g)} faces")
        s = as_array(s, f"image {i}: det_scores")
        b = as_array(b, f"image {i}: det_boxes", (4,))
        keep = s >= delta
        m = match_detections(b[keep], s[keep], g, ign, iou)
        counted = np.ones(len(g), dtype=bool) if ign is None else ~as_array(ign, "ignore", dtype=bool)
        recalled = np.zeros(len(g), dtype=bool)
        recalled[m.matched_gt[m.tp]] = True
        for j in range(len(g)):
            add("faces", u[j], float(counted[j])); add("tp", u[j], float(recalled[j]))
        fp_boxes = b[keep][m.fp]
        if len(fp_boxes):
            if len(g):
                c = (fp_boxes[:, None, :2] + fp_boxes[:, None, 2:]) / 2 - (g[None, :, :2] + g[None, :, 2:]) / 2
                for j in np.argmin((c ** 2).sum(-1), axis=1):
                    add("fp", u[j], 1.0)
            else:
                add("fp", f"image {i} (no face)", float(len(fp_boxes)))
        if patch_boxes is not None:
            hits, n = _patch_hits(b, s, patch_boxes[i], delta, 0.5)
            if n != len(g):
                raise ValueError(f"image {i}: {n} patch boxes for {len(g)} faces")
            for j in range(n):
                add("patches", u[j], 1.0); add("patch_hits", u[j], float(hits[j]))
    names = tuple(order)
    keep_cols = [k for k in cols if k not in ("patch_hits", "patches") or patch_boxes is not None]
    return UnitTable(names, {k: np.array([cols[k].get(n, 0.0) for n in names]) for k in keep_cols})
