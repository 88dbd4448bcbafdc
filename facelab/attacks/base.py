"""A tiny torchattacks-like base class: an attack wraps a frozen victim model.

The victim's weights must never change because of an attack (a known complaint about other
patch libraries is that patch training silently updates batch-norm statistics or weights).
:class:`Attack` puts the model in eval mode, switches its gradients off for the duration of the
attack and can verify afterwards, bit for bit, that parameters and buffers are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["Attack", "ModelChangedError", "frozen", "state_digests", "state_fingerprint"]


class ModelChangedError(RuntimeError):
    """Raised when an attack finds the victim model's parameters or buffers changed."""


def state_digests(model: nn.Module) -> dict[str, str]:
    """sha256 of every parameter and buffer of ``model`` (name, dtype, shape and bytes), by name."""
    out = {}
    for k, v in model.state_dict().items():
        if isinstance(v, Tensor):
            t = v.detach().cpu().contiguous()
            h = hashlib.sha256(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            out[k] = h.hexdigest()
    return out


def state_fingerprint(model: nn.Module) -> str:
    """One sha256 over :func:`state_digests`: equal exactly when every parameter and buffer is equal
    (used to check a victim stayed frozen, and by ``facelab train-patch`` to resume only with the same victim)."""
    return hashlib.sha256("".join(f"{k}={d};" for k, d in sorted(state_digests(model).items())).encode()).hexdigest()


def assert_unchanged(model: nn.Module, before: dict[str, str]) -> None:
    """Raise :class:`ModelChangedError` naming the first tensor of ``model`` whose digest differs from ``before``."""
    after = state_digests(model)
    for k, d in before.items():
        if k not in after:
            raise ModelChangedError(f"victim model lost state entry {k!r} during the attack")
        if after[k] != d:
            raise ModelChangedError(f"victim model changed during the attack: {k!r} differs (weights must stay frozen)")


@contextlib.contextmanager
def frozen(model: nn.Module, check: bool = True) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside the block; restores the flags and, when
    ``check``, asserts afterwards that no parameter or buffer changed."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    before = state_digests(model) if check else None
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    if before is not None:
        assert_unchanged(model, before)


class Attack:
    """Base of the attacks: holds the victim ``model`` and a ``device``; subclasses implement
    :meth:`forward` and are called like functions (as in torchattacks)."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module (a FaceDetector), got {type(model).__name__}")
        self.model = model
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, device={self.device})"
