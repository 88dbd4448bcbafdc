"""Wall time of each chapter's default run (papermill, as ``facelab run``), against the 5-minute goal per chapter
and 25 minutes for all of ``make book``'s runs; the slowest chapter's steps come from its results card timings.

    .venv/bin/python benchmarks/bench_chapters.py [--chapters 02_lip 05_resgn] [--out runs/bench_chapters]

Each chapter runs into a fresh folder (cached adversarial sets or checkpoints of an earlier run are not reused).
Writes ``benchmarks/results/chapters.md``. Measure on an otherwise idle machine: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_CHAPTER_S, GOAL_BOOK_S = 300.0, 1500.0


def main(argv: list[str] | None = None) -> int:
    from facelab.book.runner import run_chapter
    from facelab.experiments import CHAPTERS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chapters", nargs="*", default=list(CHAPTERS), help="chapter ids (default: all)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_chapters"), help="scratch run folder")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "chapters.md"))
    args = ap.parse_args(argv)
    unknown = [c for c in args.chapters if c not in CHAPTERS]
    if unknown:
        ap.error(f"--chapters: unknown {unknown}; known: {list(CHAPTERS)}")

    out = Path(args.out)
    rows, total = [], 0.0
    for ch in args.chapters:
        run_dir = out / ch
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        run_chapter(ROOT / "notebooks" / f"{ch}.ipynb", run_dir, {}, progress_bar=False)
        wall = time.perf_counter() - t0
        total += wall
        card = json.loads((run_dir / "results.json").read_text())
        steps = {k: v for k, v in card.get("timings_s", {}).items() if k != "total"}
        top = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:3])
        rows.append((ch, wall, top))
        print(f"{ch}: {wall:.0f} s ({'within' if wall <= GOAL_CHAPTER_S else 'OVER'} the 5-min goal); {top}",
              flush=True)

    lines = [
        "# Chapter default runs (benchmarks/bench_chapters.py)", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average at the end {os.getloadavg()[0]:.1f}.", "",
        "| chapter | wall (s) | goal 300 s | slowest steps (results card) |", "|---|---|---|---|",
        *[f"| {c} | {w:.0f} | {'met' if w <= GOAL_CHAPTER_S else 'not met'} | {t} |" for c, w, t in rows],
        f"| **all** | {total:.0f} | book goal 1500 s: {'met' if total <= GOAL_BOOK_S else 'not met'} | |", "",
    ]
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
