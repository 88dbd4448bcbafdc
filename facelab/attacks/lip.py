"""IMP, LP and LIP (Yang, Wiliem, Chen & Lovell, "Using LIP to Gloss Over Single-Stage Face Detection
Networks") on a detector's dense output, with I-FGSM (:func:`facelab.attacks.fgsm.ifgsm`) as the optimiser.

Each face (instance) *i* owns the anchors assigned to it (:func:`assign_anchors`: the anchors whose decoded
box overlaps the face with IoU >= ``iou``, plus the prior that overlaps it best). Its loss is the poster's
:math:`L(f_\\theta(X, t_c), -1)` summed over those anchors, the binary cross-entropy towards "no face":
``L_i = sum_a -log(1 - s_a) = sum_a softplus(z_a)`` (:func:`instance_losses`). Four perturbations, one
budget (``eps``, ``steps``, ``alpha``):

* **IMP** (image perturbation, the poster's baseline): I-FGSM on :math:`\\sum_i L_i` over the whole image;
* **LP**: the same gradient cropped to the union of the instance regions (our reading of "LP");
* **LIP** (the poster's method): :math:`R = \\sum_i C_{e_i} \\cdot \\nabla_X L_{m_i}` -- each instance's own
  gradient cropped to its region :math:`e_i`, then summed; the step is ``-alpha * sign(R)`` (down the loss
  towards "no face"; IMP and LP step down their gradients alike). LIP-A takes
  :math:`e_i` analytically (the union of the prior boxes of the instance's anchors, :func:`anchor_regions`),
  LIP-H from the measured ERF heat map (a disc of the measured ERF radius at the face centre,
  :func:`disc_regions`, radius from :mod:`facelab.attacks.erf`). The poster does not define the letters;
  this is our reading.

Per-instance gradients without N separate backward passes (:func:`instance_gradients`):

* ``"replicate"`` (default): one batched pass over N copies of the image in which copy *i* carries gradient
  only inside :math:`e_i` (``C_i x + (1 - C_i) stopgrad(x)``); the gradient of
  :math:`\\sum_i L_i(\\text{copy}_i)` w.r.t. ``x`` *is* R, so LIP is an ordinary loss for the shared I-FGSM;
* ``"vmap"``: one forward, the N vector-Jacobian products vectorised (``is_grads_batched``, ``torch.func``);
* ``"group"``: one copy per group of instances whose regions lie further apart than ``reach`` pixels
  (exact when ``reach`` is the theoretical receptive field, since no instance's loss then reaches another's
  region; :func:`region_groups`);
* ``"loop"``: the naive reference, one forward and backward per instance.

``benchmarks/bench_instance_gradients.py`` times them against each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from facelab.attacks.fgsm import ifgsm
from facelab.models.base import DenseOutput

__all__ = ["METHODS", "GRADIENT_MODES", "dense_of", "assign_anchors", "instance_losses", "anchor_regions",
           "disc_regions", "box_regions", "region_groups", "instance_gradients", "localized_gradient",
           "lip_loss", "imp_loss", "faces_alive", "lip_attack"]

METHODS = ("imp", "lp", "lip_a", "lip_h")
GRADIENT_MODES = ("replicate", "vmap", "group", "loop")


def dense_of(model: torch.nn.Module, x: Tensor) -> DenseOutput:
    """The dense output of a face detector (``model.dense``) or of an object detector with a ``decode``-style
    heatmap (CenterNet: one 'anchor' per output cell, class-agnostic: the most likely class of the cell)."""
    if hasattr(model, "dense"):
        return model.dense(x)
    if hasattr(model, "stride") and hasattr(model, "labels"):  # CenterNet (facelab.models.human)
        return _centernet_dense(model, x)
    raise TypeError(f"model: {type(model).__name__} has no dense output (needs .dense(x) or a CenterNet heatmap)")


def _centernet_dense(model, x: Tensor) -> DenseOutput:
    heat, wh = model(x)
    b, c, h, w = heat.shape
    H, W = x.shape[-2:]
    s = float(model.stride)
    score, _ = heat.permute(0, 2, 3, 1).reshape(b, h * w, c).max(-1)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    cx, cy = (xs * s).reshape(-1), (ys * s).reshape(-1)
    ext = wh.permute(0, 2, 3, 1).reshape(b, h * w, 4)
    to_px = x.new_tensor([W, H, W, H]) / float(model.input_size)
    boxes = torch.stack([cx - ext[..., 0], cy - ext[..., 1], cx + ext[..., 2], cy + ext[..., 3]], -1) * to_px
    prior = torch.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], -1)[None] * to_px
    p = score.clamp(1e-6, 1 - 1e-6)
    return DenseOutput(anchors=prior.expand(b, -1, -1), boxes=boxes, scores=score, logits=torch.log(p) - torch.log1p(-p))


def assign_anchors(boxes: Tensor, anchors: Tensor, gt: Tensor, iou: float = 0.3) -> Tensor:
    """Instance index of every anchor ([A] long, -1 = background) for one image.

    An anchor belongs to face *i* when its decoded box (``boxes`` [A,4]) has IoU >= ``iou`` with face *i*
    (the best such face); each face also keeps the prior (``anchors`` [A,4]) that overlaps it best, so no
    face is left without anchors."""
    if not 0 < iou <= 1:
        raise ValueError(f"iou: must lie in (0, 1], got {iou}")
    gt = torch.as_tensor(gt, dtype=boxes.dtype, device=boxes.device).reshape(-1, 4)
    out = torch.full((boxes.shape[0],), -1, dtype=torch.long, device=boxes.device)
    if not len(gt):
        return out
    with torch.no_grad():
        ov = box_iou(boxes.detach().float(), gt.float())
        best, idx = ov.max(1)
        out = torch.where(best >= iou, idx, out)
        prior = box_iou(anchors.detach().float(), gt.float()).argmax(0)  # [N]
        out[prior] = torch.arange(len(gt), device=boxes.device)
    return out


def _anchor_loss(dense: DenseOutput, b: int) -> Tensor:
    """-log(1 - s) per anchor of image ``b`` (softplus of the logit when there is one)."""
    if dense.logits is not None:
        return F.softplus(dense.logits[b])
    return -torch.log1p(-dense.scores[b].clamp(max=1 - 1e-6))


def instance_losses(dense: DenseOutput, gts: Sequence[Tensor], iou: float = 0.3) -> list[Tensor]:
    """Per image ``b`` of the batch, ``[N_b]`` losses: :math:`L_i = \\sum_{a \\in A_i} -\\log(1 - s_a)`."""
    if len(gts) != dense.scores.shape[0]:
        raise ValueError(f"gts: {len(gts)} box lists for a batch of {dense.scores.shape[0]} images")
    out = []
    for b, g in enumerate(gts):
        assign = assign_anchors(dense.boxes[b], dense.anchors[b], g, iou)
        per = _anchor_loss(dense, b)
        n = len(g)
        if n == 0:  # an image without faces has no instance losses (the empty slice stays in the graph)
            out.append(per[:0])
            continue
        out.append(torch.zeros(n, dtype=per.dtype, device=per.device).index_add(0, assign.clamp(min=0),
                                                                                 per * (assign >= 0).to(per)))
    return out


# -- instance regions C_{e_i} --------------------------------------------------------------------------
def box_regions(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``[N,H,W]`` 0/1 masks: pixel centres inside each box (x1 y1 x2 y2, clipped to the image)."""
    H, W = size
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1) + 0.5
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W) + 0.5
    return ((xs >= b[:, 0, None, None]) & (xs <= b[:, 2, None, None])
            & (ys >= b[:, 1, None, None]) & (ys <= b[:, 3, None, None])).float()


def disc_regions(centres: Tensor, radius: float | Tensor, size: tuple[int, int]) -> Tensor:
    """``[N,H,W]`` 0/1 discs of ``radius`` pixels (one radius, or one per instance) around ``centres`` [N,2]."""
    H, W = size
    c = torch.as_tensor(centres, dtype=torch.float32).reshape(-1, 2)
    r = torch.as_tensor(radius, dtype=torch.float32).reshape(-1)
    if (r < 0).any():
        raise ValueError(f"radius: must be >= 0, got {r.tolist()}")
    r = r.expand(len(c)) if r.numel() == 1 else r
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1) + 0.5
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W) + 0.5
    d2 = (xs - c[:, 0, None, None]) ** 2 + (ys - c[:, 1, None, None]) ** 2
    return (d2 <= r.view(-1, 1, 1) ** 2).float()


def anchor_regions(dense: DenseOutput, gt: Tensor, size: tuple[int, int], iou: float = 0.3, b: int = 0) -> Tensor:
    """LIP-A's analytic :math:`e_i`: the union of the prior boxes of the anchors assigned to face *i* (``[N,H,W]``)."""
    assign = assign_anchors(dense.boxes[b], dense.anchors[b], gt, iou)
    pri = dense.anchors[b].detach().cpu()
    masks = []
    for i in range(len(gt)):
        sel = pri[(assign == i).cpu()]
        masks.append(box_regions(sel, size).amax(0) if len(sel) else torch.zeros(size))
    return torch.stack(masks) if masks else torch.zeros((0, *size))


def region_groups(masks: Tensor, reach: float) -> list[list[int]]:
    """Greedy grouping of instances whose regions are more than ``reach`` pixels apart (each region dilated by
    ``reach`` must not touch another region of its group). ``reach`` >= the theoretical RF makes the grouped
    per-instance gradient exact."""
    if reach < 0:
        raise ValueError(f"reach: must be >= 0, got {reach}")
    n = masks.shape[0]
    k = int(math.ceil(reach))
    m = masks.float()[:, None]
    dil = (F.max_pool2d(m, 2 * k + 1, 1, k) if k > 0 else m)[:, 0] > 0
    groups: list[list[int]] = []
    for i in range(n):
        for g in groups:
            if not any(bool((dil[i] & (masks[j] > 0)).any() or (dil[j] & (masks[i] > 0)).any()) for j in g):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


# -- per-instance gradients ----------------------------------------------------------------------------
LossesFn = Callable[[Tensor], Tensor]  # x [B,3,H,W] -> [B, N] per-copy, per-instance losses


def instance_gradients(losses_fn: LossesFn, x: Tensor, mode: str = "replicate", masks: Tensor | None = None,
                       groups: Sequence[Sequence[int]] | None = None) -> Tensor:
    """``[N,3,H,W]`` gradients of each instance's loss w.r.t. the one image ``x`` [1,3,H,W].

    ``losses_fn(X)`` returns the N instance losses of every image of a batch ``X`` ([B,N]). ``mode`` as in
    the module doc; ``"group"`` needs ``masks`` [N,H,W] and ``groups``, and returns each instance's gradient
    *inside its region* (the group's summed gradient cropped to the instance's mask)."""
    if mode not in GRADIENT_MODES:
        raise ValueError(f"mode: {mode!r}, choose from {GRADIENT_MODES}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x: expected one image [1,3,H,W], got {tuple(x.shape)}")
    x = x.detach()
    with torch.enable_grad():
        if mode == "loop":
            grads = []
            n = None
            i = 0
            while n is None or i < n:
                xi = x.clone().requires_grad_(True)
                L = losses_fn(xi)[0]
                n = L.numel()
                if n == 0:
                    return x.new_zeros((0, *x.shape[1:]))
                grads.append(torch.autograd.grad(L[i], xi)[0][0])
                i += 1
            return torch.stack(grads)
        if mode == "vmap":
            xi = x.clone().requires_grad_(True)
            L = losses_fn(xi)[0]
            n = L.numel()
            if n == 0:
                return x.new_zeros((0, *x.shape[1:]))
            eye = torch.eye(n, dtype=L.dtype, device=L.device)
            return torch.autograd.grad(L, xi, grad_outputs=eye, is_grads_batched=True)[0][:, 0]
        if mode == "replicate":
            n = losses_fn(x).shape[1] if masks is None else masks.shape[0]
            if n == 0:
                return x.new_zeros((0, *x.shape[1:]))
            X = x.expand(n, -1, -1, -1).clone().requires_grad_(True)
            L = losses_fn(X)
            return torch.autograd.grad(L.diagonal().sum(), X)[0]
        if masks is None or groups is None:
            raise ValueError("mode 'group' needs masks [N,H,W] and groups")
        out = x.new_zeros((masks.shape[0], *x.shape[1:]))
        G = len(groups)
        X = x.expand(G, -1, -1, -1).clone().requires_grad_(True)
        L = losses_fn(X)  # [G, N]
        sel = torch.zeros_like(L)
        for k, g in enumerate(groups):
            sel[k, list(g)] = 1
        gX = torch.autograd.grad((L * sel).sum(), X)[0]
        m = masks.to(x)
        for k, g in enumerate(groups):
            for i in g:
                out[i] = gX[k] * m[i]
        return out


def localized_gradient(grads: Tensor, masks: Tensor) -> Tensor:
    """:math:`R = \\sum_i C_{e_i} \\cdot \\nabla_X L_{m_i}` from ``grads`` [N,3,H,W] and ``masks`` [N,H,W]."""
    if grads.shape[0] != masks.shape[0]:
        raise ValueError(f"masks: {masks.shape[0]} regions for {grads.shape[0]} instance gradients")
    return (grads * masks.to(grads)[:, None]).sum(0, keepdim=True)


# -- losses for the shared I-FGSM ----------------------------------------------------------------------
def imp_loss(model: torch.nn.Module, gts: Sequence[Tensor], iou: float = 0.3) -> Callable[[Tensor], Tensor]:
    """IMP's objective ``x [B,3,H,W] -> [B]`` for :func:`ifgsm` (which ascends it): :math:`-\\sum_i L_i` of each
    image, so that every step goes down the whole-image gradient of the poster's :math:`L(f_\\theta(X, t_c), -1)`."""
    gts = [torch.as_tensor(g, dtype=torch.float32).reshape(-1, 4) for g in gts]

    def loss(x: Tensor) -> Tensor:
        return -torch.stack([l.sum() for l in instance_losses(dense_of(model, x), [g.to(x.device) for g in gts], iou)])
    return loss


def lip_loss(model: torch.nn.Module, gts: Sequence[Tensor], masks: Sequence[Tensor], iou: float = 0.3,
             groups: Sequence[Sequence[Sequence[int]]] | None = None) -> Callable[[Tensor], Tensor]:
    """LIP's objective ``x [B,3,H,W] -> [B]`` whose input gradient is exactly :math:`-R`, :math:`R = \\sum_i C_{e_i} \\nabla_X L_i`
    (:func:`ifgsm` ascends it, i.e. steps ``-alpha sign(R)``)
    (``"replicate"``: copy *i* of image *b* carries gradient only inside ``masks[b][i]``; with ``groups`` one
    copy per group, the masks of a group united -- exact when the groups are :func:`region_groups` at the
    theoretical receptive field)."""
    gts = [torch.as_tensor(g, dtype=torch.float32).reshape(-1, 4) for g in gts]
    if len(masks) != len(gts):
        raise ValueError(f"masks: {len(masks)} mask stacks for {len(gts)} images")
    for b, (g, m) in enumerate(zip(gts, masks)):
        if m.shape[0] != len(g):
            raise ValueError(f"masks[{b}]: {m.shape[0]} regions for {len(g)} faces")
    if groups is None:
        groups = [[[i] for i in range(len(g))] for g in gts]

    def loss(x: Tensor) -> Tensor:
        copies, owner, sel = [], [], []
        for b in range(x.shape[0]):
            m = masks[b].to(x)
            for g in groups[b]:
                c = m[list(g)].amax(0)[None]  # [1,H,W]
                copies.append(c * x[b] + (1 - c) * x[b].detach())
                owner.append(b)
                sel.append(list(g))
        out = [x[b].sum() * 0 for b in range(x.shape[0])]  # keeps every image in the graph
        if not copies:
            return torch.stack(out)
        X = torch.stack(copies)
        L = instance_losses(dense_of(model, X), [gts[b].to(x.device) for b in owner], iou)
        for k, b in enumerate(owner):
            out[b] = out[b] - L[k][sel[k]].sum()
        return torch.stack(out)
    return loss


def faces_alive(model: torch.nn.Module, gts: Sequence[Tensor], delta: float, iou: float = 0.3) -> Callable[[Tensor], Tensor]:
    """Stop rule for :func:`ifgsm`: ``[B]`` True when no anchor assigned to any face of the image still scores
    >= ``delta`` (all faces suppressed at the operating threshold), i.e. the attack has nothing left to do."""
    gts = [torch.as_tensor(g, dtype=torch.float32).reshape(-1, 4) for g in gts]

    def stop(x: Tensor) -> Tensor:
        with torch.no_grad():
            d = dense_of(model, x)
            out = []
            for b, g in enumerate(gts):
                a = assign_anchors(d.boxes[b], d.anchors[b], g.to(x.device), iou)
                out.append(not bool((d.scores[b][a >= 0] >= delta).any()))
        return torch.tensor(out, device=x.device)
    return stop


def lip_attack(model: torch.nn.Module, x: Tensor, gts: Sequence[Tensor], method: str, eps: float, steps: int,
               alpha: float | None = None, *, regions: Sequence[Tensor] | None = None, iou: float = 0.3,
               stop_delta: float | None = None, groups: Sequence[Sequence[Sequence[int]]] | None = None) -> Tensor:
    """IMP / LP / LIP-A / LIP-H with the shared I-FGSM (:func:`facelab.attacks.fgsm.ifgsm`), one budget.

    ``x`` [B,3,H,W]; ``gts`` the faces of each image; ``regions`` the instance regions of each image ([N_b,H,W]
    0/1: LP crops to their union, LIP-A/LIP-H crop each instance's gradient to its own). ``stop_delta``: freeze
    an image once every face is below it. Returns the adversarial images."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r}, choose from {METHODS}")
    if len(gts) != x.shape[0]:
        raise ValueError(f"gts: {len(gts)} box lists for {x.shape[0]} images")
    if method != "imp" and regions is None:
        raise ValueError(f"regions: method {method!r} needs the instance regions of every image")
    stop = None if stop_delta is None else faces_alive(model, gts, stop_delta, iou)
    H, W = x.shape[-2:]
    if method == "imp":
        return ifgsm(x, imp_loss(model, gts, iou), eps, steps, alpha, stop=stop)
    if method == "lp":
        union = torch.stack([r.amax(0) if len(r) else torch.zeros(H, W) for r in regions])[:, None]
        return ifgsm(x, imp_loss(model, gts, iou), eps, steps, alpha, mask=(union > 0).float(), stop=stop)
    return ifgsm(x, lip_loss(model, gts, regions, iou, groups), eps, steps, alpha, stop=stop)
