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

from facelab.data.wider import load_wider_mat

__all__ = ["WIDER_GT_FILES", "load_wider_mat", "load_wider_gt"]

#: setting -> file name in the official ``eval_tools/ground_truth`` folder ("all" = every face).
WIDER_GT_FILES: dict[str, str] = {
    "all": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}

WiderMat = dict[str, dict[str, dict[str, Any]]]


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
