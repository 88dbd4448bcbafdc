"""Training of one universal adversarial patch against a face detector (Yang et al., §3.2, §4.2).

Only the patch P is optimised; the detector is frozen (eval mode, no parameter gradients) and
checked to be bit-identical after training. Works with any :class:`facelab.models.base.FaceDetector`
(it only calls ``dense``), on CPU or CUDA, batched (images of equal size are stacked, others run
as separate forward passes inside one step). Under ``torchrun`` (an initialised default process
group) every step's patch gradient is averaged across processes with ``all_reduce``; each process
should then see its own shard of the data (:meth:`UniversalPatchAttack.fit` shards a plain sequence
by rank itself).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from facelab import distributed
from facelab.attacks.base import Attack, frozen
from facelab.attacks.patch import EOT, LOCATIONS, init_patch, paste_patch, patch_boxes
from facelab.attacks.sample_sets import METHODS, adversarial_loss, select_samples

__all__ = ["UniversalPatchAttack", "Sample", "StepStats"]

#: one training sample: an image [3,H,W] in [0,1] and its GT face boxes [K,4] (x1 y1 x2 y2)
Sample = tuple[Tensor, Tensor]


@dataclasses.dataclass
class StepStats:
    """Loss (−L_adv, minimised), adversarial-sample-set size N and mean selected score of one step."""

    loss: float
    n: int
    mean_score: float


class UniversalPatchAttack(Attack):
    """One universal patch P (3×size×size, §3.2: 128) pasted on every GT face, trained with ``method``.

    ``method``: ``"patch_iou"`` | ``"patch_score"`` | ``"patch_score_focal"`` | ``"patch_combination"``.
    ``score_threshold`` is the paper's δ − m (0.5 there); ``iou_threshold`` the Patch-IoU rule (0.6);
    ``lambda1``/``lambda2`` the Patch-Combination IoUs (0.3); ``gamma`` Eq. 2's exponent (2).
    ``init``: ``"noise"``, ``"gray"`` or a tensor [3,h,w] (an image or face crop; resized).
    ``eot``: an :class:`~facelab.attacks.patch.EOT` (beyond the paper; ``None`` = off, the default).
    Optimiser: Adam on the patch pixels with projection onto [0,1] after every step.
    """

    def __init__(self, model: nn.Module, method: str = "patch_iou", *, alpha: float = 0.5, location: str = "top",
                 score_threshold: float = 0.5, iou_threshold: float = 0.6, lambda1: float = 0.3,
                 lambda2: float = 0.3, gamma: float = 2.0, literal_focal: bool = False, size: int = 128,
                 init: str | Tensor = "noise", lr: float = 0.03, eot: EOT | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(model, device)
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        if location not in LOCATIONS:
            raise ValueError(f"location: expected one of {LOCATIONS}, got {location!r}")
        if not hasattr(model, "dense"):
            raise TypeError(f"model: {type(model).__name__} has no dense(); a black-box detector cannot be attacked "
                            "with gradients (use it as a transfer target instead)")
        self.method, self.alpha, self.location = method, float(alpha), location
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.lambda1, self.lambda2, self.gamma, self.literal_focal = float(lambda1), float(lambda2), float(gamma), literal_focal
        self.lr, self.eot, self.seed = float(lr), eot, int(seed)
        p = init_patch(init, size, seed=seed) if isinstance(init, str) else init_patch(init.float(), size)
        self.patch = p.to(self.device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.patch], lr=self.lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.history: list[StepStats] = []

    # -- pieces -----------------------------------------------------------------------------
    def paste(self, image: Tensor, boxes: Tensor, patch: Tensor | None = None, **kwargs) -> Tensor:
        """``image`` with the (current) patch pasted on ``boxes`` at this attack's α and location."""
        patch = self.patch if patch is None else patch
        return paste_patch(image, patch, boxes, self.alpha, self.location, **kwargs)

    def _loss(self, batch: Sequence[Sample], train: bool) -> tuple[Tensor, int, float]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (im, _) in enumerate(batch):
            groups.setdefault(tuple(im.shape[-2:]), []).append(i)
        total = torch.zeros((), device=self.device)
        n_total, score_sum = 0, 0.0
        eot = self.eot if train else None
        for idx in groups.values():
            imgs, gts = [], []
            for i in idx:
                im, gt = batch[i]
                im = im.to(self.device, torch.float32)
                gt = torch.as_tensor(gt, dtype=torch.float32, device=self.device).reshape(-1, 4)
                imgs.append(paste_patch(im, self.patch, gt, self.alpha, self.location, eot=eot, generator=self.generator))
                gts.append(gt)
            out = self.model.dense(torch.stack(imgs))
            for b, gt in enumerate(gts):
                mask = select_samples(self.method, out.anchors[b], gt, patch_boxes(gt, self.alpha, self.location),
                                      out.scores[b], score_threshold=self.score_threshold,
                                      iou_threshold=self.iou_threshold, lambda1=self.lambda1, lambda2=self.lambda2)
                logits = None if out.logits is None else out.logits[b]
                s, n = adversarial_loss(self.method, out.scores[b], mask, logits, self.gamma, self.literal_focal)
                total = total + s
                n_total += int(n)
                score_sum += float(out.scores[b][mask].detach().sum())
        return total / max(n_total, 1), n_total, score_sum / max(n_total, 1)

    def step(self, batch: Sequence[Sample]) -> StepStats:
        """One optimisation step on ``batch`` (a list of (image, boxes)); returns its statistics."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, n, mean_score = self._loss(batch, train=True)
        if loss.requires_grad:
            loss.backward()
        if self.patch.grad is None:
            self.patch.grad = torch.zeros_like(self.patch)
        _, world = distributed.world()
        if world > 1:
            torch.distributed.all_reduce(self.patch.grad, op=torch.distributed.ReduceOp.SUM)
            self.patch.grad /= world
        self.optimizer.step()
        with torch.no_grad():
            self.patch.clamp_(0, 1)
        st = StepStats(float(loss.detach()), n, mean_score)
        self.history.append(st)
        return st

    @torch.no_grad()
    def evaluate(self, data: Sequence[Sample], batch_size: int = 4) -> StepStats:
        """−L_adv, N and mean score of the adversarial sample set on ``data`` with the current patch."""
        with frozen(self.model, check=False):
            tot, n, ssum = 0.0, 0, 0.0
            for i in range(0, len(data), batch_size):
                loss, k, ms = self._loss(data[i:i + batch_size], train=False)
                tot += float(loss) * k
                n += k
                ssum += ms * k
        return StepStats(tot / max(n, 1), n, ssum / max(n, 1))

    def fit(self, data: Sequence[Sample] | Any, epochs: int = 1, batch_size: int = 4, *,
            snapshots: Sequence[int] = (), progress: bool = False) -> dict[int, Tensor]:
        """Train for ``epochs`` passes over ``data`` (a sequence of (image, boxes) or any iterable of
        such batches, e.g. a DataLoader with a list collate). Returns ``{epoch: patch copy}`` for the
        epochs in ``snapshots`` (0 = the initial patch). Raises ``ModelChangedError`` if the victim
        model changed during training."""
        rank, world = distributed.world()
        is_seq = isinstance(data, Sequence)
        if is_seq and world > 1:
            data = list(data)[rank::world]
        snaps: dict[int, Tensor] = {}
        if 0 in snapshots:
            snaps[0] = self.patch.detach().cpu().clone()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            steps = math.ceil(len(data) / batch_size) * epochs if is_seq else None
            bar = tqdm(total=steps, desc=f"{self.method}", leave=False, disable=rank != 0)
        g = torch.Generator().manual_seed(self.seed)
        with frozen(self.model, check=True):
            for ep in range(1, epochs + 1):
                if is_seq:
                    order = torch.randperm(len(data), generator=g).tolist()
                    batches = [[data[j] for j in order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
                else:
                    batches = data
                for batch in batches:
                    st = self.step(batch)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{st.loss:.3f}", n=st.n)
                if ep in snapshots:
                    snaps[ep] = self.patch.detach().cpu().clone()
        if bar is not None:
            bar.close()
        return snaps

    def forward(self, image: Tensor, boxes: Tensor) -> Tensor:
        """Paste the current (detached) patch on ``image``'s faces ``boxes``."""
        with torch.no_grad():
            return self.paste(image.to(self.device), torch.as_tensor(boxes, device=self.device), self.patch.detach())
