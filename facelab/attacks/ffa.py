"""FFA, the fast flipping attribute attack (Rozsa et al., Eqs. 8-9), and FGS (Eq. 7) on binary attribute nets.

An *attribute net* maps images ``[B,3,H,W]`` in [0, 1] to a score vector ``f(x)`` ``[B,A]``; attribute ``i`` is
present when ``f_i(x) > 0`` (Eq. 2). Its ``loss_kind`` says what the scores are:

* ``"euclidean"`` -- scores of a net trained with Euclidean loss on ±1 labels (Eq. 1, 4; the paper's separate
  nets and MOON): FGS uses ``J = (f_i(x) - y)^2``;
* ``"logodds"`` -- log-odds of a pretrained classifier's binary attribute (the zoo adapters of
  :mod:`facelab.models.attributes`): FGS uses the binary cross-entropy ``softplus(-y f_i(x))``;
* ``"softmax"`` -- a net trained with softmax loss (§5): ``net.logits(x)`` gives ``[B,A,2]`` (absent, present)
  and the score is their difference; FGS uses the cross-entropy, FFA works on the two logits.

**FFA** (Eqs. 8-9): the target ``t_i(x)`` is the score vector with the attacked attribute set to zero (§5:
for softmax nets, the two logits with the *higher* one set to zero), and the perturbation follows the gradient
of ``1/2 ||t_i(x) - f(x)||^2`` with ``t`` held fixed. The paper writes ``eta = eps * grad``; the step that moves
``f`` *towards* ``t`` (and so flips the attribute once it overshoots) is the negative gradient, which is what
:func:`ffa_direction` returns. **MFFA** is FFA on a multi-output net (MOON): the same code, with ``t`` keeping
every other attribute's current score. Directions are scaled to L-inf norm 1 so that ``eps`` is an L-inf size
for FGS and FFA alike (the line search of :mod:`facelab.attacks.line_search` finds it).

**FGS** (Eq. 7) is the shared :mod:`facelab.attacks.fgsm` core on ``J(theta, x, y)`` with ``y`` the *current*
decision ``c(x)`` (±1): increasing that loss flips the decision, for a correctly classified image (an
adversarial example) and for a misclassified one (a natural adversarial sample, Eq. 10) alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.attacks.base import Attack, frozen
from facelab.attacks.fgsm import fgsm, input_gradient

__all__ = ["LOSS_KINDS", "attribute_scores", "decisions", "flip_target", "softmax_flip_target", "ffa_loss",
           "fgs_loss", "current_labels", "ffa_direction", "fgs_direction", "ffa", "fgs", "FFA"]

LOSS_KINDS = ("euclidean", "logodds", "softmax")


def _kind(net: nn.Module) -> str:
    kind = getattr(net, "loss_kind", "euclidean")
    if kind not in LOSS_KINDS:
        raise ValueError(f"net.loss_kind: must be one of {LOSS_KINDS}, got {kind!r}")
    return kind


def attribute_scores(net: nn.Module, x: Tensor) -> Tensor:
    """``f(x)`` as ``[B,A]`` (a net returning ``[B]`` has one attribute)."""
    s = net(x)
    return s[:, None] if s.dim() == 1 else s


def decisions(net: nn.Module, x: Tensor) -> Tensor:
    """``c(x)`` of Eq. 2: ``[B,A]`` bool, attribute present iff ``f_i(x) > 0``."""
    with torch.no_grad():
        return attribute_scores(net, x) > 0


def _index(index: int | Tensor, b: int, a: int, device: torch.device) -> Tensor:
    idx = torch.as_tensor(index, device=device).long().reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(b)
    if idx.numel() != b:
        raise ValueError(f"index: expected an int or {b} attribute indices, got {idx.numel()}")
    if ((idx < 0) | (idx >= a)).any():
        raise ValueError(f"index: attribute indices must lie in [0, {a}), got {idx.tolist()}")
    return idx


def _pick(t: Tensor, idx: Tensor) -> Tensor:
    """``t[b, idx[b]]`` for each row ``b`` of ``t`` ``[B,A,...]`` -> ``[B,...]``."""
    at = idx.view(-1, 1, *([1] * (t.dim() - 2))).expand(-1, 1, *t.shape[2:])
    return t.gather(1, at).squeeze(1)


def flip_target(scores: Tensor, index: int | Tensor) -> Tensor:
    """Eq. 8: ``t_i(x)`` = the scores ``[B,A]`` (detached) with attribute ``index`` (per image or one) set to 0."""
    t = scores.detach()
    return t.scatter(1, _index(index, t.shape[0], t.shape[1], t.device)[:, None], 0.0)


def softmax_flip_target(logits: Tensor) -> Tensor:
    """§5: the two logits ``[B,2]`` (detached) with the higher one set to zero and the other unchanged."""
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"logits: expected [B,2], got {tuple(logits.shape)}")
    t = logits.detach()
    return t.scatter(1, t.argmax(1, keepdim=True), 0.0)


def ffa_loss(net: nn.Module, x: Tensor, index: int | Tensor) -> Tensor:
    """``1/2 ||t_i(x) - f(x)||^2`` per image ``[B]`` (Eq. 9's loss), ``t`` from the current ``x`` (Eq. 8)."""
    if _kind(net) == "softmax":
        logits = net.logits(x)  # [B,A,2]
        li = _pick(logits, _index(index, logits.shape[0], logits.shape[1], logits.device))  # [B,2]
        return 0.5 * ((softmax_flip_target(li) - li) ** 2).sum(1)
    f = attribute_scores(net, x)
    return 0.5 * ((flip_target(f, index) - f) ** 2).sum(1)


def fgs_loss(net: nn.Module, x: Tensor, index: int | Tensor, y: Tensor) -> Tensor:
    """``J(theta, x, y)`` per image ``[B]`` for attribute ``index`` and labels ``y`` in {-1, +1} ``[B]``."""
    kind = _kind(net)
    y = y.to(x.dtype).reshape(-1)
    if kind == "softmax":
        logits = net.logits(x)
        li = _pick(logits, _index(index, logits.shape[0], logits.shape[1], logits.device))
        return F.cross_entropy(li, (y > 0).long(), reduction="none")
    f = attribute_scores(net, x)
    fi = _pick(f, _index(index, f.shape[0], f.shape[1], f.device))
    return (fi - y) ** 2 if kind == "euclidean" else F.softplus(-y * fi)


def current_labels(net: nn.Module, x: Tensor, index: int | Tensor) -> Tensor:
    """``y = c(x)`` of attribute ``index`` as ±1 ``[B]`` in ``x``'s dtype (the label FGS attacks, Eq. 7 / Eq. 10)."""
    d = decisions(net, x)
    return _pick(d, _index(index, d.shape[0], d.shape[1], d.device)).to(x.dtype) * 2 - 1


def _linf_unit(g: Tensor) -> Tensor:
    m = g.flatten(1).abs().amax(1).clamp_min(torch.finfo(g.dtype).tiny)
    return g / m.view(-1, *([1] * (g.dim() - 1)))


def ffa_direction(net: nn.Module, x: Tensor, index: int | Tensor) -> Tensor:
    """The FFA (MFFA on a multi-output net) perturbation direction: ``-grad_x 1/2 ||t_i(x) - f(x)||^2`` at ``x``,
    scaled to L-inf norm 1 per image (an image whose gradient is zero gets a zero direction)."""
    with frozen(net, check=False):
        g = input_gradient(x, lambda z: ffa_loss(net, z, index))
    return _linf_unit(-g)


def fgs_direction(net: nn.Module, x: Tensor, index: int | Tensor, y: Tensor | None = None) -> Tensor:
    """``sign(grad_x J(theta, x, y))`` (Eq. 7 with eps = 1), ``y`` = the current decision ``c(x)`` by default."""
    with frozen(net, check=False):
        if y is None:
            y = current_labels(net, x, index)
        return input_gradient(x, lambda z: fgs_loss(net, z, index, y)).sign()


def ffa(net: nn.Module, x: Tensor, index: int | Tensor, eps: float | Tensor) -> Tensor:
    """One FFA step of L-inf size ``eps`` (float or [B]), clipped to [0, 1] (no rounding)."""
    if isinstance(eps, Tensor):
        e = eps.to(x).view(-1, 1, 1, 1)
    else:
        if not eps >= 0:
            raise ValueError(f"eps: must be a number >= 0, got {eps}")
        e = eps
    return torch.clamp(x.detach() + e * ffa_direction(net, x, index), 0.0, 1.0)


def fgs(net: nn.Module, x: Tensor, index: int | Tensor, eps: float | Tensor) -> Tensor:
    """One FGS step (Eq. 7) on the current decision: :func:`facelab.attacks.fgsm.fgsm` on :func:`fgs_loss`."""
    with frozen(net, check=False):
        y = current_labels(net, x, index)
        return fgsm(x, lambda z: fgs_loss(net, z, index, y), eps)



class FFA(Attack):
    """``FFA(net, eps)(images, index)``: one FFA step on attribute ``index`` (torchattacks style)."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, device=None) -> None:
        super().__init__(model, device)
        self.eps = eps

    def forward(self, images: Tensor, index: int | Tensor) -> Tensor:
        return ffa(self.model, images.to(self.device), index, self.eps)
