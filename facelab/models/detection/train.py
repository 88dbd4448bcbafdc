"""Training of the trainable face detectors on WIDER FACE (patch paper §3.1 "Training details").

* data: WIDER FACE train split (:class:`facelab.data.wider.WiderFace`), random
  horizontal flip, scale jitter by 0.25·n with n uniform in {1, ..., 8}, then a random ``crop``×``crop``
  window (zero padded when the scaled image is smaller; faces whose centre leaves the window dropped);
* optimization: SGD (momentum 0.9, weight decay 1e-4) on all parameters, lr 0.01 decayed ×0.1 at epochs
  60 and 80, linear warm-up over the first ``warmup_iters`` iterations (our addition: from-scratch
  backbones diverge without it), optional gradient-norm clipping;
* a checkpoint ``last.pt`` written atomically after every epoch; a rerun with the same ``out_dir``
  resumes from it. All randomness (shuffling, augmentation, anchor sampling) is derived from
  (seed, epoch, index), so an interrupted-and-resumed run reproduces the uninterrupted one (bitwise on
  CPU);
* AMP (float16 autocast + GradScaler) on CUDA; multi-GPU/multi-process with ``torchrun`` (DDP; NCCL on
  CUDA, gloo on CPU; each rank reads its shard via ``DistributedSampler``);
* a tqdm bar (rank 0) and a JSONL metrics log ``metrics.jsonl`` (one line per step and per epoch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from facelab import distributed
from facelab.data.wider import WiderFace
from facelab.io import atomic_write, remove_stale_temps, write_json
from facelab.models.detection import build_detector

__all__ = ["TrainConfig", "AugmentedDetectionSet", "train_detector", "load_trained", "lr_at", "collate"]


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (saved into every checkpoint)."""

    data_root: str = ""
    out_dir: str = "runs/detector"
    arch: str = "sln"
    backbone: str = "resnet18"
    backbone_weights: str | None = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    split: str = "train"
    epochs: int = 100
    batch_size: int = 8
    crop: int = 640
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    warmup_iters: int = 500
    clip_grad_norm: float | None = 10.0
    flip: bool = True
    jitter: tuple[float, ...] = tuple(0.25 * n for n in range(1, 9))
    seed: int = 0
    workers: int = 4
    amp: bool = True
    sync_bn: bool = True
    device: str | None = None
    max_steps_per_epoch: int | None = None
    progress: bool = True


def lr_at(cfg: TrainConfig, epoch: int, global_step: int) -> float:
    """Learning rate at (epoch, global step): step decay at the milestones times the linear warm-up."""
    lr = cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.warmup_iters > 0 and global_step < cfg.warmup_iters:
        lr *= (global_step + 1) / cfg.warmup_iters
    return lr


class AugmentedDetectionSet(Dataset):
    """Flip + 0.25·n scale jitter + random crop of a dataset of (image, boxes, info) items.

    The randomness of item ``i`` in epoch ``e`` comes from a generator seeded by (seed, e, i).
    """

    def __init__(self, base: Dataset, crop: int = 640, flip: bool = True,
                 jitter: tuple[float, ...] = tuple(0.25 * n for n in range(1, 9)), seed: int = 0) -> None:
        self.base, self.crop, self.flip, self.jitter, self.seed = base, int(crop), flip, tuple(jitter), seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img, boxes, info = self.base[i]
        boxes = boxes.reshape(-1, 4).float()
        if isinstance(info, dict) and isinstance(info.get("invalid"), Tensor) and info["invalid"].numel() == len(boxes):
            boxes = boxes[info["invalid"] == 0]  # WIDER's invalid faces are not trained on
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 100_003 + i)
        s = self.jitter[int(torch.randint(len(self.jitter), (1,), generator=g))] if self.jitter else 1.0
        h, w = img.shape[-2:]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) != (h, w):
            img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                antialias=s < 1)[0].clamp(0, 1)
            boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h])
        if self.flip and bool(torch.rand((), generator=g) < 0.5):
            img = img.flip(-1)
            boxes = torch.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], dim=1)
        c = self.crop
        y0 = int(torch.randint(max(1, nh - c + 1), (1,), generator=g))
        x0 = int(torch.randint(max(1, nw - c + 1), (1,), generator=g))
        out = img.new_zeros(3, c, c)
        patch = img[:, y0:y0 + c, x0:x0 + c]
        out[:, : patch.shape[1], : patch.shape[2]] = patch
        boxes = boxes - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
        ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
        lim = torch.tensor([patch.shape[2], patch.shape[1]], dtype=boxes.dtype)
        keep = (ctr >= 0).all(1) & (ctr < lim).all(1)
        boxes = boxes[keep]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, patch.shape[2])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, patch.shape[1])
        boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) > 0).all(1)]
        return out, boxes


def collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[Tensor]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class _LossModule(nn.Module):
    """Wraps a detector so that DDP's forward computes the loss (DDP syncs gradients of forward)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor, targets: list[Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return self.detector.compute_loss(images, targets, generator)


def _model_config(cfg: TrainConfig) -> dict:
    return {"arch": cfg.arch, "backbone": cfg.backbone, "model_kwargs": dict(cfg.model_kwargs)}


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A detector rebuilt from a ``last.pt``/``model.pt`` checkpoint of :func:`train_detector`, in eval mode."""
    from facelab.models import _read_checkpoint

    ck = _read_checkpoint(str(path))  # ValueError naming the file, without PyTorch's unsafe weights_only advice
    if not isinstance(ck, dict) or "model" not in ck or "model_config" not in ck:
        raise ValueError(f"{path}: not a facelab detector checkpoint (needs 'model' and 'model_config')")
    mc = ck["model_config"]
    model = build_detector(mc["arch"], mc["backbone"], **mc.get("model_kwargs", {}))
    model.load_state_dict(ck["model"])
    return model.eval().to(device)


def _resume_checkpoint(path: Path, cfg: TrainConfig) -> dict | None:
    """The checkpoint to resume from (None when ``path`` does not exist).

    Raises ValueError naming ``path`` when it is not a training checkpoint or was written for another
    model (arch, backbone or model_kwargs differ from ``cfg``).
    """
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported with its path (no unsafe advice)
        raise ValueError(f"{path}: cannot read the checkpoint to resume from ({type(e).__name__}); "
                         "delete it or use another --out") from None
    need = ("model", "optimizer", "scaler", "epoch", "global_step", "history", "model_config")
    if not isinstance(ck, dict) or any(k not in ck for k in need):
        have = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise ValueError(f"{path}: not a train-detector checkpoint (needs {', '.join(need)}; has {have}); "
                         "delete it or use another --out")
    have, want = ck["model_config"], _model_config(cfg)
    if have != want:
        diff = "; ".join(f"{k}: checkpoint {have.get(k)!r} != requested {want[k]!r}"
                         for k in want if have.get(k) != want[k])
        raise ValueError(f"{path}: cannot resume, checkpoint is for arch={have.get('arch')!r} "
                         f"backbone={have.get('backbone')!r} model_kwargs={have.get('model_kwargs')!r}, "
                         f"not for the requested model ({diff}); use another --out or the checkpoint's "
                         f"--arch/--backbone")
    return ck


def check_config(cfg: TrainConfig) -> None:
    """Ranges of the options, checked before anything is read or written (ValueError naming the option)."""
    for opt, value, lo in (("--epochs", cfg.epochs, 0), ("--batch-size", cfg.batch_size, 1), ("--crop", cfg.crop, 8),
                           ("--warmup-iters", cfg.warmup_iters, 0), ("--workers", cfg.workers, 0)):
        if value < lo:
            raise ValueError(f"{opt} must be >= {lo}, got {value}")
    if not (cfg.lr > 0 and cfg.lr < float("inf")):
        raise ValueError(f"--lr must be a positive finite number, got {cfg.lr}")
    if cfg.max_steps_per_epoch is not None and cfg.max_steps_per_epoch < 1:
        raise ValueError(f"--max-steps-per-epoch must be >= 1, got {cfg.max_steps_per_epoch}")
    if cfg.backbone_weights is not None and not Path(cfg.backbone_weights).is_file():
        raise ValueError(f"--backbone-weights {cfg.backbone_weights}: no such file")


def _epoch_of(line: str) -> float:
    """The epoch of a metrics.jsonl line; a line cut by a crash mid-append counts as not written (inf)."""
    try:
        return float(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def train_detector(cfg: TrainConfig, dataset: Dataset | None = None,
                   on_epoch_end: Callable[[int, dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Train (or resume training of) a detector; returns (model in eval mode, per-epoch summaries).

    ``dataset``: items (image [3,H,W] in [0,1], boxes [N,4] x1y1x2y2, info); default: WIDER FACE
    ``cfg.split`` under ``cfg.data_root``. Run under ``torchrun --nproc_per_node=K`` for DDP; a process
    group created here is destroyed again on return.
    """
    rank, world, device, created = distributed.setup(cfg.device)
    try:
        return _train(cfg, dataset, on_epoch_end, rank, world, device)
    finally:
        distributed.teardown(created)


def _train(cfg: TrainConfig, dataset: Dataset | None, on_epoch_end: Callable[[int, dict], None] | None,
           rank: int, world: int, device: torch.device) -> tuple[nn.Module, list[dict]]:
    out = Path(cfg.out_dir)
    check_config(cfg)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; give a folder")
    # a checkpoint of another model fails here, before the data is read or the model built
    resume = _resume_checkpoint(out / "last.pt", cfg)
    base = dataset if dataset is not None else WiderFace(cfg.data_root, cfg.split)
    data = AugmentedDetectionSet(base, cfg.crop, cfg.flip, cfg.jitter, cfg.seed)
    if len(data) < cfg.batch_size * world:
        raise ValueError(f"dataset has {len(data)} images, fewer than batch_size·world = {cfg.batch_size * world}; "
                         "lower --batch-size")
    if rank == 0:  # only now, with the data and the resume state checked, is --out created
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out, ("last.pt", "model.pt", "metrics.jsonl", "train_config.json"))

    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.arch, cfg.backbone, backbone_weights=cfg.backbone_weights, **cfg.model_kwargs)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    use_amp = bool(cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, global_step, history = 0, 0, []
    ckpt_path = out / "last.pt"
    if resume is not None:
        ck = resume
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, global_step, history = ck["epoch"] + 1, ck["global_step"], ck["history"]
    log_path = out / "metrics.jsonl"
    if rank == 0 and log_path.exists():  # drop log lines of epochs that will be redone
        keep = [ln for ln in log_path.read_text().splitlines() if _epoch_of(ln) < start_epoch]
        with atomic_write(log_path) as f:
            f.write("".join(ln + "\n" for ln in keep))

    train_module: nn.Module = _LossModule(model)
    if world > 1:
        if cfg.sync_bn and device.type == "cuda":
            train_module = nn.SyncBatchNorm.convert_sync_batchnorm(train_module)
        train_module = nn.parallel.DistributedDataParallel(
            train_module, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                            collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda")
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + rank)
        n_steps = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        bar = None
        if rank == 0 and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        sums: dict[str, float] = {}
        t0 = time.time()
        log = open(log_path, "a") if rank == 0 else None
        try:
            for step, (images, targets) in enumerate(loader):
                if step >= n_steps:
                    break
                lr = lr_at(cfg, epoch, global_step)
                for group in opt.param_groups:
                    group["lr"] = lr
                images = images.to(device, non_blocking=True)
                targets = [t.to(device) for t in targets]
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    losses = train_module(images, targets, gen)
                opt.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()
                if cfg.clip_grad_norm:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                scaler.step(opt)
                scaler.update()
                global_step += 1
                vals = {k: float(v.detach()) for k, v in losses.items()}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v
                if log is not None:
                    log.write(json.dumps({"epoch": epoch, "step": global_step, "lr": lr, **vals}) + "\n")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{vals['loss']:.3f}", lr=f"{lr:.2g}")
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        summary = {"epoch": epoch, "global_step": global_step, "time_s": time.time() - t0,
                   **{f"mean_{k}": v / max(1, n_steps) for k, v in sums.items()}}
        history.append(summary)
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps({"summary": True, **summary}) + "\n")
            ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                  "epoch": epoch, "global_step": global_step, "history": history,
                  "model_config": _model_config(cfg), "config": dataclasses.asdict(cfg)}
            with atomic_write(ckpt_path, "wb") as f:
                torch.save(ck, f)
        if world > 1:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, summary)
    if rank == 0:
        with atomic_write(out / "model.pt", "wb") as f:
            torch.save({"model": model.state_dict(), "model_config": _model_config(cfg)}, f)
        write_json(out / "train_config.json", dataclasses.asdict(cfg))
    return model.eval(), history
