"""Measure how far a chapter's results move under what another CPU changes, and write its reference run.

Float kernels differ across CPUs (MKL / oneDNN pick blocking and summation order from the CPU model), and an
optimisation judged on a few faces can turn a 1e-7 difference into a whole face. So a chapter's default run
is repeated under the perturbations that stand for another machine (*kernel variants*):

* ``threads1`` -- 1 CPU thread instead of 2 (``OMP_NUM_THREADS=1``);
* ``cbwr_compatible``, ``cbwr_avx2`` -- ``MKL_CBWR`` (MKL's conditional numerical reproducibility branches);
* ``jitter1..3`` -- a ±1-ulp jitter of every input pixel (:meth:`facelab.experiments.base.Experiment.jitter`);

and, reported apart (they change the sampled views, not the kernels), *seed variants* ``seed1``, ``seed2``.

The reference file ``facelab/experiments/references/<chapter>.json`` holds the default run's measured numbers
and verdicts, every variant's, the spread (max |variant − default| over kernel variants) and the tolerance
of each number: ``max(2 × spread, floor)`` where the floor is the chapter's resolution (one face instance
for a detection rate). Verdicts that changed in a kernel variant are listed as unstable; the chapter then shows
every verdict seen, and the check accepts any of them.

    python -m facelab.experiments.spread 01_universal_patches            # run missing variants, write reference

Each variant runs in its own process and writes ``<workdir>/<variant>/results.json``; a rerun skips
variants whose card exists with the same parameters (an interrupted measurement resumes).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from facelab.experiments import CHAPTERS
from facelab.experiments.base import reference_path, verdict_of
from facelab.io import write_json

__all__ = ["VARIANTS", "KERNEL_VARIANTS", "measure", "aggregate", "main"]

#: name -> (environment overrides, config overrides)
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "default": ({}, {}),
    "threads1": ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, {"threads": 1}),
    "cbwr_compatible": ({"MKL_CBWR": "COMPATIBLE"}, {}),
    "cbwr_avx2": ({"MKL_CBWR": "AVX2"}, {}),
    "jitter1": ({}, {"ulp_jitter": 1}),
    "jitter2": ({}, {"ulp_jitter": 2}),
    "jitter3": ({}, {"ulp_jitter": 3}),
    "seed1": ({}, {"seed": 1}),
    "seed2": ({}, {"seed": 2}),
}
KERNEL_VARIANTS = ("threads1", "cbwr_compatible", "cbwr_avx2", "jitter1", "jitter2", "jitter3")
SEED_VARIANTS = ("seed1", "seed2")


def _module(chapter: str):
    if chapter not in CHAPTERS:
        raise SystemExit(f"unknown chapter {chapter!r}; chapters: {', '.join(CHAPTERS)}")
    return importlib.import_module(CHAPTERS[chapter])


def run_one(chapter: str, out_dir: str, overrides: dict[str, Any]) -> None:
    """One variant in this process: the chapter's default config with ``overrides``."""
    mod = _module(chapter)
    mod.run(mod.Config(**{**overrides, "out_dir": out_dir}))


def measure(chapter: str, workdir: Path, variants: list[str]) -> dict[str, dict]:
    """Run the missing ``variants`` (one process each) and return their cards."""
    cards = {}
    for name in variants:
        env_over, cfg_over = VARIANTS[name]
        out = workdir / name
        card_path = out / "results.json"
        if card_path.is_file():
            card = json.loads(card_path.read_text())
            mod = _module(chapter)
            want = {**mod.Config().as_dict(), **cfg_over, "out_dir": str(out)}
            if card["parameters"] == json.loads(json.dumps(want)):
                print(f"{name}: done before ({card_path})", flush=True)
                cards[name] = card
                continue
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "facelab.experiments.spread", chapter, "--one", str(out),
               "--set", json.dumps(cfg_over)]
        subprocess.run(cmd, env={**os.environ, **env_over}, check=True)
        cards[name] = json.loads(card_path.read_text())
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return cards


def _verdicts(card: dict) -> dict[str, str]:
    """The verdicts of a card's claims, from their case counts (so the rule in force decides)."""
    return {k: verdict_of(c["met"], c["not met"], c["undecided"]) for k, c in card["claims"].items()}


def aggregate(chapter: str, cards: dict[str, dict], floor: dict[str, float]) -> dict[str, Any]:
    """The reference record from the variant cards (see the module docstring)."""
    ref = cards["default"]
    base = ref["measured"]
    kernel = [v for v in KERNEL_VARIANTS if v in cards]
    spread = {k: max((abs(cards[v]["measured"].get(k, x) - x) for v in kernel), default=0.0) for k, x in base.items()}
    seed_spread = {k: max((abs(cards[v]["measured"][k] - x) for v in SEED_VARIANTS
                           if v in cards and k in cards[v]["measured"]), default=None) for k, x in base.items()}
    verdicts = _verdicts(ref)
    unstable = sorted({k for v in kernel for k, x in _verdicts(cards[v]).items() if x != verdicts.get(k)})
    return {
        "chapter": chapter,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rule": "tolerance = max(2 x kernel spread, floor); floor = the chapter's resolution",
        "machine": ref["machine"],
        "parameters": {k: v for k, v in ref["parameters"].items() if k != "out_dir"},
        "reference": base,
        "spread": spread,
        "seed_spread": seed_spread,
        "tolerance": {k: max(2 * spread[k], floor.get(k, 0.0)) for k in base},
        "verdicts": verdicts,
        "unstable_verdicts": unstable,
        "kernel_variants": kernel,
        "seed_verdicts": {v: _verdicts(cards[v]) for v in SEED_VARIANTS if v in cards},
        "variants": {v: {"env": VARIANTS[v][0], "set": VARIANTS[v][1], "measured": c["measured"],
                         "verdicts": _verdicts(c),
                         "seconds": c["timings_s"].get("total")} for v, c in cards.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facelab.experiments.spread", description=__doc__.split("\n\n")[0])
    p.add_argument("chapter", help=f"one of {', '.join(CHAPTERS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--workdir", default=None, help="where the variant runs go (default runs/spread/<chapter>)")
    p.add_argument("--no-write", action="store_true", help="print the summary, do not write the reference file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--set", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        run_one(a.chapter, a.one, json.loads(a.set))
        return 0
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or "default" not in variants:
        p.error(f"--variants: unknown {bad}" if bad else "--variants must include default")
    workdir = Path(a.workdir or f"runs/spread/{a.chapter}")
    cards = measure(a.chapter, workdir, variants)
    mod = _module(a.chapter)
    rec = aggregate(a.chapter, cards, mod.tolerance_floor(cards["default"]))
    worst = sorted(rec["spread"].items(), key=lambda kv: -kv[1])[:10]
    print("largest kernel spreads:", ", ".join(f"{k} {v:.4f}" for k, v in worst))
    print("unstable verdicts:", rec["unstable_verdicts"] or "none")
    if not a.no_write:
        print("wrote", write_json(reference_path(a.chapter), rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
