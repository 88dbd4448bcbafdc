"""Zoo inference paths on CPU: eager ports vs ONNX Runtime, TorchScript (freeze + optimize_for_inference), torch.compile
and channels-last, against the original JavaScript, at 1 and 2 threads and batch 1 and 8 (issue 18).

    nice -n 10 .venv/bin/python benchmarks/bench_zoo_onnx.py [--nets ...] [--threads 1,2] [--batches 1,8]
        [--paths eager,ort,jit,channels_last,compile] [--repeats 3] [--out benchmarks/results/zoo_onnx.md]

Every path runs the same computation, the tensors-only view of :mod:`facelab.models.export` (detectors: ``dense``
-> boxes and scores, no NMS; face nets: ``forward``), on the inputs of ``benchmarks/bench_models.py``
(detectors on random 480x640 images, face nets on random 160x130 crops):

* ``eager``: the port as ``detect`` / ``predict`` run it today;
* ``ort``: ONNX Runtime 1.31 (CPU provider, ``intra_op_num_threads`` = threads, all graph optimisations) on the
  graph from ``torch.onnx.export`` at that batch and shape (the "graph runtime" limit of the issue);
* ``jit``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference`` (folds constants and
  converts convolutions to oneDNN with fused elementwise ops: the oneDNN-fusion path);
* ``channels_last``: the module's weights and the input in channels-last memory format, eager;
* ``compile``: ``torch.compile`` (inductor, CPU, static shapes); its compile time is reported separately
  (inductor's cache makes a second process faster).

Every path is checked against eager (max |Δ| relative to the output's scale <= 1e-3) before it is timed. JS:
``tools/faceapi_reference/bench.js`` / ``tools/human_reference/bench.js`` (tfjs wasm, single-threaded in Node)
in the same run, through ``bench_models.time_js``; skipped when node or ``npm ci`` is missing.

Reported per image: the wall-clock minimum over ``--repeats`` runs after one warm-up (CPU time of that run in
the JSON). The machine may be shared: the load average is printed; compare paths within one row.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_models import JS_NETS, time_js  # noqa: E402

from facelab.models.export import example_input, export_onnx, load_view  # noqa: E402

FACEAPI_NETS = ["ssd_mobilenetv1", "tiny_face_detector", "face_recognition", "age_gender", "expression", "landmarks68"]
PATHS = ["eager", "ort", "jit", "channels_last", "compile"]
TOL = 1e-3


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def _err(out, ref) -> float:
    out = out if isinstance(out, (tuple, list)) else (out,)
    return max(float((torch.as_tensor(o) - r).abs().max() / r.abs().max().clamp(min=1)) for o, r in zip(out, ref))


def build_path(path: str, view: torch.nn.Module, x: torch.Tensor, threads: int,
               cache: dict) -> tuple[Callable[[], object], float]:
    """(run, seconds spent building it) for ``path`` on ``view`` and input ``x``."""
    t0 = time.perf_counter()
    if path == "eager":
        return (lambda: view(x)), 0.0
    if path == "ort":
        import onnxruntime as ort

        key = ("onnx", id(view), tuple(x.shape))
        if key not in cache:
            cache[key] = export_onnx(view, x)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(cache[key], so, providers=["CPUExecutionProvider"])
        feed = {"images": x.numpy()}
        return (lambda: sess.run(None, feed)), time.perf_counter() - t0
    if path == "jit":
        key = ("jit", id(view), tuple(x.shape))
        if key not in cache:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(view, (x,), check_trace=False)
                cache[key] = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        m = cache[key]
        return (lambda: m(x)), time.perf_counter() - t0
    if path == "channels_last":
        m = copy.deepcopy(view).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        return (lambda: m(xc)), time.perf_counter() - t0
    if path == "compile":
        key = ("compile", id(view), tuple(x.shape))
        if key not in cache:
            cache[key] = torch.compile(view, dynamic=False)
        m = cache[key]
        m(x)  # compile (or recompile for this thread count) now, so it is not in the timing
        return (lambda: m(x)), time.perf_counter() - t0
    raise ValueError(f"unknown path {path!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default=",".join(FACEAPI_NETS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--paths", default="eager,ort,jit,channels_last",
                   help=f"comma list of {PATHS} (compile is off by default: minutes of compile time per net on 2 "
                        "shared cores)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-js", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "zoo_onnx.md")
    a = p.parse_args(argv)
    nets = [n for n in a.nets.split(",") if n]
    threads = [int(t) for t in a.threads.split(",")]
    batches = [int(b) for b in a.batches.split(",")]
    paths = [q for q in a.paths.split(",") if q]
    if "eager" not in paths:
        paths.insert(0, "eager")
    bad = [q for q in paths if q not in PATHS]
    if bad:
        p.error(f"--paths: unknown {bad}; choose from {PATHS}")

    load0, t_start = os.getloadavg(), time.time()
    rows, cache = [], {}
    for n in nets:
        view = load_view(n)
        for b in batches:
            x = example_input(n, b)
            with torch.inference_mode():
                ref = view(x)
            for t in threads:
                torch.set_num_threads(t)
                row = {"net": n, "batch": b, "threads": t}
                for q in paths:
                    try:
                        with torch.inference_mode() if q != "compile" else torch.no_grad():
                            run, build_s = build_path(q, view, x, t, cache)
                            err = _err(run(), ref)
                            if err > TOL:
                                raise RuntimeError(f"differs from eager by {err:.2g}")
                            wall, cpu = _best(run, a.repeats)
                        row[q] = 1000 * wall / b
                        row[q + "_cpu"] = 1000 * cpu / b
                        row[q + "_err"] = err
                        if q == "compile":
                            row["compile_s"] = build_s
                    except Exception as e:  # noqa: BLE001 - a path that fails is reported, not fatal
                        row[q] = None
                        row[q + "_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    torch.set_num_threads(threads[0])

    js_runs: dict[str, dict] = {}
    if not a.no_js:
        js_args = argparse.Namespace(js_backend="wasm", threads=1, repeats=a.repeats, height=480, width=640,
                                     crop_height=160, crop_width=130)
        for tool in ("faceapi", "human"):
            tool_nets = [JS_NETS[n][1] for n in nets if n in JS_NETS and JS_NETS[n][0] == tool]
            if tool_nets:
                out = time_js(tool, tool_nets, batches, js_args)
                if out is not None:
                    js_runs[tool] = out
    load1 = os.getloadavg()

    def js_ms(n: str, b: int, key: str = "ms_per_image") -> float | None:
        tool, name = JS_NETS.get(n, ("", ""))
        run = js_runs.get(tool)
        return run.get(key, {}).get(name, {}).get(str(b)) if run else None

    def f(v: float | None, prec: int = 1) -> str:
        return "-" if v is None else f"{v:.{prec}f}"

    head = ["net", "batch", "threads", *[f"{q} wall / CPU" for q in paths], "best (CPU)", "eager / ORT (CPU)",
            "JS wall / CPU", "JS / eager (CPU)", "JS / best (CPU)"]
    lines = [
        "# Zoo inference paths: eager vs ONNX Runtime, TorchScript, channels-last (and torch.compile) vs the JS",
        "",
        "Command: `nice -n 10 .venv/bin/python benchmarks/bench_zoo_onnx.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"- {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
        + (f"onnxruntime {__import__('onnxruntime').__version__}; " if "ort" in paths else "")
        + (f"JS: tfjs {next(iter(js_runs.values()))['tfjs']} {next(iter(js_runs.values()))['backend']}, "
           f"{next(iter(js_runs.values()))['threads']} thread, in this run" if js_runs else "JS: not run"),
        f"- **Shared machine**: load average (1/5/15 min) {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} before, "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} after ({time.time() - t_start:.0f} s); other jobs ran "
        "meanwhile, so wall times are inflated and noisy. The CPU time of the fastest run (all threads of the "
        "process) is the steadier measure and picks the best path; at 2 threads it also counts the second "
        "thread's (and any spinning) time, so it cannot show a parallel speed-up.",
        "- ms per image, fastest of the repeats after a warm-up; detectors `dense` on 480x640 images (no NMS), face "
        "nets `forward` on 160x130 crops; JS = the original (face-api / Human, tfjs wasm, single-threaded in "
        "Node) on the same sizes.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for r in rows:
        timed = {q: r[q + "_cpu"] for q in paths if r.get(q) is not None}
        best = min(timed, key=timed.get) if timed else None
        j, jc = js_ms(r["net"], r["batch"]), js_ms(r["net"], r["batch"], "cpu_ms_per_image")
        cells = [r["net"], str(r["batch"]), str(r["threads"]),
                 *[f"{f(r.get(q))} / {f(r.get(q + '_cpu'))}" if r.get(q) is not None else "-" for q in paths],
                 best or "-",
                 f(r["eager_cpu"] / r["ort_cpu"] if r.get("ort") and r.get("eager") else None, 2),
                 f"{f(j)} / {f(jc)}" if j else "-",
                 f(jc / r["eager_cpu"] if jc and r.get("eager") else None, 2),
                 f(jc / timed[best] if jc and best else None, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [(r["net"], r["batch"], r["threads"], q, r[q + "_error"]) for r in rows for q in paths
              if r.get(q + "_error")]
    if errors:
        lines += ["", "Paths that failed:", ""] + [f"- {n} b{b} t{t} {q}: {e}" for n, b, t, q, e in errors]
    compile_s = [(r["net"], r["batch"], r["threads"], r["compile_s"]) for r in rows if "compile_s" in r]
    if compile_s:
        lines += ["", "torch.compile build time (s): "
                  + ", ".join(f"{n} b{b} t{t}: {s:.0f}" for n, b, t, s in compile_s)]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "js": js_runs, "loadavg": [load0, load1]},
                                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
