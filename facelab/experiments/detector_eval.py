"""Evaluation glue for trained detectors on WIDER FACE val (patch paper Table 1 "Baseline-SLN" line):
run a detector over the val images, write official-format prediction files, and score them with the
official AP (:func:`facelab.metrics.widerface.evaluate`) and P/R at δ
(:func:`facelab.metrics.detection.wider_detection_metrics`).

Command line: ``facelab eval-detector --checkpoint runs/sln/model.pt --data-root /data/WIDER
--gt-dir /data/WIDER/eval_tools/ground_truth --out runs/sln/val`` (also ``python -m
facelab.experiments.detector_eval ...``); tested end to end in tests/test_detection_eval.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

from facelab.io import write_json

__all__ = ["predict_wider", "evaluate_detector", "main"]


@torch.no_grad()
def predict_wider(model: nn.Module, data_root: str | os.PathLike, out_dir: str | os.PathLike, split: str = "val",
                  score_threshold: float = 0.01, device: str = "cpu", limit: int | None = None,
                  progress: bool = True) -> dict[str, dict[str, "object"]]:
    """Detect on every image of the split (full resolution, one at a time) and write
    ``<out_dir>/<event>/<name>.txt``; return ``{event: {name: [N,5] x y w h score}}``."""
    import numpy as np

    from facelab.data.wider import WiderFace, write_wider_predictions

    ds = WiderFace(data_root, split)
    model.eval().to(device)
    preds: dict[str, dict[str, np.ndarray]] = {}
    n = len(ds) if limit is None else min(limit, len(ds))
    it = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="detect")
    for i in it:
        image, _, info = ds[i]
        det = model.detect(image.to(device), score_threshold)[0].to("cpu")
        xywh = torch.cat([det.boxes[:, :2], det.boxes[:, 2:] - det.boxes[:, :2]], dim=1)
        name = Path(info["file"]).stem
        write_wider_predictions(out_dir, info["event"], name, xywh, det.scores)
        preds.setdefault(info["event"], {})[name] = torch.cat([xywh, det.scores[:, None]], 1).numpy()
    return preds


def evaluate_detector(model: nn.Module, data_root: str | os.PathLike, gt_dir: str | os.PathLike,
                      out_dir: str | os.PathLike, delta: float = 0.99, device: str = "cpu",
                      limit: int | None = None) -> dict:
    """Predictions + official AP (easy/medium/hard/all) + P/R@δ; also written to ``<out_dir>/metrics.json``."""
    from facelab.data.wider_mat import load_wider_gt
    from facelab.metrics.detection import wider_detection_metrics
    from facelab.metrics.widerface import evaluate

    from facelab.data.wider import WiderFace

    out_dir = Path(out_dir)
    if not 0 <= delta <= 1:  # NaN too
        raise ValueError(f"--delta {delta}: must lie in [0, 1] (a face score threshold)")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder; give a folder")
    # every input is read and checked before the first image is detected or a file written
    gt = load_wider_gt(gt_dir)
    WiderFace(data_root, "val")
    preds = predict_wider(model, data_root, out_dir / "predictions", device=device, limit=limit)
    result = {"ap": evaluate(preds, gt, missing="empty" if limit else "error")["ap"],
              "pr_at_delta": wider_detection_metrics(preds, gt, delta=delta)}
    write_json(out_dir / "metrics.json", result)
    return result


def configure(p: argparse.ArgumentParser) -> None:
    """Options of ``facelab eval-detector``."""
    p.add_argument("--checkpoint", required=True, help="model.pt or last.pt of facelab train-detector")
    p.add_argument("--data-root", required=True, help="WIDER FACE root (wider_face_split/, WIDER_val/images/)")
    p.add_argument("--gt-dir", required=True, help="folder with wider_face_val.mat and wider_*_val.mat")
    p.add_argument("--out", required=True, help="folder for predictions/ and metrics.json")
    p.add_argument("--delta", type=float, default=0.99, help="raw score threshold of P/R@delta (patch paper §3.2)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--limit", type=int, default=None, help="first N val images only (smoke runs)")


def main(args: argparse.Namespace) -> int:
    """``facelab eval-detector``: AP (easy/medium/hard/all) and P/R@delta of a trained checkpoint."""
    from facelab import models
    from facelab.io import default_device

    device = default_device(args.device)
    if not Path(args.gt_dir).is_dir():  # before the checkpoint is read
        raise ValueError(f"--gt-dir {args.gt_dir}: no such folder (wider_face_val.mat and wider_*_val.mat)")
    if not Path(args.data_root).is_dir():
        raise ValueError(f"--data-root {args.data_root}: no such folder (the WIDER FACE root)")
    # an unreadable checkpoint: ValueError naming the file, without PyTorch's unsafe weights_only advice
    try:
        model = models.load("trained", device, checkpoint=args.checkpoint)
    except KeyError:  # readable, but a bare state dict: no model_config to rebuild the detector from
        raise ValueError(f"{args.checkpoint}: not a facelab train-detector checkpoint (no 'model_config'); give the "
                         "model.pt or last.pt that facelab train-detector wrote") from None
    res = evaluate_detector(model, args.data_root, args.gt_dir, args.out, args.delta, device, args.limit)
    print(res["ap"])
    return 0


if __name__ == "__main__":
    from facelab.cli import main as _cli_main  # one error policy: the facelab command's

    sys.exit(_cli_main(["eval-detector", *sys.argv[1:]]))
