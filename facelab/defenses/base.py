"""What every input-transformation defense shares: the :class:`Defense` module base, argument checks and the
straight-through (BPDA) gradient."""

from __future__ import annotations

import numbers

from torch import Tensor, nn

__all__ = ["Defense", "straight_through", "check_int", "check_float"]


def straight_through(x: Tensor, y: Tensor) -> Tensor:
    """``y`` in the forward pass, the identity's gradient w.r.t. ``x`` in the backward pass (BPDA).

    Backward Pass Differentiable Approximation (Athalye et al. 2018) with g(x) = x: the exact values of
    ``y`` (``x - x.detach()`` is exactly zero), and ``d out / d x = I``.
    """
    return y.detach() + (x - x.detach())


def check_int(fn: str, name: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi``; ``ValueError`` naming ``fn`` and the parameter otherwise."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and value >= lo and (hi is None or value <= hi)
    if not ok:
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{fn}: {name} must be an integer {span}, got {value!r}")
    return int(value)


def check_float(fn: str, name: str, value: object, lo: float, hi: float | None = None) -> float:
    """``value`` as a finite float in ``[lo, hi]``; ``ValueError`` naming ``fn`` and the parameter otherwise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and lo <= float(value) and (hi is None or float(value) <= hi) and float(value) != float("inf")
    if not ok:
        span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{fn}: {name} must be a number in {span}, got {value!r}")
    return float(value)


class Defense(nn.Module):
    """Base of the input-transformation defenses: images ``[B,3,H,W]`` RGB in [0,1] -> images in [0,1].

    A defense is a function ``name(images, **params)`` (the functional core, which checks its
    arguments) and a thin module subclassing this one that stores the parameters, checks them at
    construction, and calls the function in :meth:`forward`.

    ``differentiable`` says whether the backward pass is the transformation's true gradient (``True``)
    or a straight-through / BPDA estimate (``False``): an attack on a defense with
    ``differentiable=False`` is an adaptive (BPDA) attack, not a plain white-box one. A defense that is
    random (``random = True``) draws again on every call: attack it with EOT.
    """

    differentiable: bool = True
    random: bool = False

    def forward(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
