"""End to end: ``facelab eval-detector`` on a checkpoint of a tiny SLN trained for two steps on a
synthetic WIDER-layout dataset, scored against tiny official-format ``.mat`` ground-truth files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat

from facelab.data.wider import WiderFace
from facelab.models.detection.train import TrainConfig, train_detector
from facelab.models.detection.wider_layout import write_synthetic_wider

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _cell(items: list) -> np.ndarray:
    a = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        a[i, 0] = x
    return a


def write_gt_mats(root: Path, gt_dir: Path) -> dict[tuple[str, str], int]:
    """The four official val files (eval_tools/ground_truth nesting) for the synthetic val split.

    Settings: easy keeps each image's first face, medium and hard keep all. Returns faces per image.
    """
    ds = WiderFace(root, "val")
    faces: dict[str, dict[str, np.ndarray]] = {}
    for i in range(len(ds)):
        _, _, info = ds[i]
        faces.setdefault(info["event"], {})[Path(info["file"]).stem] = info["boxes_xywh"].numpy().astype(np.int32)
    events = sorted(faces)
    base = {
        "event_list": _cell([np.array([e]) for e in events]),
        "file_list": _cell([_cell([np.array([n]) for n in faces[e]]) for e in events]),
        "face_bbx_list": _cell([_cell([b.reshape(-1, 4) for b in faces[e].values()]) for e in events]),
    }
    gt_dir.mkdir(parents=True, exist_ok=True)
    savemat(gt_dir / "wider_face_val.mat", base)
    for s in ("easy", "medium", "hard"):
        keep = [_cell([np.arange(1, min(len(b), 1 if s == "easy" else len(b)) + 1, dtype=np.uint8).reshape(-1, 1)
                       for b in faces[e].values()]) for e in events]
        savemat(gt_dir / f"wider_{s}_val.mat", {**base, "gt_list": _cell(keep)})
    return {(e, n): len(b) for e in events for n, b in faces[e].items()}


def test_eval_detector_cli_end_to_end(tmp_path):
    root = tmp_path / "wider"
    write_synthetic_wider(root, "train", n_images=2, size=(64, 64), face_sizes=(16, 32), seed=3)
    write_synthetic_wider(root, "val", n_images=3, size=(64, 64), face_sizes=(16, 32), seed=4)
    n_faces = write_gt_mats(root, tmp_path / "gt")
    assert len(n_faces) == 3 and sum(n_faces.values()) >= 3

    cfg = TrainConfig(data_root=str(root), out_dir=str(tmp_path / "run"), epochs=1, batch_size=2, crop=64,
                      workers=0, warmup_iters=1, max_steps_per_epoch=2, model_kwargs={"channels": 16},
                      progress=False, device="cpu")
    _, hist = train_detector(cfg)
    assert hist[-1]["global_step"] == 1  # 2 images / batch 2
    ckpt = tmp_path / "run" / "model.pt"
    assert ckpt.is_file()

    out = tmp_path / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "facelab", "eval-detector", "--checkpoint", str(ckpt), "--data-root", str(root),
         "--gt-dir", str(tmp_path / "gt"), "--out", str(out), "--device", "cpu", "--delta", "0.0"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # one official prediction file per val image: name line, count line, "x y w h score" lines
    files = sorted((out / "predictions").rglob("*.txt"))
    assert {(f.parent.name, f.stem) for f in files} == set(n_faces)
    n_pred = 0
    for f in files:
        lines = f.read_text().splitlines()
        assert lines[0] == f.stem and int(lines[1]) == len(lines) - 2
        assert all(len(ln.split()) == 5 for ln in lines[2:])
        n_pred += len(lines) - 2
    assert n_pred > 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ap"]) == {"easy", "medium", "hard", "all"}
    for s, ap in metrics["ap"].items():
        assert 0.0 <= ap <= 1.0, (s, ap)
    pr = metrics["pr_at_delta"]
    assert set(pr) == {"easy", "medium", "hard", "all"}
    total = sum(n_faces.values())
    assert pr["all"]["n_faces"] == pr["hard"]["n_faces"] == total and pr["easy"]["n_faces"] == len(n_faces)
    assert pr["all"]["n_detections"] == n_pred  # delta 0: every written detection counts in "all"
    for s, m in pr.items():
        assert 0.0 <= m["recall"] <= 1.0 and m["tp"] <= m["n_faces"], (s, m)
        assert m["tp"] + m["fp"] <= m["n_detections"], (s, m)
    assert "easy" in proc.stdout  # the AP dict is printed
