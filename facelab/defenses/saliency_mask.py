"""The saliency-mask defense (Hayes 2018, "On Visible Adversarial Perturbations & Digital Watermarking"), in
the five steps the *Dark Arts* blog applies it:

1. a **guided-backpropagation** saliency map (Springenberg et al. 2015) of the predicted class: at every ReLU
   the backward signal passes only where the forward input *and* the incoming gradient are positive
   (:class:`GuidedReLU`). :func:`guided_relus` installs that rule on the victim *without editing it*: a
   forward hook on every ``nn.ReLU`` module, and, for nets that call ``F.relu`` / ``torch.relu`` (face-api's
   ports do), a temporary replacement of those functions while the context is open;
2. a pixel threshold **μ** on the map, normalised to [0,1] per image (:func:`normalize_saliency`);
3. **dilation then erosion**, each for **n** iterations of a 3x3 square (OpenCV);
4. every contour (8-connected region) whose area is below **φ** pixels removed (OpenCV contours);
5. the mask applied (masked pixels set to 0, or filled: :func:`apply_mask`), then the image is classified again.

μ, n, φ are chosen by a grid search (:func:`grid_search`) on the blog's goodness
``⅓·(AC(clean, r) + AC(adv, r) + 1 − AC(adv, t))`` (:func:`goodness`). :class:`SaliencyMask` is the module
form (a :class:`~facelab.defenses.base.Defense` holding a reference to the victim it explains); its backward
pass is BPDA: the mask is treated as a constant, so ``d out / d x = 1 − mask`` (Athalye et al. 2018).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.defenses.base import Defense, check_float, check_int
from facelab.models.base import check_images

__all__ = ["GuidedReLU", "guided_relus", "saliency_map", "normalize_saliency", "mask_stages", "saliency_mask",
           "apply_mask", "SaliencyMask", "goodness", "grid_search", "FILLS"]

FILLS = ("zero", "mean", "inpaint")


class GuidedReLU(torch.autograd.Function):
    """relu(x) forward; backward ``grad · [x > 0] · [grad > 0]`` (guided backpropagation)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad) * (grad > 0).to(grad)


def _guided_relu(x: Tensor, inplace: bool = False) -> Tensor:  # F.relu's signature; never in place
    return GuidedReLU.apply(x)


def _relu_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    # an in-place ReLU has overwritten its input with relu(x): relu(x) > 0 exactly where x > 0, same rule
    return GuidedReLU.apply(inputs[0] if not getattr(module, "inplace", False) else output)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[nn.Module]:
    """While open, every ReLU that ``model`` runs backpropagates by the guided rule; ``model`` is not edited.

    ``nn.ReLU`` modules get a forward hook; ``torch.nn.functional.relu``/``relu_`` and ``torch.relu``/``relu_``
    are replaced by :class:`GuidedReLU` (so this must not run concurrently with other work in the process).
    Other activations (PReLU, ReLU6, ...) keep their ordinary gradient.
    """
    handles = [m.register_forward_hook(_relu_hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    saved = {(F, "relu"): F.relu, (F, "relu_"): F.relu_, (torch, "relu"): torch.relu, (torch, "relu_"): torch.relu_}
    try:
        for (mod, name) in saved:
            setattr(mod, name, _guided_relu)
        yield model
    finally:
        for (mod, name), fn in saved.items():
            setattr(mod, name, fn)
        for h in handles:
            h.remove()


def saliency_map(model: nn.Module, images: Tensor, classes: Tensor | None = None) -> Tensor:
    """Guided-backprop gradients ``[B,3,H,W]`` of the logit of ``classes`` (default: the predicted class)
    w.r.t. ``images``."""
    images = check_images(images)
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), guided_relus(model):
        logits = model(x)
        if classes is None:
            classes = logits.argmax(-1)
        classes = torch.as_tensor(classes, device=logits.device).reshape(-1)
        if classes.numel() != len(x):
            raise ValueError(f"classes: expected {len(x)} class indices, got {classes.numel()}")
        (g,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), x)
    return g


def normalize_saliency(grad: Tensor) -> Tensor:
    """A map ``[B,H,W]`` in [0,1] from gradients ``[B,3,H,W]``: per pixel the largest |gradient| over the
    channels, then per image the usual visualisation scaling ``clip(0.5 + 0.1·(s − mean)/std, 0, 1)``
    (the document does not say how the map is scaled; with this one μ = 0.98 keeps pixels 4.8 standard
    deviations above the image's mean saliency)."""
    if grad.dim() != 4:
        raise ValueError(f"grad: expected [B,C,H,W] gradients, got {tuple(grad.shape)}")
    s = grad.abs().amax(1)
    mean = s.mean((1, 2), keepdim=True)
    std = s.std((1, 2), keepdim=True)
    return (0.5 + 0.1 * (s - mean) / (std + 1e-12)).clamp(0, 1)


def _check_params(fn: str, mu: float, n: int, phi: float) -> tuple[float, int, float]:
    return check_float(fn, "mu", mu, 0.0, 1.0), check_int(fn, "n", n, 0), check_float(fn, "phi", phi, 0.0)


def mask_stages(saliency: Tensor | np.ndarray, mu: float, n: int, phi: float) -> dict[str, np.ndarray]:
    """The mask of one map ``[H,W]`` (values in [0,1]) at each step, uint8 0/1 arrays ``[H,W]``:
    ``threshold`` (saliency > μ), ``morphology`` (n dilations then n erosions, 3x3), ``contours``
    (regions of area < φ removed; area = pixel count of the filled contour)."""
    mu, n, phi = _check_params("mask_stages", mu, n, phi)
    s = np.asarray(saliency.detach().cpu() if isinstance(saliency, Tensor) else saliency, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"saliency: expected one map [H,W], got shape {s.shape}")
    thr = (s > mu).astype(np.uint8)
    morph = thr
    if n:
        k = np.ones((3, 3), np.uint8)
        morph = cv2.erode(cv2.dilate(thr, k, iterations=n), k, iterations=n)
    contours, _ = cv2.findContours(morph, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    keep = np.zeros_like(morph)
    for c in contours:
        region = np.zeros_like(morph)
        cv2.drawContours(region, [c], -1, 1, thickness=cv2.FILLED)
        if int(region.sum()) >= phi:
            keep |= region
    return {"threshold": thr, "morphology": morph, "contours": keep & morph}


def saliency_mask(saliency: Tensor, mu: float, n: int, phi: float) -> Tensor:
    """Final masks ``[B,1,H,W]`` (float 0/1, 1 = removed) of normalised maps ``[B,H,W]`` (:func:`mask_stages`)."""
    if saliency.dim() != 3:
        raise ValueError(f"saliency: expected maps [B,H,W], got {tuple(saliency.shape)}")
    out = [torch.from_numpy(mask_stages(s, mu, n, phi)["contours"].astype(np.float32)) for s in saliency.cpu()]
    return torch.stack(out)[:, None].to(saliency.device)


def apply_mask(images: Tensor, mask: Tensor, fill: str = "zero") -> Tensor:
    """``images`` with the ``mask`` pixels replaced: ``"zero"`` (black, as the blog shows), ``"mean"`` (the
    image's mean colour) or ``"inpaint"`` (OpenCV Telea inpainting, radius 3). The mask is a constant of the
    backward pass: ``d out / d images = 1 − mask``."""
    if fill not in FILLS:
        raise ValueError(f"fill: must be one of {FILLS}, got {fill!r}")
    m = mask.to(images).detach()
    if fill == "zero":
        value = torch.zeros_like(images)
    elif fill == "mean":
        value = images.detach().mean((2, 3), keepdim=True).expand_as(images)
    else:
        outs = []
        for im, mk in zip(images.detach().cpu(), m.cpu()):
            u8 = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            res = cv2.inpaint(u8, (mk[0].numpy() > 0).astype(np.uint8), 3, cv2.INPAINT_TELEA)
            outs.append(torch.from_numpy(res).permute(2, 0, 1).float() / 255)
        value = torch.stack(outs).to(images)
    return images * (1 - m) + value * m


class SaliencyMask(Defense):
    """Module form: ``SaliencyMask(victim, mu, n, phi)(images)`` masks what the victim's guided-backprop map
    finds salient. The victim is held by reference (not a submodule). BPDA backward (mask constant)."""

    differentiable = False

    def __init__(self, victim: nn.Module, mu: float = 0.98, n: int = 8, phi: float = 80, fill: str = "zero") -> None:
        super().__init__()
        self.mu, self.n, self.phi = _check_params("SaliencyMask", mu, n, phi)
        if fill not in FILLS:
            raise ValueError(f"SaliencyMask: fill must be one of {FILLS}, got {fill!r}")
        self.fill = fill
        self._victim = (victim,)  # a tuple: not registered, so defended(defense, victim) holds the victim once

    @property
    def victim(self) -> nn.Module:
        return self._victim[0]

    def mask(self, images: Tensor) -> Tensor:
        return saliency_mask(normalize_saliency(saliency_map(self.victim, images)), self.mu, self.n, self.phi)

    def forward(self, images: Tensor) -> Tensor:
        return apply_mask(images, self.mask(images), self.fill)

    def extra_repr(self) -> str:
        return f"mu={self.mu}, n={self.n}, phi={self.phi}, fill={self.fill!r}"


def goodness(ac_clean_real: Tensor | float, ac_adv_real: Tensor | float, ac_adv_target: Tensor | float):
    """The blog's goodness ``⅓·(AC(clean, r) + AC(adv, r) + 1 − AC(adv, t))``, AC = average confidence."""
    return (ac_clean_real + ac_adv_real + 1 - ac_adv_target) / 3


@torch.no_grad()
def grid_search(model: nn.Module, clean: Tensor, adv: Tensor, saliency_clean: Tensor, saliency_adv: Tensor,
                mus: Sequence[float], ns: Sequence[int], phis: Sequence[float], fill: str = "zero",
                batch_size: int = 64, progress: bool = False) -> list[dict]:
    """Every (μ, n, φ) of the grid: the defended clean and adversarial images classified again.

    ``saliency_*``: normalised maps ``[B,H,W]`` (:func:`normalize_saliency`); they do not depend on the
    parameters, so they are computed once. Returns one record per grid point with ``mu, n, phi`` and the
    softmax probabilities ``p_clean``, ``p_adv`` ``[B,K]`` (CPU) and the mask areas (pixels) per image."""
    if not (len(mus) and len(ns) and len(phis)):
        raise ValueError("grid_search: mus, ns and phis must each hold at least one value")
    for mu, n, phi in itertools.product(mus, ns, phis):
        _check_params("grid_search", mu, n, phi)
    dev = next(iter(model.parameters())).device
    grid = list(itertools.product(mus, ns, phis))
    it = grid
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(grid, desc="grid (μ, n, φ)")
    out = []

    def probs(x: Tensor) -> Tensor:
        return torch.cat([F.softmax(model(x[i:i + batch_size].to(dev)), -1).cpu() for i in range(0, len(x), batch_size)])

    for mu, n, phi in it:
        mc, ma = saliency_mask(saliency_clean, mu, n, phi), saliency_mask(saliency_adv, mu, n, phi)
        out.append({"mu": float(mu), "n": int(n), "phi": float(phi),
                    "p_clean": probs(apply_mask(clean, mc.to(clean.device), fill)),
                    "p_adv": probs(apply_mask(adv, ma.to(adv.device), fill)),
                    "area_clean": mc.sum((1, 2, 3)).cpu(), "area_adv": ma.sum((1, 2, 3)).cpu()})
    return out
