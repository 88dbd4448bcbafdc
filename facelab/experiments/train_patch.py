"""``facelab train-patch``: train one universal adversarial patch on WIDER FACE (Yang et al., §3.2, §4.2).

The training itself is :class:`facelab.attacks.UniversalPatchAttack` (frozen victim, checked unchanged;
patch gradient averaged across processes with ``all_reduce`` under ``torchrun``); the victim is loaded
by :func:`facelab.models.load` and the patch is initialised as in the chapter
(:func:`~facelab.experiments.universal_patches.init_images`). WIDER train images are read
lazily, one shard per process (a ``DistributedSampler``), and downscaled to ``--max-side`` as in the
chapter's full-scale run.

One process (CPU or one GPU)::

    facelab train-patch --data-root /data/WIDER_FACE --victim sln --victim-checkpoint runs/sln/model.pt \\
        --method patch_iou --epochs 100 --device cuda --out runs/patch_sln

Several GPUs: ``torchrun --standalone --nproc_per_node 4 -m facelab train-patch ...`` (``--batch-size``
is per process; gloo on CPU, NCCL on CUDA). Only rank 0 writes.

Run state: after every epoch the whole state (patch, Adam state, the attack's generator, epoch, settings,
per-epoch loss) is committed in **one** atomic step, ``<out>/state.pt`` (one ``os.replace``); only then are
the exports ``<out>/patch.pt`` (a [3,128,128] tensor in [0,1], ``torch.load(..., weights_only=True)``),
``<out>/patch.png`` and ``<out>/state.json`` (epoch, settings, per-epoch loss) rewritten from it. A crash
at any point leaves either the previous or the new ``state.pt``; rerunning the same command resumes from
it (rewriting the exports first), which gives the bit-identical final patch of an uninterrupted run. A
``state.pt`` that is unreadable or inconsistent, or a folder holding a ``state.json`` but no ``state.pt``
(an older facelab's four separate files, which a crash could leave mutually inconsistent), is refused with
a message naming the file. Temporary files of an interrupted write (``.state.pt.XXXX``) are removed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from facelab.io import remove_stale_temps

__all__ = ["configure", "main", "train_patch", "INITS"]

#: initialisations by name (as in the chapter's Table 1); any other value is read as an image file
INITS = ("noise", "gray", "coffee", "rocket", "faceA", "faceB", "faceC")
#: settings that must match to resume from ``<out>``
_RESUME_KEYS = ("victim", "victim_fingerprint", "method", "init", "alpha", "location", "patch_size",
                "score_margin_threshold", "iou_threshold", "max_side", "max_images", "seed")


def configure(p: argparse.ArgumentParser) -> None:
    from facelab.attacks import LOCATIONS, METHODS
    from facelab.experiments.universal_patches import PAPER_SETTINGS, Config

    # The threshold defaults are the paper's SLN-on-WIDER operating point (PAPER_SETTINGS): this command trains
    # at paper scale. The chapter's own defaults (delta 0.7, delta - m 0.3, IoU 0.5) are for face-api's SSD on
    # the bundled photos, whose scores and priors differ (see the chapter's "Choosing delta" section).
    d, paper = Config(), PAPER_SETTINGS
    p.add_argument("--data-root", required=True, help="WIDER FACE root (wider_face_split/, WIDER_train/); train split")
    p.add_argument("--victim", default=d.victim,
                   help="zoo name, 'module:callable', or the arch of a --victim-checkpoint from facelab train-detector")
    p.add_argument("--victim-checkpoint", default=None, help="model.pt/last.pt of facelab train-detector, or a state dict")
    p.add_argument("--method", choices=list(METHODS), default="patch_iou")
    p.add_argument("--init", default="noise", help=f"one of {', '.join(INITS)}, or an image file")
    p.add_argument("--alpha", type=float, default=d.alpha, help="patch side = alpha * sqrt(w*h) of the face")
    p.add_argument("--location", choices=list(LOCATIONS), default=d.location)
    p.add_argument("--epochs", type=int, default=paper["epochs"], help="total epochs (paper: 100); a rerun resumes")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per process and step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate on the patch pixels")
    p.add_argument("--delta", type=float, default=paper["delta"],
                   help="detection threshold δ (recorded; δ − m must be below it; paper 0.99)")
    p.add_argument("--score-margin-threshold", type=float, default=paper["score_margin_threshold"],
                   help="δ − m of Patch-Score/-Combination (paper 0.5)")
    p.add_argument("--iou-threshold", type=float, default=paper["iou_threshold"],
                   help="Patch-IoU rule IoU(A, B) > this (paper 0.6)")
    p.add_argument("--patch-size", type=int, default=d.patch_size)
    p.add_argument("--max-side", type=int, default=d.max_side, help="WIDER images downscaled to this longest side")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N training images")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process (image decoding)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--out", required=True, help="output folder (patch.pt, patch.png, state.json); resumes if present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


# -- data -----------------------------------------------------------------------------------------

class _WiderTrain(Dataset):
    """WIDER images read on demand, downscaled to ``max_side`` (as in
    :func:`facelab.data.crops.wider_samples`, which loads a whole split eagerly);
    items ``(image [3,H,W], boxes [K,4])``."""

    def __init__(self, root: str, max_images: int | None, max_side: int) -> None:
        from facelab.data.wider import WiderFace

        self.ds = WiderFace(root, "train")
        n = len(self.ds) if max_images is None else min(len(self.ds), int(max_images))
        # images without any face contribute nothing to L_adv: leave them out
        self.index = [i for i in range(n) if len(self.ds.records[i].boxes_xywh)]
        self.max_side = int(max_side)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from facelab.data.crops import downscale

        img, boxes, _ = self.ds[self.index[i]]
        return downscale(img, boxes, self.max_side)


def _list_collate(batch: list) -> list:
    return batch


def _initial_patch(name: str, data: _WiderTrain, size: int, seed: int) -> Tensor:
    from facelab.attacks import init_patch
    from facelab.experiments.universal_patches import init_images

    if name in ("noise", "gray"):
        return init_patch(name, size, seed=seed)
    if name in INITS:
        faces = []
        if name.startswith("face"):  # the chapter's FaceA/B/C: largest faces of (the first 64) training images
            faces = [(im, b, torch.zeros(len(b), dtype=torch.bool)) for im, b in (data[i] for i in range(min(64, len(data))))]
        inits = init_images(faces, size)
        if name not in inits:
            raise ValueError(f"--init {name}: the training images hold too few faces for it")
        return inits[name]
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"--init {name!r}: not one of {', '.join(INITS)} and not an image file")
    from facelab.data.images import load_image

    return init_patch("image", size, image=load_image(path))


# -- helpers --------------------------------------------------------------------------------------

#: files of a run folder: the state (the commit point), then its exports
STATE_FILE = "state.pt"
EXPORTS = ("patch.pt", "patch.png", "state.json")


def _write_epoch(out: Path, patch: Tensor, optimizer: torch.optim.Optimizer, state: dict,
                 generator: torch.Generator | None = None) -> None:
    """Commit the run state in one atomic step (``state.pt``), then rewrite the exports from it."""
    from facelab.io import atomic_write

    p = patch.detach().cpu().clone()
    blob = {"format": 1, "state": json.dumps(state), "patch": p, "optimizer": optimizer.state_dict(),
            "generator": generator.get_state() if generator is not None else None}
    with atomic_write(out / STATE_FILE, "wb") as f:
        torch.save(blob, f)
    _export(out, p, state)


def _export(out: Path, patch: Tensor, state: dict) -> None:
    """patch.pt, patch.png and state.json, derived from the committed state (each replaced atomically)."""
    from facelab.data.images import save_image
    from facelab.io import atomic_write, write_json

    with atomic_write(out / "patch.pt", "wb") as f:
        torch.save(patch, f)
    save_image(out / "patch.png", patch)
    write_json(out / "state.json", state)


def _resume(out: Path, settings: dict) -> dict | None:
    """The committed state of ``out`` (None for a fresh folder), verified: ``{"state", "patch", "optimizer",
    "generator"}``. Raises ValueError naming the file and the fix for anything inconsistent."""
    sf = out / STATE_FILE
    if not sf.is_file():
        if any((out / n).exists() for n in ("state.json", "optimizer.pt")):
            raise ValueError(f"{out / 'state.json'}: a train-patch folder without {STATE_FILE} (written by an older "
                             "facelab as separate files, which cannot be verified as one consistent state); "
                             "use another --out or delete the folder to start again")
        return None
    fix = "delete it to start again, or use another --out"
    try:
        blob = torch.load(sf, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated / foreign file: name it
        raise ValueError(f"{sf}: not a readable train-patch state ({type(e).__name__}); {fix}") from None
    try:
        state = json.loads(blob["state"])
        patch, optimizer = blob["patch"], blob["optimizer"]
        epoch, history = int(state["epoch"]), list(state["history"])
        ok = (blob.get("format") == 1 and isinstance(patch, Tensor) and patch.dim() == 3 and patch.shape[0] == 3
              and bool(torch.isfinite(patch).all()) and isinstance(optimizer, dict) and "state" in optimizer
              and [h["epoch"] for h in history] == list(range(1, epoch + 1)))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise ValueError(f"{sf}: an inconsistent train-patch state (needs format 1, a [3,S,S] finite patch, the "
                         f"Adam state and one history entry per epoch); {fix}")
    have = state.get("settings", {})
    diff = {k: (have.get(k), v) for k, v in settings.items() if k in _RESUME_KEYS and have.get(k) != v}
    if diff:
        raise ValueError(f"{sf}: written for other settings ({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                         "use another --out")
    if patch.shape[1:] != (settings["patch_size"], settings["patch_size"]):
        raise ValueError(f"{sf}: holds a {tuple(patch.shape)} patch, not {settings['patch_size']}x"
                         f"{settings['patch_size']}; {fix}")
    return {"state": state, "patch": patch, "optimizer": optimizer, "generator": blob.get("generator")}


def _check_args(args: argparse.Namespace) -> None:
    """Everything checkable before a file is read or a model loaded (ValueError naming the option)."""
    from facelab.experiments.universal_patches import Config

    Config(delta=args.delta, score_margin_threshold=args.score_margin_threshold, epochs=args.epochs)  # validates
    if not args.score_margin_threshold < args.delta:
        raise ValueError(f"--score-margin-threshold {args.score_margin_threshold} must be below --delta {args.delta}")
    for opt, value, lo in (("--batch-size", args.batch_size, 1), ("--patch-size", args.patch_size, 1),
                           ("--max-side", args.max_side, 8), ("--workers", args.workers, 0)):
        if value < lo:
            raise ValueError(f"{opt} must be >= {lo}, got {value}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    for opt, value in (("--lr", args.lr), ("--alpha", args.alpha)):
        if not (value > 0 and value < float("inf")):
            raise ValueError(f"{opt} must be a positive finite number, got {value}")
    if not 0 <= args.iou_threshold < 1:
        raise ValueError(f"--iou-threshold must lie in [0, 1), got {args.iou_threshold}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; give a folder")
    if not Path(args.data_root).is_dir():
        raise ValueError(f"--data-root {args.data_root}: no such folder (the WIDER FACE root with "
                         "wider_face_split/ and WIDER_train/)")
    if args.victim_checkpoint is not None and not Path(args.victim_checkpoint).is_file():
        raise ValueError(f"--victim-checkpoint {args.victim_checkpoint}: no such file")


# -- the entry point ------------------------------------------------------------------------------

def train_patch(args: argparse.Namespace, victim: nn.Module | None = None) -> dict:
    """Run ``facelab train-patch`` with parsed ``args`` (``victim``: an already loaded detector instead of
    ``--victim``); returns the final state (the content of ``state.json``)."""
    import torch.distributed as dist

    from facelab import distributed, models
    from facelab.attacks import UniversalPatchAttack, state_fingerprint
    _check_args(args)
    rank, world, device, ours = distributed.setup(args.device)
    try:
        torch.manual_seed(args.seed)
        out = Path(args.out)
        data = _WiderTrain(args.data_root, args.max_images, args.max_side)
        if len(data) == 0:
            raise ValueError(f"{args.data_root}: no training image with a face (max_images={args.max_images})")
        det = victim if victim is not None else models.load(args.victim, str(device), checkpoint=args.victim_checkpoint)
        det = det.to(device).eval().requires_grad_(False)
        fp = state_fingerprint(det)
        settings = {"victim": args.victim, "victim_checkpoint": args.victim_checkpoint, "victim_fingerprint": fp,
                    "method": args.method, "init": args.init, "alpha": args.alpha, "location": args.location,
                    "patch_size": args.patch_size, "lr": args.lr, "batch_size": args.batch_size, "delta": args.delta,
                    "score_margin_threshold": args.score_margin_threshold, "iou_threshold": args.iou_threshold,
                    "max_side": args.max_side, "max_images": args.max_images, "seed": args.seed,
                    "data_root": str(args.data_root), "world_size": world, "images": len(data)}
        if rank == 0 and out.is_dir():
            remove_stale_temps(out, (STATE_FILE, *EXPORTS, "optimizer.pt"))
        committed = _resume(out, settings)
        state = committed["state"] if committed else None
        init = committed["patch"] if committed else _initial_patch(args.init, data, args.patch_size, args.seed)
        atk = UniversalPatchAttack(det, args.method, alpha=args.alpha, location=args.location,
                                   score_threshold=args.score_margin_threshold, iou_threshold=args.iou_threshold,
                                   size=args.patch_size, init=init, lr=args.lr, seed=args.seed, device=device)
        if committed:
            atk.optimizer.load_state_dict(committed["optimizer"])
            if committed["generator"] is not None:
                atk.generator.set_state(committed["generator"])
            if rank == 0:  # a crash between the commit and the exports: bring them up to date
                _export(out, atk.patch.detach().cpu().clone(), state)
        start = int(state["epoch"]) if state else 0
        history = list(state.get("history", [])) if state else []
        if world > 1:  # every process starts from rank 0's patch
            dist.broadcast(atk.patch.data, 0)
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=_list_collate)
        bar = None
        if rank == 0 and not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=args.epochs, initial=min(start, args.epochs), desc=f"train-patch {args.method}")
        state = {"epoch": start, "epochs": args.epochs, "settings": settings, "history": history}
        if start == 0 and rank == 0:  # epoch 0: the initial patch (a resumable starting point)
            _write_epoch(out, atk.patch, atk.optimizer, state, atk.generator)
        for epoch in range(start + 1, args.epochs + 1):
            sampler.set_epoch(epoch)
            steps_before = len(atk.history)
            atk.fit(loader, epochs=1, progress=bar is not None)  # frozen victim, checked unchanged
            steps = atk.history[steps_before:]
            tot = torch.tensor([sum(s.loss for s in steps), len(steps), sum(s.n for s in steps),
                                sum(s.mean_score * s.n for s in steps)], dtype=torch.float64, device=device)
            if world > 1:  # the epoch's statistics over all processes
                dist.all_reduce(tot)
            loss_sum, n_steps, n, score_sum = tot.tolist()
            history.append({"epoch": epoch, "steps": int(n_steps), "loss": loss_sum / max(n_steps, 1),
                            "n_adversarial": int(n), "mean_score": score_sum / max(n, 1)})
            state = {"epoch": epoch, "epochs": args.epochs, "settings": settings, "history": history}
            if rank == 0:
                _write_epoch(out, atk.patch, atk.optimizer, state, atk.generator)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", n=int(n))
        if bar is not None:
            bar.close()
        return state
    finally:
        distributed.teardown(ours)


def main(args: argparse.Namespace) -> int:
    # bad arguments / data / resume state raise ValueError naming the option or file: facelab.cli prints one
    # line and exits 2 (the traceback with --debug)
    state = train_patch(args)
    if int(os.environ.get("RANK", "0")) == 0:
        h = state["history"][-1] if state["history"] else {}
        print(f"epoch {state['epoch']}/{state['epochs']}"
              + (f": loss {h['loss']:.4f}, adversarial samples {h['n_adversarial']}" if h else "")
              + f"\npatch: {Path(args.out) / 'patch.pt'}  image: {Path(args.out) / 'patch.png'}  "
              f"state: {Path(args.out) / 'state.json'}")
    return 0
