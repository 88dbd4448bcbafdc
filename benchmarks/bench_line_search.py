"""Batched line search (facelab.attacks.line_search.line_search) against the textbook loop (line_search_naive:
one forward pass per image and step) on a real attribute net and the bundled faces (chapter 4's setting).

    python benchmarks/bench_line_search.py --net human_gender --faces 16 --method FFA --threads 2

Prints one JSON line: wall and CPU seconds and images passed through the net for each, the speed-ups, and
whether both found the same eps and images for every face.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from facelab.attacks.ffa import attribute_scores, ffa_direction, fgs_direction
from facelab.attacks.line_search import line_search, line_search_naive
from facelab.models.attributes import load_attribute_net


def faces(n: int, crop=(19, 56, 159, 196)) -> torch.Tensor:
    import tempfile
    from pathlib import Path

    from facelab.data.celeba import CelebA
    from facelab.data.fixtures import write_celeba

    with tempfile.TemporaryDirectory() as tmp:
        ds = CelebA(write_celeba(Path(tmp) / "c"), "all")
        x = torch.stack([ds[i][0] for i in range(min(n, len(ds)))])
    x1, y1, x2, y2 = crop
    return x[:, :, y1:y2, x1:x2].contiguous()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="human_gender")
    p.add_argument("--faces", type=int, default=16)
    p.add_argument("--method", choices=("FGS", "FFA"), default="FFA")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eps-max", type=float, default=64, help="largest eps in grey levels (the chapter default)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--points", type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    net = load_attribute_net(a.net, a.device)
    x = faces(a.faces).to(a.device)
    with torch.no_grad():
        c0 = attribute_scores(net, x)[:, 0] > 0
    d = (fgs_direction if a.method == "FGS" else ffa_direction)(net, x, 0)

    def is_flipped(images, source):
        with torch.no_grad():
            return (attribute_scores(net, images)[:, 0] > 0) != c0[source]

    out = {"net": a.net, "faces": int(x.shape[0]), "method": a.method, "threads": a.threads, "device": a.device}
    line_search(x[:2], d[:2], is_flipped)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    fast = line_search(x, d, is_flipped, eps_max=a.eps_max / 255, rounds=a.rounds, points=a.points)
    out["batched_s"], out["batched_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    out["batched_images"], out["batched_passes"] = fast.forwards, fast.passes
    t, c = time.perf_counter(), time.process_time()
    slow = line_search_naive(x, d, is_flipped, eps_max=a.eps_max / 255, rounds=a.rounds, points=a.points)
    out["naive_s"], out["naive_cpu_s"], out["naive_images"] = time.perf_counter() - t, time.process_time() - c, slow.forwards
    out["speedup_wall"] = out["naive_s"] / out["batched_s"]
    out["speedup_cpu"] = out["naive_cpu_s"] / out["batched_cpu_s"]
    out["same_flips"] = bool(torch.equal(fast.flipped, slow.flipped))
    same = fast.flipped & slow.flipped
    out["same_eps"] = bool(torch.allclose(fast.eps[same], slow.eps[same]))
    out["same_images"] = bool(torch.equal(fast.images, slow.images))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}), flush=True)


if __name__ == "__main__":
    main()
