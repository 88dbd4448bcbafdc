"""facelab's attacks side by side with torchattacks, foolbox and ART: same model, inputs and steps, one run.

    nice -n 10 .venv/bin/python benchmarks/bench_attacks.py [--threads 1] [--repeats 3] [--out results.md]

Needs the ``bench`` extra (``make bench-setup``). Tasks (issue 18):

* **classifier**: face-api's gender head (``faceapi_gender``) on ``--batch`` aligned 112x112 identity views
  (:func:`facelab.data.identities.identity_set`), untargeted on the model's own decisions, cross-entropy;
* **verification**: face-api's recognition net (``face_recognition``) as a 2-class verifier of each probe view
  against the same person's enrolled view: logits ``[t - d, d - t]`` (``d`` the Euclidean distance of the
  descriptors, ``t`` the net's match threshold), label "match": the cross-entropy ``softplus(2 (d - t))`` grows
  with ``d`` (a dodging attack on the verification score); the same module for every library.

On each: FGSM, I-FGSM (``--steps`` steps of ``--alpha``, no random start; torchattacks ``BIM``, foolbox
``LinfBasicIterativeAttack``) and PGD (random start; torchattacks ``PGD``, foolbox ``LinfPGD``) through
:mod:`facelab.attacks.fgsm`. FGSM and I-FGSM must give the same adversarial images (max |Δ| <= 1e-6) before
they are timed; PGD's random starts differ by construction (each library draws its own), so it is timed only.
foolbox is called through ``attack.run`` (the attack without its final success check), torchattacks through
``attack(images, labels)``. One known exception is timed anyway and marked †: foolbox's I-FGSM projects with
``x0 + clip(x - x0, -eps, eps)``, which rounds the pixels 1 ulp away from ``clamp(x, x0 - eps, x0 + eps)``
(facelab, torchattacks); on a net with near-zero pixel gradients (the embedder) those ulps flip a few gradient
signs in later steps, and the row says how many pixels end up different. The work per step is the same.

* **tiny**: a 2-layer CNN (random weights) with 5x the steps, where the net costs little and each library's
  own per-step overhead (projection, copies, checks) decides;
* **patch**: chapter 1's universal-patch training step (:class:`~facelab.attacks.universal_patch.UniversalPatchAttack`,
  ``patch_score``, Adam) against ART's ``AdversarialPatchPyTorch`` (Adam, untargeted, square patch, no rotation)
  on the same randomly initialised facelab SSD (ResNet-18, :class:`~facelab.models.detection.SSDFace`), which ART
  sees through a torchvision-style adapter (train mode + targets -> its loss dict). Same patch size, batch,
  images and number of steps; the objectives are each library's own (facelab: the paper's score loss on the
  adversarial sample set; ART: minus the detector's training loss). A third row times the detector's forward and
  backward alone on the same batch: the floor of any patch step (its ratio is the share of facelab's step).

Timing: one warm-up run, then the fastest of ``--repeats`` runs (wall clock) and the CPU time of that run.
Ratio = other library's time / facelab's time: > 1 means facelab is faster. The machine may be shared (the load
average before and after is printed): the CPU-time ratio is the steadier one there.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
IDENTICAL = 1e-6


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(wall s, CPU s) of the fastest of ``repeats`` runs of ``fn`` (after the caller's warm-up)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


class Verifier(nn.Module):
    """2-class verification head on an embedder: logits ``[t - d, d - t]`` against enrolled descriptors."""

    def __init__(self, embedder: nn.Module, enrolled: Tensor) -> None:
        super().__init__()
        self.embedder = embedder
        with torch.no_grad():
            self.register_buffer("enrolled", embedder(enrolled))
        self.threshold = float(embedder.threshold)

    def forward(self, x: Tensor) -> Tensor:
        d = self.embedder.distance(self.embedder(x), self.enrolled)
        return torch.stack([self.threshold - d, d - self.threshold], -1)


def _ce(model: nn.Module, y: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda z: F.cross_entropy(model(z), y, reduction="none")


def gradient_attacks(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
                     repeats: int) -> list[dict]:
    """Rows (attack, library, wall s, CPU s, max |Δ| to facelab) of FGSM, I-FGSM and PGD on ``model``."""
    import foolbox as fb
    import torchattacks

    from facelab.attacks.fgsm import fgsm, ifgsm

    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
    crit = fb.criteria.Misclassification(y)
    loss = _ce(model, y)
    g = torch.Generator().manual_seed(0)
    runs: dict[str, dict[str, Callable[[], Tensor]]] = {
        "FGSM": {
            "facelab": lambda: fgsm(x, loss, eps),
            "torchattacks": lambda: torchattacks.FGSM(model, eps=eps)(x, y),
            "foolbox": lambda: fb.attacks.FGSM().run(fmodel, x, crit, epsilon=eps),
        },
        f"I-FGSM ({steps} steps)": {
            "facelab": lambda: ifgsm(x, loss, eps, steps, alpha),
            "torchattacks": lambda: torchattacks.BIM(model, eps=eps, alpha=alpha, steps=steps)(x, y),
            "foolbox": lambda: fb.attacks.LinfBasicIterativeAttack(abs_stepsize=alpha, steps=steps)
            .run(fmodel, x, crit, epsilon=eps),
        },
        f"PGD ({steps} steps, random start)": {
            "facelab": lambda: ifgsm(x, loss, eps, steps, alpha, random_start=True, generator=g),
            "torchattacks": lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y),
            "foolbox": lambda: fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=True)
            .run(fmodel, x, crit, epsilon=eps),
        },
    }
    rows = []
    for attack, libs in runs.items():
        ref = libs["facelab"]().detach()  # warm-up and reference
        assert float((ref - x).abs().max()) <= eps + 1e-6, f"{attack}: facelab left the eps-ball"
        for lib, fn in libs.items():
            out = fn().detach() if lib != "facelab" else ref
            delta = None if attack.startswith("PGD") else float((out - ref).abs().max())
            note = None
            if delta is not None and delta > IDENTICAL:
                n = int(((out - ref).abs() > IDENTICAL).sum())
                note = f"{n} of {ref.numel()} pixels differ"
                if not (lib == "foolbox" and attack.startswith("I-FGSM")):
                    rows.append({"attack": attack, "library": lib, "wall": None, "cpu": None, "delta": delta,
                                 "note": note})
                    continue  # not the same computation: no timing
            wall, cpu = timed(fn, repeats)
            rows.append({"attack": attack, "library": lib, "wall": wall, "cpu": cpu, "delta": delta, "note": note})
    return rows


class TorchvisionStyle(nn.Module):
    """A facelab :class:`~facelab.models.detection.common.AnchorDetector` behind torchvision's detection API
    (what ART's ``PyTorchObjectDetector`` calls): ``model(images, targets)`` -> loss dict in train mode, else a
    list of ``{"boxes", "labels", "scores"}``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, images, targets=None):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        if targets is not None:
            loss = self.detector.compute_loss(x, [t["boxes"] for t in targets], self.generator)
            return {"loss_classifier": loss["cls_pos"] + loss["cls_neg"], "loss_box_reg": loss["reg"]}
        return [{"boxes": d.boxes, "scores": d.scores, "labels": torch.ones(len(d), dtype=torch.int64)}
                for d in self.detector.detect(x)]


def patch_images(n: int, side: int) -> tuple[Tensor, Tensor]:
    """``n`` bundled photos stretched to ``side`` x ``side`` and each one's largest face box [n,1,4]."""
    from facelab.data.faces import bundled_faces

    ims, boxes = [], []
    for p in bundled_faces().photos[:n]:
        im = p.image()
        h, w = im.shape[-2:]
        b = torch.as_tensor(p.boxes, dtype=torch.float32).reshape(-1, 4)
        b = b[((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).argmax()]
        ims.append(F.interpolate(im[None], (side, side), mode="bilinear", antialias=True, align_corners=False)[0])
        boxes.append((b * torch.tensor([side / w, side / h, side / w, side / h]))[None])
    return torch.stack(ims).clamp(0, 1), torch.stack(boxes)


def patch_step(batch: int, side: int, size: int, steps: int, repeats: int) -> list[dict]:
    """Rows for ``steps`` patch-training steps of facelab and of ART on the same detector and images."""
    from art.attacks.evasion import AdversarialPatchPyTorch
    from art.estimators.object_detection import PyTorchObjectDetector

    from facelab.attacks.base import frozen
    from facelab.attacks.universal_patch import UniversalPatchAttack
    from facelab.models.detection import build_detector

    torch.manual_seed(0)
    det = build_detector("ssd", "resnet18").eval().requires_grad_(False)
    x, boxes = patch_images(batch, side)
    data = [(x[i], boxes[i]) for i in range(batch)]
    ours = UniversalPatchAttack(det, "patch_score", size=size, lr=0.03, seed=0)

    def run_ours() -> None:
        with frozen(det, check=False):
            for _ in range(steps):
                ours.step(data)

    est = PyTorchObjectDetector(TorchvisionStyle(det), input_shape=(3, side, side), clip_values=(0, 1),
                                attack_losses=("loss_classifier", "loss_box_reg"), device_type="cpu")
    art = AdversarialPatchPyTorch(est, rotation_max=0.0, scale_min=0.3, scale_max=0.3, learning_rate=0.03,
                                  max_iter=steps, batch_size=batch, patch_shape=(3, size, size), patch_type="square",
                                  optimizer="Adam", targeted=False, verbose=False)
    xs = x.numpy()
    ys = [{"boxes": boxes[i].numpy(), "labels": np.ones(1, np.int64), "scores": np.ones(1, np.float32)}
          for i in range(batch)]

    def run_art() -> None:
        art.generate(xs, ys, shuffle=False)

    patch = torch.rand(3, size, size, requires_grad=True)

    def run_detector_only() -> None:  # the floor of any patch step: the detector's forward + backward
        for _ in range(steps):
            xin = x.clone()
            xin[:, :, :size, :size] = patch  # the input depends on the patch, as in a real step
            det.dense(xin).scores.sum().backward()

    rows = []
    for lib, fn in (("facelab", run_ours), ("ART", run_art), ("detector fwd+bwd only", run_detector_only)):
        fn()  # warm-up
        wall, cpu = timed(fn, repeats)
        rows.append({"attack": f"patch training ({steps} steps)", "library": lib, "wall": wall, "cpu": cpu,
                     "delta": None})
    return rows


def ratio_table(task: str, rows: list[dict]) -> list[str]:
    """Markdown rows: per attack and library, times and the ratios against facelab (> 1: facelab faster)."""
    base = {r["attack"]: r for r in rows if r["library"] == "facelab"}
    out = []
    for r in rows:
        b = base[r["attack"]]
        if r["wall"] is None:
            note = f"; {r['note']}" if r.get("note") else ""
            out.append(f"| {task} | {r['attack']} | {r['library']} | - | - | - | - | "
                       f"{r['delta']:.2g} (differs{note}: not timed) |")
            continue
        rw = r["wall"] / b["wall"]
        rc = r["cpu"] / b["cpu"] if b["cpu"] > 0 else float("nan")
        d = "random start" if r["delta"] is None and r["attack"].startswith("PGD") else (
            "-" if r["delta"] is None else f"{r['delta']:.1g}")
        if r.get("note"):
            d += f" † ({r['note']})"
        out.append(f"| {task} | {r['attack']} | {r['library']} | {1000 * r['wall']:.1f} | {1000 * r['cpu']:.1f} | "
                    f"{rw:.2f} | {rc:.2f} | {d} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="face crops per attack batch")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--alpha", type=float, default=2 / 255)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--patch-batch", type=int, default=2)
    p.add_argument("--patch-image", type=int, default=256, help="detector image side")
    p.add_argument("--patch-size", type=int, default=64, help="patch side (pixels)")
    p.add_argument("--patch-steps", type=int, default=3)
    p.add_argument("--tasks", default="classifier,verification,tiny,patch")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "attacks.md")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import art
    import foolbox
    import torchattacks

    from facelab import models
    from facelab.data.identities import identity_set

    tasks = a.tasks.split(",")
    load0, t0 = os.getloadavg(), time.time()
    table: list[str] = []
    if "classifier" in tasks or "verification" in tasks:
        ids = identity_set(a.batch, train_views=1, test_views=1, size=112, seed=0)
        probes, _ = ids.tensors("test")
        enrolled, _ = ids.tensors("train")
    if "classifier" in tasks:
        clf = models.load("faceapi_gender")
        with torch.no_grad():
            y = clf(probes).argmax(-1)
        table += ratio_table("faceapi_gender", gradient_attacks(clf, probes, y, a.eps, a.alpha, a.steps, a.repeats))
    if "verification" in tasks:
        ver = Verifier(models.load("face_recognition"), enrolled).eval()
        y = torch.zeros(len(probes), dtype=torch.int64)  # "match"
        table += ratio_table("face_recognition (verify)",
                             gradient_attacks(ver, probes, y, a.eps, a.alpha, a.steps, a.repeats))
    if "tiny" in tasks:  # a net so small that the attack loop's own overhead shows
        torch.manual_seed(0)
        tiny = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.Flatten(), nn.Linear(4 * 28 * 28, 2)).eval()
        tiny.requires_grad_(False)
        xt = torch.rand(a.batch, 3, 112, 112, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = tiny(xt).argmax(-1)
        table += ratio_table("tiny CNN (overhead-bound)",
                             gradient_attacks(tiny, xt, y, a.eps, a.alpha, 5 * a.steps, a.repeats))
    if "patch" in tasks:
        table += ratio_table(f"SSD-R18 {a.patch_image}px",
                             patch_step(a.patch_batch, a.patch_image, a.patch_size, a.patch_steps, a.repeats))
    load1 = os.getloadavg()

    lines = [
        "# facelab vs torchattacks / foolbox / ART: same model, inputs and steps",
        "",
        "Command: `nice -n 10 .venv/bin/python benchmarks/bench_attacks.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"- {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); torchattacks {torchattacks.__version__}, foolbox {foolbox.__version__}, "
        f"ART {art.__version__}.",
        f"- **Shared machine**: load average (1/5/15 min) {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} before, "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} after ({time.time() - t0:.0f} s); other jobs ran at the same "
        "time, so absolute times are inflated and noisy; the CPU-time ratio is the steadier number.",
        f"- Gradient attacks: batch {a.batch} aligned 112x112 identity views, eps {a.eps:.4g}, alpha {a.alpha:.4g}, "
        f"{a.steps} steps; patch: batch {a.patch_batch} photos at {a.patch_image}x{a.patch_image}, "
        f"{a.patch_size}x{a.patch_size} patch, {a.patch_steps} steps, randomly initialised facelab SSD (ResNet-18).",
        f"- Times: fastest of {a.repeats} runs after a warm-up (ms for the whole attack on the batch); ratio = "
        "library time / facelab time (> 1: facelab faster). max |Δ|: largest pixel difference of the adversarial "
        f"images to facelab's (must be <= {IDENTICAL:g} to be timed; † = foolbox I-FGSM, see the script's docstring: "
        "ulp-level rounding of its projection flips near-zero gradient signs, same work per step). Patch rows: "
        "`detector fwd+bwd only` is the floor of any patch step (the same detector's forward and backward on the "
        "batch): its ratio is the share of facelab's step spent in the detector.",
        "",
        "| model | attack | library | wall ms | CPU ms | ratio (wall) | ratio (CPU) | max abs Δ |",
        "|---|---|---|---:|---:|---:|---:|---|",
        *table,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
