"""The one place that knows about ``torch.distributed`` process groups (``torchrun``).

* :func:`world` -- (rank, world size) of the initialised default group, (0, 1) without one;
* :func:`setup` -- under ``torchrun`` (env ``WORLD_SIZE`` > 1) initialise the default group (NCCL on
  CUDA, gloo otherwise) and pick this process's device (``cuda:LOCAL_RANK`` on CUDA);
* :func:`teardown` -- destroy the group again if :func:`setup` created it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["world", "setup", "teardown"]


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _resolve(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setup(device: str | torch.device | None = None) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, this process's device, whether this call created the process group).

    ``device``: ``None``/``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ... Launched by
    ``torchrun`` with ``WORLD_SIZE`` > 1 and no group yet, the default group is initialised (NCCL for a
    CUDA device, gloo otherwise). With several processes on CUDA the device becomes ``cuda:LOCAL_RANK``
    and is made the current one.
    """
    dev = _resolve(device)
    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        created = True
    rank, size = world()
    if dev.type == "cuda" and size > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return rank, size, dev, created


def teardown(created_group: bool) -> None:
    """Destroy the default process group when :func:`setup` created it (``created_group``)."""
    if created_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
