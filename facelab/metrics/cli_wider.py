"""``facelab wider-eval``: the official WIDER FACE validation AP of a prediction folder."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="prediction folder: PRED/<event>/<image>.txt (official format)")
    parser.add_argument("--gt", required=True,
                        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the APs and PR curves as JSON here")
    parser.add_argument("--missing", choices=("error", "empty"), default="error",
                        help="an image without a prediction file: error (official) or no detections")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")


def _nan_to_none(xs) -> list:
    return [None if (isinstance(x, float) and math.isnan(x)) else x for x in xs]


def main(args: argparse.Namespace) -> int:
    """Errors (a bad option, a missing or malformed file, naming it and its line) raise ValueError /
    OSError, which :mod:`facelab.cli` prints as one line with exit code 2."""
    from facelab.io import write_json
    from facelab.metrics.widerface import evaluate

    if not 0 < args.iou < 1:  # NaN too
        raise ValueError(f"--iou {args.iou}: must lie in (0, 1); the official threshold is 0.5")
    for opt, folder in (("--pred", args.pred), ("--gt", args.gt)):
        if not Path(folder).is_dir():
            raise ValueError(f"{opt} {folder}: no such folder")
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json}: is a folder; give a file name")
    t0 = time.perf_counter()
    res = evaluate(args.pred, args.gt, iou_thresh=args.iou, missing=args.missing)
    dt = time.perf_counter() - t0
    for s, ap in res["ap"].items():
        print(f"{s.capitalize():<7} Val AP: {ap:.6f}")
    print(f"({res['n_images']} images, {res['n_predictions']} evaluated predictions, {dt:.2f} s)")
    if args.json:
        curves = {s: {"thresholds": c["thresholds"].tolist(), "precision": _nan_to_none(c["precision"].tolist()),
                      "recall": c["recall"].tolist(), "n_faces": c["n_faces"]} for s, c in res["curves"].items()}
        write_json(args.json, {"pred": str(args.pred), "gt": str(args.gt), "iou": args.iou, "ap": res["ap"],
                               "score_min": res["score_min"], "score_max": res["score_max"],
                               "n_images": res["n_images"], "curves": curves})
        print(f"wrote {args.json}")
    return 0
