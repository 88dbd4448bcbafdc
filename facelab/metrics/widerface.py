"""The official WIDER FACE validation evaluation (``eval_tools`` of the benchmark), vectorised with numpy.

Protocol, step by step as in ``wider_eval.m`` / ``evaluation.m``:

1. predictions are read per image (``read_pred.m``) and sorted by descending score;
2. all scores are min-max normalised over the *whole* prediction set (``norm_score.m``, whose running
   max/min start at 0/1, so the range is ``[min(1, s_min), max(0, s_max)]``);
3. per image, each detection (in score order) takes its best-IoU face (IoU with the +1 pixel
   convention, boxes ``x y w h`` -> ``x2 = x + w``); IoU >= 0.5 on an ignored face (not in the
   setting's ``gt_list``) removes it from the proposal count, on a counted face it recalls that face
   once (later detections of the same face stay false positives). Images without faces or without
   predictions are skipped (their faces still count);
4. for 1000 thresholds ``1 - t/1000`` (t = 1..1000) the proposals and recalled faces with normalised
   score >= threshold are summed over images: precision = recalled / proposals, recall = recalled /
   faces of the setting;
5. AP is the VOC area under the interpolated (monotone) precision-recall curve.

Setting "all" (the patch paper's footnote 2: the whole validation set) counts every face of
``wider_face_val.mat``, none ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facelab.data.wider_mat import WiderMat, load_wider_gt
from facelab.metrics._matching import apply_rule, as_array, best_match, counts_at, xywh_to_xyxy

__all__ = ["SETTINGS", "read_pred_file", "read_predictions", "normalize_scores", "voc_ap", "evaluate",
           "xywh_to_xyxy"]

SETTINGS = ("easy", "medium", "hard", "all")
Predictions = dict[str, dict[str, np.ndarray]]


def read_pred_file(path: str | os.PathLike) -> tuple[str, np.ndarray]:
    """Read one official prediction file -> (image name from line 1, float64 [N, 5] x y w h score).

    Format: line 1 the image name (optionally with folder / ``.jpg``), line 2 the number of boxes N,
    then N lines ``x y w h score``. Trailing blank lines are allowed; anything else malformed raises
    ``ValueError("<file>:<line>: ...")``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text prediction file (byte {e.start} is not UTF-8); the official format "
                         "is text: image name, number of boxes, then 'x y w h score' lines") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}:1: missing image name on the first line")
    name = lines[0].strip()
    if len(lines) < 2:
        raise ValueError(f"{path}:2: missing the number of boxes on the second line")
    try:
        n = int(lines[1].strip())
    except ValueError:
        raise ValueError(f"{path}:2: the number of boxes must be an integer, got {lines[1].strip()!r}") from None
    if n < 0:
        raise ValueError(f"{path}:2: negative number of boxes {n}")
    body = lines[2:]
    if len(body) != n:
        where = 2 + min(len(body), n) + 1
        raise ValueError(f"{path}:{where}: line 2 announces {n} boxes but the file has {len(body)} box lines")
    out = np.empty((n, 5), dtype=np.float64)
    for k, line in enumerate(body):
        parts = line.split()
        lineno = k + 3
        if len(parts) != 5:
            raise ValueError(f"{path}:{lineno}: expected 5 numbers 'x y w h score', got {len(parts)} fields: {line.strip()!r}")
        try:
            out[k] = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
        if not np.all(np.isfinite(out[k])):
            raise ValueError(f"{path}:{lineno}: non-finite value in {line.strip()!r}")
        if out[k, 2] < 0 or out[k, 3] < 0:
            raise ValueError(f"{path}:{lineno}: negative box width/height in {line.strip()!r} (columns 3 and 4 are "
                             "w h, not x2 y2)")
    return name, out


def read_predictions(pred_dir: str | os.PathLike) -> Predictions:
    """Read the official folder ``pred_dir/<event>/<image>.txt`` -> ``{event: {image: [N, 5]}}``.

    The image key is the file name without ``.txt``; the name on line 1 (basename, without
    ``.jpg``) must agree with it.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    out: Predictions = {}
    for event_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        ev: dict[str, np.ndarray] = {}
        for f in sorted(event_dir.glob("*.txt")):
            name, boxes = read_pred_file(f)
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            stem = base[: -len(Path(base).suffix)] if Path(base).suffix.lower() in (".jpg", ".jpeg", ".png") else base
            if stem != f.stem:
                raise ValueError(f"{f}:1: image name {name!r} does not match the file name {f.stem!r}")
            ev[f.stem] = boxes
        out[event_dir.name] = ev
    if not out:
        raise ValueError(f"{pred_dir}: no event folders with prediction files")
    return out


def normalize_scores(predictions: Predictions) -> tuple[Predictions, float, float]:
    """Official ``norm_score``: (s - lo) / (hi - lo) with lo = min(1, all scores), hi = max(0, all scores).

    Returns a new dict (inputs untouched) and (lo, hi).
    """
    arrays: Predictions = {}
    hi, lo = 0.0, 1.0
    for e, ev in predictions.items():
        arrays[e] = {}
        for n, p in ev.items():
            q = np.array(as_array(p, f"predictions[{e!r}][{n!r}]", (5,)), copy=True)
            if not np.all(np.isfinite(q)):
                raise ValueError(f"predictions[{e!r}][{n!r}]: non-finite values")
            if len(q):
                hi = max(hi, float(np.max(q[:, 4])))
                lo = min(lo, float(np.min(q[:, 4])))
            arrays[e][n] = q
    if not hi > lo:
        raise ValueError(f"cannot min-max normalise the scores: max {hi} <= min {lo}")
    for ev in arrays.values():
        for q in ev.values():
            q[:, 4] = (q[:, 4] - lo) / (hi - lo)
    return arrays, lo, hi


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC AP: area under the precision envelope; NaN precisions (no proposals) are skipped like MATLAB's max."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _setting_keep(gt: dict[str, WiderMat], setting: str, event: str, name: str, n_faces: int) -> np.ndarray:
    if setting == "all":
        return np.ones(n_faces, dtype=bool)
    keep = np.zeros(n_faces, dtype=bool)
    idx = gt[setting][event][name]["keep"]
    if idx is None:
        raise ValueError(f"setting '{setting}' has no gt_list")
    keep[idx - 1] = True
    return keep


def evaluate(predictions: Predictions | str | os.PathLike, gt: dict[str, WiderMat] | str | os.PathLike,
             settings: tuple[str, ...] = SETTINGS, iou_thresh: float = 0.5, thresh_num: int = 1000,
             missing: str = "error") -> dict[str, Any]:
    """Official WIDER FACE AP for each setting.

    ``predictions``: ``{event: {image: [N, 5] x y w h score}}`` or a folder for :func:`read_predictions`;
    ``gt``: :func:`facelab.data.wider_mat.load_wider_gt` output or its folder. ``missing``: "error"
    (official: every validation image needs a prediction file) or "empty" (no detections).

    Returns ``{"ap": {setting: AP}, "curves": {setting: {"thresholds", "precision", "recall",
    "recalled", "proposals", "n_faces"}}, "score_min", "score_max", "n_images", "n_predictions"}``;
    ``precision`` is NaN where no proposal passes the threshold.
    """
    for s in settings:
        if s not in SETTINGS:
            raise ValueError(f"settings: unknown setting {s!r}; choose from {SETTINGS}")
    if missing not in ("error", "empty"):
        raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
    if not 0 < iou_thresh < 1:  # also NaN; IoU >= 1 matches nothing (every AP 0)
        raise ValueError(f"iou_thresh must lie in (0, 1), got {iou_thresh} (the official threshold is 0.5)")
    if not isinstance(predictions, dict):
        predictions = read_predictions(predictions)
    if not isinstance(gt, dict):
        gt = load_wider_gt(gt)
    if "all" not in gt:
        raise ValueError("gt: needs the 'all' entry (wider_face_val.mat) for the face boxes")
    norm, lo, hi = normalize_scores(predictions)

    # pass 1 (setting independent): per image, sorted scores and each detection's best-IoU face
    scores, best_iou, best_gid, img_faces = [], [], [], []
    offset = 0
    for event, ev in gt["all"].items():
        for name, rec in ev.items():
            g = rec["boxes"]
            img_faces.append((event, name, len(g), offset))
            p = norm.get(event, {}).get(name)
            if p is None:
                if missing == "error":
                    raise FileNotFoundError(f"no prediction for {event}/{name} (expected {event}/{name}.txt)")
                p = np.zeros((0, 5))
            if len(g) and len(p):  # official: images without faces or predictions are skipped
                p = p[np.argsort(-p[:, 4], kind="stable")]
                iou, idx = best_match(xywh_to_xyxy(p[:, :4]), xywh_to_xyxy(g), plus_one=True)
                scores.append(p[:, 4])
                best_iou.append(iou)
                best_gid.append(idx + offset)
            offset += len(g)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    scores_a, iou_a, gid_a = cat(scores, np.float64), cat(best_iou, np.float64), cat(best_gid, np.int64)

    thresholds = 1.0 - np.arange(1, thresh_num + 1) / thresh_num
    out: dict[str, Any] = {"ap": {}, "curves": {}, "score_min": lo, "score_max": hi,
                           "n_images": len(img_faces), "n_predictions": int(len(scores_a))}
    for s in settings:
        keep = np.concatenate([_setting_keep(gt, s, e, n, k) for e, n, k, _ in img_faces]) if img_faces else np.zeros(0, bool)
        counted, tp = apply_rule(iou_a, gid_a, keep, iou_thresh)
        recalled, proposals = counts_at(scores_a, tp, counted, thresholds)
        n_faces = int(keep.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals
            recall = recalled / n_faces
        out["ap"][s] = voc_ap(recall, precision)
        out["curves"][s] = {"thresholds": thresholds, "precision": precision, "recall": recall,
                            "recalled": recalled, "proposals": proposals, "n_faces": n_faces}
    return out
