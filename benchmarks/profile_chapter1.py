"""Where chapter 1's default run spends its time (the slowest chapter): step timings, per-patch training times
and a ``torch.profiler`` operator table of its most expensive patch trainings.

    .venv/bin/python benchmarks/profile_chapter1.py [--threads 2] [--top 20] [--trace ch1.json] [--skip-full]

1. Runs the chapter in-process at its defaults (no profiler) and lists its step timings and every patch training
   (detector, method, init, alpha, location, epochs) with its seconds.
2. Re-trains the two most expensive settings and evaluates the victim once under ``torch.profiler`` (CPU, no
   shapes or stacks: a whole-run profile holds tens of millions of events and needs > 20 GB), and prints the top
   operators by self CPU time with their share of the profiled time.

Writes ``benchmarks/results/profile_01_universal_patches.md``. Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from facelab.experiments import universal_patches as ch1

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--top", type=int, default=20, help="operators listed")
    ap.add_argument("--trace", default=None, help="also write a Chrome trace of the profiled part here")
    ap.add_argument("--skip-full", action="store_true", help="skip step 1 (profile the victim's default training)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "profile_01_universal_patches.md"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    lines = ["# Profile of chapter 1's default run (benchmarks/profile_chapter1.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ch1.Config(out_dir=tmp)
        if not args.skip_full:
            t0 = time.perf_counter()
            exp = ch1.run(cfg)
            wall = time.perf_counter() - t0
            trainings = sorted(exp.train_time.items(), key=lambda kv: -kv[1])
            steps = sorted(exp.timer.timings.items(), key=lambda kv: -kv[1])
            lines += [f"## 1. The default run, no profiler: {wall:.1f} s in-process", "",
                      "| step | s |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in steps], "",
                      f"{len(trainings)} patch trainings, {sum(v for _, v in trainings):.1f} s in all:", "",
                      "| detector | method | init | alpha | location | epochs | s | s / epoch |", "|---|---|---|---|---|---|---|---|",
                      *[f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {k[5]} | {v:.2f} | {v / max(k[5], 1):.3f} |"
                        for k, v in trainings], ""]
            profiled = [trainings[0][0], trainings[1][0]]
        else:
            exp = ch1.UniversalPatchesExperiment(cfg, progress=False)
            profiled = [(cfg.victim, "patch_iou", "noise", round(cfg.alpha, 4), cfg.location, cfg.epochs)]
        exp.patches.clear()
        exp._clean.clear()
        exp.train_patch(*profiled[0][:3], alpha=profiled[0][3], location=profiled[0][4], epochs=1)  # warm-up
        exp.patches.clear()
        t0 = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for key in profiled:
                det, method, init, alpha, loc, epochs = key
                p = exp.train_patch(det, method, init, alpha=alpha, location=loc, epochs=epochs)
            exp.evaluate(p, profiled[0][0])
        wall = time.perf_counter() - t0
    if args.trace:
        prof.export_chrome_trace(args.trace)
    events = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)
    self_s = sum(e.self_cpu_time_total for e in events) / 1e6
    lines += [f"## 2. Under torch.profiler: {', '.join(f'{k[0]} {k[1]} {k[2]} x{k[5]} epochs' for k in profiled)}, "
              f"then one evaluation: {wall:.1f} s", "",
              f"Torch operators account for {self_s:.1f} s of self CPU time ({100 * self_s / wall:.0f} % of the "
              "profiled wall; the rest is Python between operators).", "",
              "| operator | calls | self CPU (s) | share of profiled wall |", "|---|---|---|---|",
              *[f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | "
                f"{100 * e.self_cpu_time_total / 1e6 / wall:.1f} % |" for e in events[:args.top]], ""]
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
