"""FGSM and I-FGSM (PGD with sign steps) on any differentiable loss of pixel-space images.

The functional core, shared by the chapters, takes a ``loss_fn(x) -> Tensor`` (one loss per image, [B], or a
scalar) that the attack *increases*; targeted attacks pass a negated loss. Images are [B,3,H,W] in [0,1].

* :func:`fgsm` — one signed step, Eq. (1) of the ResGN paper, Eq. (7) of the attribute paper (FGS):
  ``x' = clip(x + eps * sign(grad_x L))``.
* :func:`ifgsm` — Kurakin et al.'s iterative version: ``steps`` signed steps of size ``alpha``, each followed by
  the projection onto the L-inf ball of radius ``eps`` around ``x`` and onto [0, 1]; an optional ``mask``
  ([B or 1, 1 or 3, H, W], 0/1) restricts where pixels may change (LIP's instance regions, eyeglass frames).
  ``random_start`` makes it Madry et al.'s PGD. ``stop(x_adv) -> BoolTensor[B]`` freezes images that already
  succeeded.

:class:`FGSM` and :class:`IFGSM` are thin torchattacks-style wrappers (``attack(images, loss_fn)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from facelab.attacks.base import Attack, frozen

__all__ = ["input_gradient", "fgsm", "ifgsm", "project_linf", "FGSM", "IFGSM"]

LossFn = Callable[[Tensor], Tensor]


def _check(x: Tensor, eps: float, name: str = "eps") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"images: expected a float tensor [B,C,H,W], got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ValueError(f"images: expected a float tensor in [0, 1], got dtype {x.dtype}")
    if not (eps >= 0) or eps != eps:
        raise ValueError(f"{name}: must be a number >= 0, got {eps}")


def input_gradient(x: Tensor, loss_fn: LossFn) -> Tensor:
    """d(sum of ``loss_fn(x)``)/dx, without touching ``x`` (losses per image are summed, so each image gets
    the gradient of its own loss)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        (g,) = torch.autograd.grad(loss.sum(), x)
    return g


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Projection onto {z : |z − x|_inf <= eps} ∩ [0, 1]."""
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def fgsm(x: Tensor, loss_fn: LossFn, eps: float | Tensor) -> Tensor:
    """One signed gradient step of size ``eps`` (a float, or a [B] tensor of per-image sizes), clipped to [0, 1]."""
    _check(x, float(eps.min()) if isinstance(eps, Tensor) else eps)
    g = input_gradient(x, loss_fn)
    e = eps.view(-1, 1, 1, 1).to(x) if isinstance(eps, Tensor) else eps
    return torch.clamp(x.detach() + e * g.sign(), 0.0, 1.0)


def ifgsm(x: Tensor, loss_fn: LossFn, eps: float, steps: int, alpha: float | None = None, *,
          mask: Tensor | None = None, random_start: bool = False, stop: Callable[[Tensor], Tensor] | None = None,
          generator: torch.Generator | None = None) -> Tensor:
    """``steps`` signed steps of size ``alpha`` (default ``eps / steps``), each projected onto the ``eps`` ball
    and [0, 1]; pixels outside ``mask`` never change; images for which ``stop`` is True stop moving."""
    _check(x, eps)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: must be an int >= 0, got {steps!r}")
    alpha = eps / max(steps, 1) if alpha is None else alpha
    if not (alpha >= 0):
        raise ValueError(f"alpha: must be a number >= 0, got {alpha}")
    x = x.detach()
    m = None if mask is None else mask.to(x).expand_as(x)
    if m is not None and ((m != 0) & (m != 1)).any():
        raise ValueError("mask: expected a 0/1 mask")
    x_adv = x.clone()
    if random_start and eps > 0:
        noise = (torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
                 .to(x) * 2 - 1) * eps
        x_adv = project_linf(x + (noise if m is None else noise * m), x, eps)
    if steps == 0:
        return x_adv
    # the eps-ball ∩ [0, 1] once: clamp(v, lo, hi) == project_linf(v, x, eps) bit for bit (x in [0, 1])
    lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        if stop is not None:
            active = active & ~stop(x_adv).to(torch.bool).view(-1)
            if not active.any():
                break
        g = _own_gradient(x_adv, loss_fn).sign_()
        if m is not None:
            g.mul_(m)
        if stop is not None:
            g.mul_(active.view(-1, 1, 1, 1).to(g))
        x_adv = torch.clamp(x_adv + alpha * g, lo, hi)
    return x_adv


def _own_gradient(x_adv: Tensor, loss_fn: LossFn) -> Tensor:
    """:func:`input_gradient` for a tensor the caller owns (no copy: it gets ``requires_grad`` for the call)."""
    x_adv.requires_grad_(True)
    try:
        with torch.enable_grad():
            (g,) = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
    finally:
        x_adv.requires_grad_(False)
    return g


class FGSM(Attack):
    """``FGSM(model, eps)(images, loss_fn)``; ``loss_fn`` gets the images and may call ``self.model``."""

    def __init__(self, model, eps: float = 8 / 255, device=None) -> None:
        super().__init__(model, device)
        self.eps = eps

    def forward(self, images: Tensor, loss_fn: LossFn) -> Tensor:
        with frozen(self.model, check=False):
            return fgsm(images.to(self.device), loss_fn, self.eps)


class IFGSM(Attack):
    """``IFGSM(model, eps, steps, alpha)(images, loss_fn, mask=None)`` (PGD with ``random_start=True``)."""

    def __init__(self, model, eps: float = 8 / 255, steps: int = 10, alpha: float | None = None,
                 random_start: bool = False, device=None) -> None:
        super().__init__(model, device)
        self.eps, self.steps, self.alpha, self.random_start = eps, steps, alpha, random_start

    def forward(self, images: Tensor, loss_fn: LossFn, mask: Tensor | None = None, stop=None) -> Tensor:
        with frozen(self.model, check=False):
            return ifgsm(images.to(self.device), loss_fn, self.eps, self.steps, self.alpha, mask=mask,
                         random_start=self.random_start, stop=stop)
