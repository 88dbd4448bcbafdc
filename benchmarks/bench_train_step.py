"""Per-step training cost of each trainable detector (forward + loss + backward + SGD step).

    python benchmarks/bench_train_step.py --size 256 --batch 2 --steps 3 --threads 1 [--device cuda]

Prints one JSON line per architecture: median seconds per step after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from facelab.models.detection import ARCHS, build_detector


def bench(arch: str, backbone: str, size: int, batch: int, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    model = build_detector(arch, backbone).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.rand(batch, 3, size, size, device=device)
    s = size / 4
    targets = [torch.tensor([[s, s, 2 * s, 2 * s], [2.5 * s, s, 3 * s, 1.5 * s]], device=device)] * batch
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model.compute_loss(images, targets, gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"arch": arch, "backbone": backbone, "size": size, "batch": batch, "device": device,
            "threads": torch.get_num_threads(), "s_per_step": statistics.median(times[1:]), "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archs", nargs="*", default=list(ARCHS))
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for arch in a.archs:
        print(json.dumps(bench(arch, a.backbone, a.size, a.batch, a.steps, a.device)), flush=True)


if __name__ == "__main__":
    main()
