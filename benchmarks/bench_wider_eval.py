"""Time the WIDER FACE evaluator (and the patch-paper metrics) on the full validation set.

    python benchmarks/bench_wider_eval.py [--shared ../shared/data/widerface_eval] [--repeat 3]

With the development data (``../shared/data/widerface_eval``: the official .mat files,
``example_predictions/`` and ``expected_ap.json``) it prints the APs, their agreement with the
expected values (must be < 1e-6) and the timings; without it, it times a synthetic set of the
same size (3226 images, ~40k faces, ~32k predictions). Runs on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from facelab.data.wider_mat import load_wider_gt  # noqa: E402
from facelab.metrics.detection import wider_detection_metrics  # noqa: E402
from facelab.metrics.widerface import evaluate, read_predictions  # noqa: E402

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface_eval"


def synthetic(n_images: int = 3226, seed: int = 0) -> tuple[dict, dict]:
    """Random gt (load_wider_gt format) and noisy predictions of about the real set's size."""
    rng = np.random.default_rng(seed)
    gt: dict = {s: {} for s in ("all", "easy", "medium", "hard")}
    preds: dict = {}
    for i in range(n_images):
        ev, name = f"{i % 61}--Event", f"img_{i}"
        n = int(rng.integers(1, 25))
        xy = rng.uniform(0, 900, (n, 2))
        wh = np.exp(rng.uniform(np.log(4), np.log(300), (n, 1))) * [1.0, 1.2]
        boxes = np.round(np.c_[xy, wh])
        gt["all"].setdefault(ev, {})[name] = {"boxes": boxes, "keep": None}
        size = wh[:, 0]
        for s, lim in (("easy", 50), ("medium", 20), ("hard", 8)):
            gt[s].setdefault(ev, {})[name] = {"boxes": boxes, "keep": np.flatnonzero(size >= lim) + 1}
        hit = rng.random(n) < 0.6
        p_true = boxes[hit] + rng.normal(0, 2, (int(hit.sum()), 4))
        p_bg = np.c_[rng.uniform(0, 900, (n // 3, 2)), rng.uniform(5, 80, (n // 3, 2))]
        pb = np.r_[p_true, p_bg]
        sc = np.r_[rng.beta(5, 2, len(p_true)), rng.beta(2, 5, len(p_bg))]
        preds.setdefault(ev, {})[name] = np.c_[pb, sc]
    return gt, preds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    expected = None
    t = {}
    if (args.shared / "expected_ap.json").is_file():
        expected = json.loads((args.shared / "expected_ap.json").read_text())
        t0 = time.perf_counter()
        gt = load_wider_gt(args.shared)
        t["load_gt_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = read_predictions(args.shared / expected.get("predictions", "example_predictions"))
        t["read_predictions_s"] = time.perf_counter() - t0
        source = str(args.shared)
    else:
        print(f"{args.shared} not found: timing a synthetic set instead")
        gt, preds = synthetic()
        source = "synthetic"
    n_img = sum(len(ev) for ev in gt["all"].values())
    n_faces = sum(len(r["boxes"]) for ev in gt["all"].values() for r in ev.values())
    n_pred = sum(len(p) for ev in preds.values() for p in ev.values())
    print(f"{source}: {n_img} images, {n_faces} faces, {n_pred} predictions")

    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = evaluate(preds, gt)
        runs.append(time.perf_counter() - t0)
    t["evaluate_4_settings_s_best"] = min(runs)
    t0 = time.perf_counter()
    pr = wider_detection_metrics(preds, gt, delta=0.99)
    t["wider_detection_metrics_s"] = time.perf_counter() - t0

    ok = True
    for s in ("easy", "medium", "hard", "all"):
        line = f"{s:<7} AP {res['ap'][s]:.10f}"
        if expected is not None:
            diff = abs(res["ap"][s] - expected[s])
            ok &= diff < 1e-6
            line += f"  expected {expected[s]:.10f}  |diff| {diff:.2e} {'OK' if diff < 1e-6 else 'MISMATCH'}"
        line += f"   P/R@0.99 {pr[s]['precision']:.4f}/{pr[s]['recall']:.4f}  AF0.5 {pr[s]['afbeta'][0.5]:.4f}"
        print(line)
    for k, v in t.items():
        print(f"{k}: {v:.3f}")
    if expected is not None:
        print("agreement with expected_ap.json:", "OK (< 1e-6)" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
