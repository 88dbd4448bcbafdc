"""Time face-api's face-analysis nets (face_recognition, age_gender, expression, landmarks68).

    python benchmarks/bench_facenets.py [--batch 8] [--repeat 5] [--device cpu] [--threads 1] [--json out.json]

Times ``forward`` on a batch of random 160x130 face crops (preprocessing included: pad, resize, normalise),
forward+backward to the input pixels, and the single-face pipeline ``describe``/``predict`` on a
640x480 image. Prints the median per-call and per-face milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from facelab.io import write_json
from facelab.models import load

NETS = ["face_recognition", "age_gender", "expression", "landmarks68"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn, repeat: int, device: str) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _scalar(out) -> torch.Tensor:
    return sum(o.float().sum() for o in out) if isinstance(out, tuple) else out.sum()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the timings to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    crops = torch.rand(args.batch, 3, 160, 130, device=args.device)
    image = torch.rand(3, 480, 640, device=args.device)
    box = [200.3, 100.7, 330.2, 260.9]
    results = {"device": args.device, "threads": args.threads, "batch": args.batch, "nets": {}}
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch} crops 160x130")
    print(f"{'net':18s} {'fwd ms/batch':>13s} {'ms/face':>8s} {'fwd+bwd ms/batch':>17s} {'pipeline ms':>12s}")
    for name in NETS:
        net = load(name, device=args.device)
        single = net.describe if name == "face_recognition" else net.predict

        def fwd():
            with torch.no_grad():
                net(crops)

        def fwd_bwd():
            x = crops.clone().requires_grad_(True)
            _scalar(net(x)).backward()

        def pipeline():
            with torch.no_grad():
                single(image, box)

        t_fwd = _median_ms(fwd, args.repeat, args.device)
        t_bwd = _median_ms(fwd_bwd, args.repeat, args.device)
        t_pipe = _median_ms(pipeline, args.repeat, args.device)
        results["nets"][name] = {"forward_ms": t_fwd, "forward_ms_per_face": t_fwd / args.batch,
                                 "forward_backward_ms": t_bwd, "pipeline_ms": t_pipe}
        print(f"{name:18s} {t_fwd:13.1f} {t_fwd / args.batch:8.1f} {t_bwd:17.1f} {t_pipe:12.1f}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
