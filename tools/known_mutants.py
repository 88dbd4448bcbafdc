"""Re-apply the hand-made mutants of issue 19's table and check that the test suite kills each one.

    .venv/bin/python tools/known_mutants.py [--only ID ...] [--list]

Each mutant is one exact source edit (the ``old`` text must occur exactly once, so a refactor that moves the code
fails loudly here instead of silently testing nothing) and the tests that should catch it. For each mutant the
script copies the tracked files of the working tree into a scratch folder, applies the edit, and runs
those tests with ``pytest -x``; the mutant is *killed* when pytest reports a failing test (exit status 1). The
same tests are first run on the unmutated copy and must pass, otherwise a "kill" would mean nothing. mutmut
(``make mutation``) covers metrics/attacks/defenses/assets automatically; this list also reaches the models and
the experiment steps, which mutmut does not mutate (their tests load pretrained nets and are too slow for it).
Exit status 0 when every mutant is killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids / files relative to the repository root
    bug: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant("voc-envelope", "facelab/metrics/widerface.py",
           "mpre = np.fmax.accumulate(mpre[::-1])[::-1]", "mpre = mpre",
           ("tests/test_metrics_widerface.py",), "the VOC precision envelope removed"),
    Mutant("counts-strict", "facelab/metrics/_matching.py",
           'np.searchsorted(s, thresholds, side="left")', 'np.searchsorted(s, thresholds, side="right")',
           ("tests/test_metrics_detection.py",), "precision_recall_at / counts_at count score > δ instead of ≥ δ"),
    Mutant("unit-table-strict", "facelab/metrics/detection.py",
           "keep = s >= delta\n        m = match_detections", "keep = s > delta\n        m = match_detections",
           ("tests/test_metrics_detection.py",), "detection_unit_table keeps score > δ"),
    Mutant("patch-hits-strict", "facelab/metrics/detection.py",
           'as_array(scores, "det_scores") >= delta]', 'as_array(scores, "det_scores") > delta]',
           ("tests/test_metrics_detection.py",), "patch-as-face rate keeps score > δ"),
    Mutant("victim-margin", "facelab/experiments/universal_patches.py",
           "thr = cfg.score_margin_threshold if detector == cfg.victim", "thr = cfg.delta if detector == cfg.victim",
           ("tests/test_experiment_universal_patches.py",), "the victim's sample-set threshold δ − m replaced by δ"),
    Mutant("train-patch-margin", "facelab/experiments/train_patch.py",
           "score_threshold=args.score_margin_threshold,", "score_threshold=args.delta,",
           ("tests/test_train_patch.py",), "train-patch passes δ instead of δ − m to the attack"),
    Mutant("lambda-swap", "facelab/attacks/sample_sets.py",
           "(max_iou(anchors, gt_boxes) > lambda1) | (max_iou(anchors, patch_boxes) > lambda2)",
           "(max_iou(anchors, gt_boxes) > lambda2) | (max_iou(anchors, patch_boxes) > lambda1)",
           ("tests/test_attacks_patch.py",), "λ1 / λ2 swapped in Patch-Combination"),
    Mutant("patch-score-ge", "facelab/attacks/sample_sets.py",
           "return scores > score_threshold\n", "return scores >= score_threshold\n",
           ("tests/test_attacks_patch.py",), "Patch-Score S_i > δ − m became ≥"),
    Mutant("eq1-not-mean", "facelab/attacks/universal_patch.py",
           "return total / max(n_total, 1), n_total", "return total, n_total",
           ("tests/test_attacks_patch.py",), "the Eq. 1 loss not divided by N"),
    Mutant("pr-no-ignore", "facelab/experiments/universal_patches.py",
           "pr = precision_recall_at(dets, gts, delta, ign)", "pr = precision_recall_at(dets, gts, delta, None)",
           ("tests/test_experiment_universal_patches.py",), "P/R computed without the ignore flags"),
    Mutant("units-no-ignore", "facelab/experiments/universal_patches.py",
           "table = detection_unit_table(dets, gts, ign,", "table = detection_unit_table(dets, gts, None,",
           ("tests/test_experiment_universal_patches.py",), "per-unit counts computed without the ignore flags"),
    Mutant("eot-brightness", "facelab/attacks/patch.py",
           "rgb = sampled[:3] * brightness", "rgb = sampled[:3]",
           ("tests/test_attacks_patch.py",), "EOT brightness ignored"),
    Mutant("tiny-nms-strict", "facelab/models/tiny_face_detector.py",
           "remaining = rest[iou <= iou_threshold]", "remaining = rest[iou < iou_threshold]",
           ("tests/test_models_detectors.py",), "Tiny Face Detector NMS keeps IoU < t instead of ≤ t"),
    Mutant("trainable-nms-iou", "facelab/models/base.py",
           "nms_iou: float = 0.5", "nms_iou: float = 0.7",
           ("tests/test_models_detectors.py",), "trainable detectors' NMS IoU 0.5 → 0.7"),
    Mutant("mtcnn-stage1-nms", "facelab/models/mtcnn.py",
           "pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)\n        boxes, inds = boxes[pick], inds[pick]",
           "pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.6)\n        boxes, inds = boxes[pick], inds[pick]",
           ("tests/test_models_mtcnn.py",), "MTCNN stage-1 per-image NMS 0.7 → 0.6"),
    Mutant("asset-hash", "facelab/assets.py",
           "actual = hashlib.sha256(data).hexdigest()\n    if actual != asset.sha256:",
           "actual = hashlib.sha256(data).hexdigest()\n    if False:",
           ("tests/test_assets.py",), "the hash check of the atomic placement disabled"),
)


def scratch_copy(dest: Path) -> None:
    """The working tree's tracked files (as they are now, edits included): some tests read the notebooks."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def checked_scratch_copy(dest: Path) -> None:
    """:func:`scratch_copy`, then check that Python run in ``dest`` imports that copy's facelab (an editable
    install must not shadow it, or every mutant would be tested against the unmutated tree)."""
    scratch_copy(dest)
    env = dict(os.environ, PYTHONPATH=str(dest))
    where = subprocess.run([sys.executable, "-c", "import facelab; print(facelab.__file__)"], cwd=dest, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(dest)):
        raise SystemExit(f"the scratch copy is not the facelab that tests import ({where}); nothing was checked")


def apply(root: Path, m: Mutant, revert: bool = False) -> None:
    path = root / m.file
    text = path.read_text()
    old, new = (m.new, m.old) if revert else (m.old, m.new)
    n = text.count(old)
    if n != 1:
        raise SystemExit(f"{m.id}: {m.file} holds the text to replace {n} times (expected once): {old!r}")
    path.write_text(text.replace(old, new))


def pytest(root: Path, tests: tuple[str, ...], timeout: float | None = None) -> tuple[int | str, float, str]:
    """pytest's exit status (or ``"timeout"`` past ``timeout`` seconds), the seconds it took, its last line."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                            *tests], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, f"no result after {timeout:.0f} s"
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return p.returncode, time.perf_counter() - t0, lines[-1] if lines else p.stderr[-300:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.id in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        ap.error(f"--only: unknown ids {sorted(set(args.only) - {m.id for m in MUTANTS})}")
    if args.list:
        for m in chosen:
            print(f"{m.id:20s} {m.file}: {m.bug}")
        return 0

    with tempfile.TemporaryDirectory(prefix="known-mutants-") as tmp:
        root = Path(tmp)
        checked_scratch_copy(root)
        survivors = []
        for m in chosen:
            apply(root, m)  # checks the text exists once before anything runs
            apply(root, m, revert=True)
            rc, t, tail = pytest(root, m.tests)
            if rc != 0:
                print(f"{m.id}: the unmutated tests do not pass (pytest exit {rc}): {tail}")
                return 2
            apply(root, m)
            try:
                rc, t, tail = pytest(root, m.tests)
            finally:
                apply(root, m, revert=True)
            killed = rc == 1
            if not killed:
                survivors.append(m.id)
            print(f"{m.id:20s} {'killed ' if killed else 'SURVIVED' if rc == 0 else f'exit {rc}'} "
                  f"({t:.0f} s) {m.bug} :: {tail}", flush=True)
    print(f"{len(chosen) - len(survivors)}/{len(chosen)} killed" + (f"; survived: {survivors}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
