"""Per-image CPU inference time of the model-zoo nets in PyTorch vs the original JavaScript.

Each entry of :data:`BENCHES` maps a name to ``setup(batch, args) -> run``, where ``run()`` performs one
timed forward pass of a batch (add a line to benchmark another net). Inputs:

* detectors (``ssd_mobilenetv1``, ``tiny_face_detector``): ``dense()`` on random ``--height x --width``
  images (the net incl. its own pad / resize / normalisation, no NMS);
* ``mtcnn``: the whole cascade (``detect``) on a demo photo resized to ``--height x --width`` (its cost
  depends on the content; it has no JavaScript original);
* face-analysis nets (``face_recognition``, ``age_gender``, ``expression``, ``landmarks68``): ``forward``
  on random ``--crop-height x --crop-width`` face crops (incl. pad / resize / normalisation);
* Human-library graph models (``facelab.models.human``): ``blazeface``, ``blazeface_front`` and
  ``centernet`` run ``detect`` (net, decoding and NMS, as Human's JS does per frame), the face nets
  (``mobilefacenet``, ``faceres``, ``faceres_deep``, ``gear``, ``ssrnet_age``, ``human_gender``, ``emotion``)
  ``forward`` on random crops.

The originals are timed on the same machine and the same input sizes: face-api's nets
(``@vladmandic/face-api``) by ``tools/faceapi_reference/bench.js``, Human's graph models (Human's own
preprocessing and decoding, one call per face or frame) by ``tools/human_reference/bench.js``; tfjs ``wasm``
backend by default, or ``cpu`` (pure JS), with the same number of threads asked for (in Node, tfjs-wasm runs
single-threaded whatever is asked: the JSON's ``threads`` says what it used). Reported per image: the
wall-clock minimum over ``--repeats`` runs after one warm-up, and the CPU time (process user+sys, all
threads) of that fastest run. On a shared machine the CPU time is the more stable number; the load average
(``os.getloadavg``) is printed before and after.

Usage: ``.venv/bin/python benchmarks/bench_models.py [--threads 1] [--batches 1,8] [--nets ...] [--no-js]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from facelab import assets, models
from facelab.io import write_json

ROOT = Path(__file__).resolve().parents[1]
#: tool -> (folder, a package its node_modules must hold, an asset in the model folder it reads)
JS_TOOLS = {
    "faceapi": (ROOT / "tools" / "faceapi_reference", "@vladmandic/face-api", "face-api/model/ssd_mobilenetv1_model.bin"),
    "human": (ROOT / "tools" / "human_reference", "@tensorflow/tfjs", "human-models/models/blazeface-back.json"),
}

Run = Callable[[], object]
Setup = Callable[[int, argparse.Namespace], Run]


def _detector(name: str, **kwargs) -> Setup:
    def setup(batch: int, args: argparse.Namespace) -> Run:
        model = models.load(name, **kwargs)
        x = torch.rand(batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
        return lambda: model.dense(x)

    return setup


def _mtcnn(batch: int, args: argparse.Namespace) -> Run:
    from PIL import Image

    with Image.open(assets.path("face-api/demo/sample1.jpg")) as im:
        rgb = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
        photo = rgb.view(im.height, im.width, 3).permute(2, 0, 1).float()[None] / 255
    photo = F.interpolate(photo, (args.height, args.width), mode="bilinear", antialias=True).clamp(0, 1)
    model = models.load("mtcnn")
    x = photo.expand(batch, -1, -1, -1).contiguous()
    return lambda: model.detect(x)


def _detect(name: str) -> Setup:
    def setup(batch: int, args: argparse.Namespace) -> Run:
        model = models.load(name)
        x = torch.rand(batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
        return lambda: model.detect(x)

    return setup


def _face_net(name: str, **kwargs) -> Setup:
    def setup(batch: int, args: argparse.Namespace) -> Run:
        model = models.load(name, **kwargs)
        crops = torch.rand(batch, 3, args.crop_height, args.crop_width, generator=torch.Generator().manual_seed(0))
        return lambda: model(crops)

    return setup


#: name -> setup(batch, args) -> run()
BENCHES: dict[str, Setup] = {
    "ssd_mobilenetv1": _detector("ssd_mobilenetv1"),
    "tiny_face_detector": _detector("tiny_face_detector", input_size=416),
    "mtcnn": _mtcnn,
    "face_recognition": _face_net("face_recognition"),
    "age_gender": _face_net("age_gender"),
    "expression": _face_net("expression"),
    "landmarks68": _face_net("landmarks68"),
    "blazeface": _detect("blazeface"),
    "blazeface_front": _detect("blazeface_front"),
    "centernet": _detect("centernet"),
    "mobilefacenet": _face_net("mobilefacenet"),
    "faceres": _face_net("faceres"),
    "faceres_deep": _face_net("faceres_deep"),
    "gear": _face_net("gear"),
    "ssrnet_age": _face_net("ssrnet_age"),
    "human_gender": _face_net("human_gender"),
    "emotion": _face_net("emotion"),
}

#: bench name -> (tool, net name in that tool's bench.js) for the nets with a JavaScript original
JS_NETS: dict[str, tuple[str, str]] = {
    **{n: ("faceapi", n) for n in ("ssd_mobilenetv1", "tiny_face_detector", "face_recognition", "age_gender",
                                   "expression", "landmarks68")},
    "blazeface": ("human", "blazeface-back"), "blazeface_front": ("human", "blazeface-front"),
    "centernet": ("human", "centernet"),
    "mobilefacenet": ("human", "mobilefacenet"), "faceres": ("human", "faceres"),
    "faceres_deep": ("human", "faceres-deep"),
    "gear": ("human", "gear"),
    "ssrnet_age": ("human", "age"), "human_gender": ("human", "gender"), "emotion": ("human", "emotion"),
}


def time_torch(setup: Setup, batch: int, args: argparse.Namespace) -> tuple[float, float]:
    """(wall ms, CPU ms) per image of the fastest of ``args.repeats`` runs after a warm-up."""
    run = setup(batch, args)
    with torch.inference_mode():
        run()
        best = (float("inf"), float("inf"))
        for _ in range(args.repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            t, c = time.perf_counter() - t0, time.process_time() - c0
            best = min(best, (t, c))
    return best[0] * 1000 / batch, best[1] * 1000 / batch


def time_js(tool: str, nets: list[str], batches: list[int], args: argparse.Namespace) -> dict | None:
    """Run ``tool``'s bench.js; its JSON, or None when node or the installed tool is missing."""
    folder, package, asset = JS_TOOLS[tool]
    node = shutil.which("node")
    if node is None or not (folder / "node_modules" / package).is_dir():
        print(f"JS side of {tool} skipped: needs node and `npm ci` in {folder.relative_to(ROOT)}", file=sys.stderr)
        return None
    model_dir = assets.path(asset).parent
    cmd = [node, "bench.js", str(model_dir), "--backend", args.js_backend, "--threads", str(args.threads),
           "--batches", ",".join(map(str, batches)), "--repeats", str(args.repeats),
           "--height", str(args.height), "--width", str(args.width),
           "--crop-height", str(args.crop_height), "--crop-width", str(args.crop_width), "--nets", ",".join(nets)]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"JS side failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v: float | None, width: int, prec: int = 1) -> str:
    return f"{v:{width}.{prec}f}" if v is not None else f"{'-':>{width}}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(BENCHES), help=f"comma list of {', '.join(BENCHES)}")
    parser.add_argument("--batches", default="1,8", help="comma list of batch sizes (default 1,8)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads and JS wasm threads (default 1: a shared 2-core machine)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=480, help="detector image height (default 480)")
    parser.add_argument("--width", type=int, default=640, help="detector image width (default 640)")
    parser.add_argument("--crop-height", type=int, default=160, help="face crop height (default 160)")
    parser.add_argument("--crop-width", type=int, default=130, help="face crop width (default 130)")
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

    load_before = os.getloadavg()
    torch_ms = {n: {b: time_torch(BENCHES[n], b, args) for b in batches} for n in nets}
    js_runs: dict[str, dict] = {}
    for tool in JS_TOOLS:
        tool_nets = [JS_NETS[n][1] for n in nets if n in JS_NETS and JS_NETS[n][0] == tool]
        if tool_nets and not args.no_js:
            out = time_js(tool, tool_nets, batches, args)
            if out is not None:
                js_runs[tool] = out
    load_after = os.getloadavg()
    js = next(iter(js_runs.values()), None)  # backend / threads / tfjs are the same for both tools

    js_label = f"JS {js['backend']} x{js['threads']}" if js else "JS"
    print(f"CPU {os.cpu_count()} cores, load avg (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
          f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(f"torch {torch.__version__} threads={torch.get_num_threads()}; {js_label}"
          f"{' (tfjs ' + js['tfjs'] + ')' if js else ''}; detectors on "
          f"{args.height}x{args.width} images, face nets on {args.crop_height}x{args.crop_width} crops")
    print("ms per image: wall = fastest of the repeats, cpu = CPU time of that run (more stable under load)")
    print(f"{'net':<20}{'batch':>6}{'torch wall':>12}{'torch cpu':>11}{'JS wall':>10}{'JS cpu':>9}"
          f"{'JS/torch wall':>15}{'JS/torch cpu':>14}")
    rows = []
    for n in nets:
        for b in batches:
            t, tc = torch_ms[n][b]
            tool, key = JS_NETS.get(n, ("", ""))
            run = js_runs.get(tool)
            j = run["ms_per_image"].get(key, {}).get(str(b)) if run else None
            jc = run.get("cpu_ms_per_image", {}).get(key, {}).get(str(b)) if run else None
            ratio = j / t if j else None
            ratio_c = jc / tc if jc and tc > 0 else None
            rows.append({"net": n, "batch": b, "torch_ms": t, "torch_cpu_ms": tc, "js_ms": j, "js_cpu_ms": jc,
                         "js_over_torch": ratio, "js_over_torch_cpu": ratio_c})
            print(f"{n:<20}{b:>6}{_fmt(t, 12)}{_fmt(tc, 11)}{_fmt(j, 10)}{_fmt(jc, 9)}{_fmt(ratio, 15, 2)}"
                  f"{_fmt(ratio_c, 14, 2)}")
    if args.out:
        write_json(args.out, {"torch_threads": args.threads, "image": [args.height, args.width],
                              "crop": [args.crop_height, args.crop_width], "torch": torch.__version__,
                              "loadavg_before": load_before, "loadavg_after": load_after, "js": js_runs, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
