"""Per-instance gradients for LIP: the naive loop (one forward + backward per face) against the batched forms of
:func:`facelab.attacks.lip.instance_gradients` (replicated batch, ``is_grads_batched`` vmap, grouped copies).

    .venv/bin/python benchmarks/bench_instance_gradients.py [--detector blazeface] [--faces 4 9 16] [--repeats 3]

Prints, per number of faces, the median wall time of each mode and the largest difference from the loop's
gradients (every mode must agree with it; ``group`` only inside each face's region, and exactly only when the
regions lie further apart than the theoretical receptive field -- here ``reach`` = 0, the fastest grouping, so
its error is shown, not hidden). Runs on CUDA when present (``--device``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from facelab import models
from facelab.attacks.lip import dense_of, disc_regions, instance_gradients, instance_losses, region_groups
from facelab.data.scenes import make_scene
from facelab.io import default_device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="blazeface")
    ap.add_argument("--faces", type=int, nargs="+", default=[4, 9, 16])
    ap.add_argument("--distance", type=float, default=40.0, help="centre distance in scene pixels")
    ap.add_argument("--face-size", type=float, default=32.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = default_device(a.device)
    model = models.load(a.detector, dev)
    print(f"{a.detector} on {dev}, {a.threads} threads; median of {a.repeats} runs (s); max |g - g_loop|")
    print(f"{'faces':>5} {'loop':>8} {'replicate':>10} {'vmap':>8} {'group':>8}   speed-up (loop / best)   max error")
    for n in a.faces:
        sc = make_scene(n, a.distance, face_size=a.face_size, seed=0)
        x = sc.image[None].to(dev)
        gts = [sc.boxes.to(dev)]

        def losses(X: torch.Tensor) -> torch.Tensor:
            return torch.stack(instance_losses(dense_of(model, X), gts * X.shape[0]))

        H, W = x.shape[-2:]
        masks = disc_regions((sc.boxes[:, :2] + sc.boxes[:, 2:]) / 2, a.face_size / 2, (H, W)).to(dev)
        groups = region_groups(masks.cpu(), 0.0)
        times: dict[str, float] = {}
        grads: dict[str, torch.Tensor] = {}
        for mode in ("loop", "replicate", "vmap", "group"):
            ts = []
            for _ in range(a.repeats):
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                g = instance_gradients(losses, x, mode, masks=masks, groups=groups)
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                ts.append(time.perf_counter() - t)
            times[mode], grads[mode] = statistics.median(ts), g
        ref = grads["loop"]
        err = {m: float((g - (ref * masks[:, None] if m == "group" else ref)).abs().max()) for m, g in grads.items()}
        best = min(("replicate", "vmap"), key=times.get)
        print(f"{n:>5} {times['loop']:>8.3f} {times['replicate']:>10.3f} {times['vmap']:>8.3f} {times['group']:>8.3f}"
              f"   {times['loop'] / times[best]:>5.2f}x ({best}, {len(groups)} groups)   "
              + ", ".join(f"{m} {e:.1e}" for m, e in err.items() if m != "loop"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
