"""Per-image CPU inference time of the model-zoo nets in PyTorch vs the original JavaScript.

Each entry of :data:`BENCHES` maps a name to ``setup(batch, height, width) -> run``, where ``run()``
performs one timed forward pass of a batch (add a line to benchmark another net). For the face-api
ports the original ``@vladmandic/face-api`` is timed on the same machine by
``tools/faceapi_reference/bench.js`` (tfjs ``wasm`` backend by default, or ``cpu``: pure JS); both
sides time the net's forward pass including its own preprocessing (pad, resize, normalise) on
random ``height x width`` images. The minimum over ``--repeats`` runs after one warm-up is reported.

Usage: ``.venv/bin/python benchmarks/bench_models.py [--threads 2] [--batches 1,8] [--no-js]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from facelab import assets, models
from facelab.io import write_json

ROOT = Path(__file__).resolve().parents[1]
JS_TOOL = ROOT / "tools" / "faceapi_reference"

Setup = Callable[[int, int, int], Callable[[], object]]


def _detector(name: str, **kwargs) -> Setup:
    def setup(batch: int, height: int, width: int) -> Callable[[], object]:
        model = models.load(name, **kwargs)
        x = torch.rand(batch, 3, height, width)

        def run() -> object:
            with torch.no_grad():
                return model.dense(x)

        return run

    return setup


#: name -> setup(batch, height, width) -> run()
BENCHES: dict[str, Setup] = {
    "ssd_mobilenetv1": _detector("ssd_mobilenetv1"),
    "tiny_face_detector": _detector("tiny_face_detector", input_size=416),
}

#: bench name -> net name in tools/faceapi_reference/bench.js (nets with a JavaScript original)
JS_NETS: dict[str, str] = {"ssd_mobilenetv1": "ssd_mobilenetv1", "tiny_face_detector": "tiny_face_detector"}


def time_torch(setup: Setup, batch: int, height: int, width: int, repeats: int) -> float:
    """Milliseconds per image (min over ``repeats`` after a warm-up)."""
    run = setup(batch, height, width)
    run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / batch


def time_js(nets: list[str], batches: list[int], height: int, width: int, repeats: int, backend: str,
            threads: int) -> dict | None:
    """Run bench.js; its JSON, or None when node or the installed tool is missing."""
    node = shutil.which("node")
    if node is None or not (JS_TOOL / "node_modules" / "@vladmandic" / "face-api").is_dir():
        print("JS side skipped: needs node and `npm ci` in tools/faceapi_reference", file=sys.stderr)
        return None
    model_dir = assets.path("face-api/model/ssd_mobilenetv1_model.bin").parent
    cmd = [node, "bench.js", str(model_dir), "--backend", backend, "--threads", str(threads),
           "--batches", ",".join(map(str, batches)), "--repeats", str(repeats),
           "--height", str(height), "--width", str(width), "--nets", ",".join(nets)]
    proc = subprocess.run(cmd, cwd=JS_TOOL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"JS side failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(BENCHES), help=f"comma list of {', '.join(BENCHES)}")
    parser.add_argument("--batches", default="1,8", help="comma list of batch sizes (default 1,8)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--js-backend", choices=["wasm", "cpu"], default="wasm")
    parser.add_argument("--no-js", action="store_true", help="time only the PyTorch side")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    unknown = [n for n in nets if n not in BENCHES]
    if unknown:
        parser.error(f"--nets: unknown {unknown}; choose from {list(BENCHES)}")
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)

    torch_ms = {n: {b: time_torch(BENCHES[n], b, args.height, args.width, args.repeats) for b in batches}
                for n in nets}
    js = None
    js_nets = [JS_NETS[n] for n in nets if n in JS_NETS]
    if js_nets and not args.no_js:
        js = time_js(js_nets, batches, args.height, args.width, args.repeats, args.js_backend, args.threads)

    js_label = f"JS {js['backend']} x{js['threads']}" if js else "JS"
    print(f"CPU, torch {torch.__version__} threads={args.threads}, image {args.height}x{args.width}; ms per image")
    print(f"{'net':<22}{'batch':>6}{'torch':>10}{js_label:>16}{'JS/torch':>10}")
    rows = []
    for n in nets:
        for b in batches:
            t = torch_ms[n][b]
            j = js["ms_per_image"].get(JS_NETS.get(n, ""), {}).get(str(b)) if js else None
            ratio = j / t if j else None
            rows.append({"net": n, "batch": b, "torch_ms": t, "js_ms": j, "js_over_torch": ratio})
            js_s = f"{j:16.1f}" if j else f"{'-':>16}"
            ratio_s = f"{ratio:10.2f}" if ratio else f"{'-':>10}"
            print(f"{n:<22}{b:>6}{t:10.1f}{js_s}{ratio_s}")
    if args.out:
        write_json(args.out, {"torch_threads": args.threads, "image": [args.height, args.width],
                              "torch": torch.__version__, "js": js, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
