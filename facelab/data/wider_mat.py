"""WIDER FACE validation ground truth from the official ``.mat`` files of the evaluation kit.

``wider_face_val.mat`` holds every annotated face (``event_list``, ``file_list``, ``face_bbx_list``);
``wider_{easy,medium,hard}_val.mat`` add ``gt_list``: per image the 1-based indices of the faces that
count in that setting (the other faces are *ignored*: a detection on them is neither a true nor a
false positive). The files are MATLAB cell arrays, read with :func:`scipy.io.loadmat`, nested as

    event_list[i][0][0]        -> event name, e.g. "0--Parade"
    file_list[i][0][j][0][0]   -> image name without ".jpg"
    face_bbx_list[i][0][j][0]  -> [N, 4] x y w h (pixels)
    gt_list[i][0][j][0]        -> [K, 1] 1-based indices into the image's faces
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WIDER_GT_FILES", "load_wider_mat", "load_wider_gt"]

#: setting -> file name in the official ``eval_tools/ground_truth`` folder ("all" = every face).
WIDER_GT_FILES: dict[str, str] = {
    "all": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}

WiderMat = dict[str, dict[str, dict[str, Any]]]


def _cell_str(x: Any, where: str) -> str:
    """A MATLAB char cell entry (``array([array(['name'])])`` at some depth) -> str."""
    v = x
    while isinstance(v, np.ndarray):
        if v.size != 1:
            raise ValueError(f"{where}: expected one string, got an array of shape {v.shape}")
        v = v.reshape(-1)[0]
    if not isinstance(v, str):
        raise ValueError(f"{where}: expected a string, got {type(v).__name__}")
    return v


def load_wider_mat(path: str | os.PathLike) -> WiderMat:
    """Read one official WIDER FACE ``.mat`` file.

    Returns ``{event: {image_name (no extension): {"boxes": float64 [N, 4] x y w h,
    "keep": int64 [K] 1-based face indices from gt_list, or None when the file has no gt_list}}}``,
    events and images in the file's order. Raises ``FileNotFoundError``/``ValueError`` naming the file.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE ground truth file not found: {path}")
    try:
        m = loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({e})") from e
    for key in ("event_list", "file_list", "face_bbx_list"):
        if key not in m:
            raise ValueError(f"{path}: missing variable '{key}' (found {sorted(k for k in m if not k.startswith('__'))})")
    events, files, bbxs = (np.asarray(m[k], dtype=object).reshape(-1) for k in ("event_list", "file_list", "face_bbx_list"))
    gts = np.asarray(m["gt_list"], dtype=object).reshape(-1) if "gt_list" in m else None
    if not (len(events) == len(files) == len(bbxs)) or (gts is not None and len(gts) != len(events)):
        raise ValueError(f"{path}: event_list/file_list/face_bbx_list/gt_list have different lengths")

    out: WiderMat = {}
    for i in range(len(events)):
        event = _cell_str(events[i], f"{path}: event_list[{i}]")
        names = np.asarray(files[i], dtype=object).reshape(-1)
        boxes_i = np.asarray(bbxs[i], dtype=object).reshape(-1)
        keep_i = np.asarray(gts[i], dtype=object).reshape(-1) if gts is not None else None
        if len(boxes_i) != len(names) or (keep_i is not None and len(keep_i) != len(names)):
            raise ValueError(f"{path}: event '{event}' has {len(names)} files but a different number of box/gt entries")
        ev: dict[str, dict[str, Any]] = {}
        for j in range(len(names)):
            name = _cell_str(names[j], f"{path}: file_list[{i}][{j}]")
            b = np.asarray(boxes_i[j], dtype=np.float64)
            if b.size == 0:
                b = b.reshape(0, 4)
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"{path}: face_bbx_list for {event}/{name} has shape {b.shape}, expected [N, 4]")
            keep = None
            if keep_i is not None:
                keep = np.asarray(keep_i[j]).astype(np.int64).reshape(-1)
                if keep.size and (keep.min() < 1 or keep.max() > len(b)):
                    raise ValueError(f"{path}: gt_list for {event}/{name} has indices outside 1..{len(b)}")
            ev[name] = {"boxes": b, "keep": keep}
        out[event] = ev
    return out


def load_wider_gt(gt_dir: str | os.PathLike) -> dict[str, WiderMat]:
    """Read the four official files from ``gt_dir``: ``{"all"|"easy"|"medium"|"hard": load_wider_mat(...)}``.

    The setting files must list the same events, images and boxes as ``wider_face_val.mat``
    (the official evaluator takes boxes from the latter and only ``gt_list`` from the others).
    """
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"WIDER FACE ground truth folder not found: {gt_dir}")
    out = {s: load_wider_mat(gt_dir / f) for s, f in WIDER_GT_FILES.items()}
    ref = out["all"]
    for s in ("easy", "medium", "hard"):
        f = gt_dir / WIDER_GT_FILES[s]
        if out[s].keys() != ref.keys() or any(out[s][e].keys() != ref[e].keys() for e in ref):
            raise ValueError(f"{f}: events/images differ from {gt_dir / WIDER_GT_FILES['all']}")
        for e, ev in ref.items():
            for name, rec in ev.items():
                if out[s][e][name]["keep"] is None:
                    raise ValueError(f"{f}: missing gt_list")
                if not np.array_equal(out[s][e][name]["boxes"], rec["boxes"]):
                    raise ValueError(f"{f}: boxes of {e}/{name} differ from {WIDER_GT_FILES['all']}")
    return out
