"""``facelab train-detector``: train SLN / SSD / RetinaNet / Faster R-CNN on WIDER FACE.

Example (one GPU)::

    facelab train-detector --arch sln --backbone resnet18 --data-root /data/WIDER --out runs/sln_r18

Multi-GPU: ``torchrun --nproc_per_node=4 -m facelab train-detector ...`` (batch size is per process).
Rerunning the same command resumes from ``<out>/last.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses

from facelab.models.detection import ARCHS
from facelab.models.detection.common import BACKBONES

__all__ = ["configure", "main"]


def configure(p: argparse.ArgumentParser) -> None:
    from facelab.models.detection.train import TrainConfig

    d = TrainConfig()
    p.add_argument("--arch", choices=list(ARCHS), default=d.arch)
    p.add_argument("--backbone", choices=list(BACKBONES), default=d.backbone)
    p.add_argument("--backbone-weights", default=None, help="local torchvision-format ImageNet checkpoint")
    p.add_argument("--data-root", required=True, help="folder holding WIDER_train/ and wider_face_split/")
    p.add_argument("--split", default=d.split)
    p.add_argument("--out", default=d.out_dir, help="run folder (checkpoints, metrics.jsonl); resumes if present")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per process")
    p.add_argument("--crop", type=int, default=d.crop)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--milestones", type=int, nargs="*", default=list(d.milestones))
    p.add_argument("--warmup-iters", type=int, default=d.warmup_iters)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None)
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")


def main(args: argparse.Namespace) -> int:
    from facelab.models.detection.train import TrainConfig, train_detector

    cfg = TrainConfig(data_root=args.data_root, out_dir=args.out, arch=args.arch, backbone=args.backbone,
                      backbone_weights=args.backbone_weights, split=args.split, epochs=args.epochs,
                      batch_size=args.batch_size, crop=args.crop, lr=args.lr, milestones=tuple(args.milestones),
                      warmup_iters=args.warmup_iters, workers=args.workers, seed=args.seed, device=args.device,
                      amp=not args.no_amp, max_steps_per_epoch=args.max_steps_per_epoch)
    _, history = train_detector(cfg)
    if history:
        print({k: v for k, v in history[-1].items()})
    print(f"checkpoint: {cfg.out_dir}/last.pt  weights: {cfg.out_dir}/model.pt  config: "
          f"{dataclasses.asdict(cfg)['arch']}/{cfg.backbone}")
    return 0
