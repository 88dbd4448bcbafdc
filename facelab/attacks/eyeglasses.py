"""Adversarial eyeglasses (Sharif, Bhagavatula, Bauer & Reiter, CCS 2016), as the *Dark Arts* blog applies them.

The three digital steps of the blog: (1) an eyeglass frame is rendered on the attacker's face and initialised
**yellow**; (2) gradient steps change the colours of the frame's pixels *only* (the frame mask), towards a
target identity (impersonation) or away from the true one (dodging); (3) the run stops as soon as the target
confidence reaches a threshold. Options of Sharif et al.: the total variation of the frame (smooth colours,
their Eq. 3) and the non-printability score (colours near a printable palette, their Eq. 4), subtracted from
the objective with weights; and an EOT variant that averages the objective over small pose / scale /
brightness changes, standing for the physical setting.

* :func:`glasses_mask` -- the frame mask ``[B,1,H,W]`` (0/1) drawn from the 68 landmarks (iBUG order) of
  :mod:`facelab.models.landmarks68`: two elliptical rims around the eyes (brows to cheekbones), a bridge over
  the nose and two temple arms to the face outline, turned with the line of the eyes;
* :func:`wear_glasses` -- paint the frame a colour (yellow by default);
* :func:`total_variation`, :func:`non_printability_score`, :data:`DEFAULT_PALETTE`;
* :func:`random_pose` -- the EOT transformations (differentiable affine warp + brightness);
* :func:`eyeglass_attack` -- the attack; the signed steps are :func:`facelab.attacks.fgsm.ifgsm` with the
  frame as mask, an L-inf radius of 1 (the frame may take any colour) and its ``stop`` rule;
* :class:`EyeglassAttack` -- torchattacks-style wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.attacks.base import Attack, frozen
from facelab.attacks.fgsm import ifgsm

__all__ = ["glasses_mask", "wear_glasses", "total_variation", "non_printability_score", "DEFAULT_PALETTE",
           "random_pose", "eyeglass_attack", "EyeglassAttack", "YELLOW"]

YELLOW = (1.0, 1.0, 0.0)

#: Stand-in printable palette (RGB in [0,1]): a 3x3x3 grid over [0.15, 0.85], the colours a consumer printer
#: reproduces on paper. Sharif et al. measured 30 colours printed and photographed; they are not published.
DEFAULT_PALETTE: tuple[tuple[float, float, float], ...] = tuple(
    (r, g, b) for r in (0.15, 0.5, 0.85) for g in (0.15, 0.5, 0.85) for b in (0.15, 0.5, 0.85))


def _landmarks(landmarks: Tensor | np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, Tensor) else landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks: expected [68,2] or [B,68,2] (iBUG 68 points, x y), got shape {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks: not finite")
    return lm


def glasses_mask(landmarks: Tensor | np.ndarray, size: int | tuple[int, int], thickness: float = 0.13,
                 lens_width: float = 1.0, lens_height: float = 0.62, arms: bool = True) -> Tensor:
    """Eyeglass-frame masks ``[B,1,H,W]`` (float 0/1) from 68 landmarks ``[B,68,2]`` (or ``[68,2]``).

    With ``d`` the distance between the eye centres (points 36-41 and 42-47) and ``θ`` the angle of that line:
    each rim is an ellipse centred on its eye, of half-axes ``lens_width·d/2`` along the eye line and
    ``lens_height·d/2`` across it, drawn ``thickness·d`` thick; the bridge joins the two rims over the nose
    (point 27); the arms run from each rim's outer edge to the face outline (points 0 and 16).
    """
    lm = _landmarks(landmarks)
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"size: must be positive, got {size}")
    if not thickness > 0:
        raise ValueError(f"thickness: must be > 0, got {thickness}")
    if not (lens_width > 0 and lens_height > 0):
        raise ValueError(f"lens_width, lens_height: must be > 0, got {lens_width}, {lens_height}")
    ss = 4  # draw at 4x and area-downsample: smooth rims, then threshold at half cover
    out = np.zeros((lm.shape[0], h, w), dtype=np.float32)
    for b, p in enumerate(lm):
        el, er = p[36:42].mean(0), p[42:48].mean(0)  # image-left eye, image-right eye
        v = er - el
        d = float(np.hypot(*v))
        if d < 1e-3:
            raise ValueError(f"landmarks[{b}]: the two eyes coincide")
        u = v / d
        ang = math.degrees(math.atan2(u[1], u[0]))
        t = max(1, int(round(thickness * d * ss)))
        canvas = np.zeros((h * ss, w * ss), dtype=np.uint8)
        ax = (int(round(lens_width * d / 2 * ss)), int(round(lens_height * d / 2 * ss)))
        for c in (el, er):
            cv2.ellipse(canvas, (int(round((c[0] + 0.5) * ss - 0.5)), int(round((c[1] + 0.5) * ss - 0.5))), ax, ang, 0,
                        360, 255, t, lineType=cv2.LINE_AA)
        mid = (el + er) / 2
        nose = p[27] - mid  # the nose root, a little above the eye line when the points are sane
        bridge = mid + 0.5 * nose if float(np.hypot(*nose)) < 0.5 * d else mid
        half = lens_width * d / 2
        a, bb = el + u * half * 0.95, er - u * half * 0.95  # the rims' inner edges
        for q0, q1 in ((a, bridge), (bridge, bb)):
            cv2.line(canvas, _pt(q0, ss), _pt(q1, ss), 255, t, lineType=cv2.LINE_AA)
        if arms:
            for c, sign, jaw in ((el, -1.0, p[0]), (er, 1.0, p[16])):
                start = c + sign * u * half * 0.98
                end = start + sign * u * max(float(np.dot(jaw - start, sign * u)), 0.0)
                cv2.line(canvas, _pt(start, ss), _pt(end, ss), 255, t, lineType=cv2.LINE_AA)
        small = cv2.resize(canvas.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
        out[b] = (small >= 0.5).astype(np.float32)
    return torch.from_numpy(out)[:, None]


def _pt(q: np.ndarray, ss: int) -> tuple[int, int]:
    return int(round((q[0] + 0.5) * ss - 0.5)), int(round((q[1] + 0.5) * ss - 0.5))


def wear_glasses(images: Tensor, mask: Tensor, color: Sequence[float] | Tensor = YELLOW) -> Tensor:
    """``images`` with the frame pixels (``mask`` ``[B or 1,1,H,W]``) painted ``color`` (RGB in [0,1])."""
    if images.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"wear_glasses: images [B,3,H,W] and mask [B,1,H,W] of the same size expected, got "
                         f"{tuple(images.shape)} and {tuple(mask.shape)}")
    c = torch.as_tensor(color, dtype=images.dtype, device=images.device).reshape(-1)
    if c.numel() != 3 or bool(((c < 0) | (c > 1)).any()):
        raise ValueError(f"color: expected 3 values in [0,1], got {c.tolist()}")
    m = mask.to(images)
    return images * (1 - m) + c.view(1, 3, 1, 1) * m


def total_variation(images: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Sharif et al.'s TV of the frame, per image ``[B]``: Σ sqrt((r_{i,j} − r_{i+1,j})² + (r_{i,j} − r_{i,j+1})²)
    over frame pixels whose right and lower neighbours are frame pixels too (the frame's outline is not a
    colour change the printer makes), divided by the number of frame pixels."""
    m = mask.to(images)
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    both = m[..., :-1, :-1] * m[..., :-1, 1:] * m[..., 1:, :-1]
    tv = torch.sqrt((dx ** 2 + dy ** 2).sum(1, keepdim=True) + eps) * both
    return tv.sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)


def non_printability_score(images: Tensor, mask: Tensor, palette: Sequence[Sequence[float]] | Tensor = DEFAULT_PALETTE
                           ) -> Tensor:
    """Sharif et al.'s NPS per image ``[B]``: Σ over frame pixels of Π over palette colours of ‖pixel − colour‖,
    divided by the number of frame pixels (zero when every frame pixel is a palette colour)."""
    pal = torch.as_tensor(palette, dtype=images.dtype, device=images.device)
    if pal.dim() != 2 or pal.shape[1] != 3 or pal.shape[0] == 0:
        raise ValueError(f"palette: expected [P,3] RGB colours, got shape {tuple(pal.shape)}")
    m = mask.to(images)
    diff = images[:, None] - pal[None, :, :, None, None]  # [B,P,3,H,W]
    dist = torch.sqrt((diff ** 2).sum(2) + 1e-12)  # [B,P,H,W]
    prod = dist.prod(1, keepdim=True)
    return (prod * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)


def random_pose(images: Tensor, n: int, generator: torch.Generator | None = None, rotate: float = 5.0,
                scale: float = 0.05, shift: float = 0.03, brightness: float = 0.1) -> Tensor:
    """``n`` random versions of each image, ``[n*B,3,H,W]`` (sample ``k`` of image ``b`` at ``k*B + b``):
    rotation by up to ``rotate`` degrees, scaling by ``1 ± scale``, a shift of up to ``shift`` × the side,
    brightness × ``1 ± brightness``; differentiable w.r.t. the pixels (bilinear, border replicated)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: must be an int >= 1, got {n!r}")
    b = images.shape[0]
    r = torch.rand((n * b, 5), generator=generator).to(images) * 2 - 1
    ang = r[:, 0] * math.radians(rotate)
    s = 1 + r[:, 1] * scale
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, r[:, 2] * 2 * shift], -1),
                         torch.stack([sin, cos, r[:, 3] * 2 * shift], -1)], 1)
    x = images.repeat(n, 1, 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (out * (1 + r[:, 4] * brightness).view(-1, 1, 1, 1)).clamp(0, 1)


def eyeglass_attack(model: nn.Module, images: Tensor, labels: Tensor, mask: Tensor, targets: Tensor | None = None, *,
                    steps: int = 100, alpha: float = 4 / 255, stop_confidence: float | None = 0.9,
                    tv_weight: float = 0.0, nps_weight: float = 0.0,
                    palette: Sequence[Sequence[float]] | Tensor = DEFAULT_PALETTE, init_color: Sequence[float] | None = YELLOW,
                    eot_samples: int = 0, eot_kwargs: dict | None = None, generator: torch.Generator | None = None,
                    return_steps: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Adversarial eyeglasses on ``images`` ``[B,3,H,W]`` (true ``labels`` ``[B]``) for a classifier ``model``
    (images -> logits): impersonation of ``targets`` ``[B]``, or dodging when ``targets`` is None.

    The frame (``mask``) is painted ``init_color`` (None: it keeps the colours it has, e.g. to continue
    from earlier glasses) and then changed by ``steps`` signed steps of size ``alpha``
    inside the frame only (:func:`~facelab.attacks.fgsm.ifgsm`) on the objective
    ``log p_target`` (impersonation) or ``−log p_true`` (dodging), minus ``tv_weight·TV − nps_weight·NPS``.
    An image stops moving once ``p_target ≥ stop_confidence`` (dodging: ``p_true ≤ 1 − stop_confidence``);
    ``None`` never stops early. ``eot_samples > 0``: the objective is averaged over that many
    :func:`random_pose` draws per step (``eot_kwargs`` go to it; ``generator`` seeds the draws).
    Images that have stopped are no longer run through the model. ``return_steps``: also return the number
    of gradient steps each image took ``[B]``.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [B,3,H,W], got {tuple(images.shape)}")
    b = images.shape[0]
    labels = torch.as_tensor(labels, device=images.device).reshape(-1)
    if labels.numel() != b:
        raise ValueError(f"labels: expected {b} labels, got {labels.numel()}")
    if targets is not None:
        targets = torch.as_tensor(targets, device=images.device).reshape(-1)
        if targets.numel() != b:
            raise ValueError(f"targets: expected {b} targets, got {targets.numel()}")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, b) or mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"mask: expected [B,1,H,W] matching the images, got {tuple(mask.shape)}")
    if stop_confidence is not None and not 0 < stop_confidence <= 1:
        raise ValueError(f"stop_confidence: must be in (0, 1] or None, got {stop_confidence}")
    if tv_weight < 0 or nps_weight < 0:
        raise ValueError(f"tv_weight, nps_weight: must be >= 0, got {tv_weight}, {nps_weight}")
    if not isinstance(eot_samples, int) or eot_samples < 0:
        raise ValueError(f"eot_samples: must be an int >= 0, got {eot_samples!r}")
    m = mask.to(images).expand(b, -1, -1, -1)
    x0 = images.detach() if init_color is None else wear_glasses(images, m, init_color)
    cls = targets if targets is not None else labels
    sign = 1.0 if targets is not None else -1.0
    ekw = eot_kwargs or {}
    done = torch.zeros(b, dtype=torch.bool, device=images.device)  # frozen images: not run through the model
    taken = torch.zeros(b, dtype=torch.long)

    def loss_fn(x: Tensor) -> Tensor:
        act = (~done).nonzero()[:, 0]
        xa, ca, ma = x[act], cls[act], m[act]
        if eot_samples:
            xs = random_pose(xa, eot_samples, generator, **ekw)
            logp = F.log_softmax(model(xs), -1).gather(1, ca.repeat(eot_samples)[:, None])[:, 0]
            obj = sign * logp.view(eot_samples, len(act)).mean(0)
        else:
            obj = sign * F.log_softmax(model(xa), -1).gather(1, ca[:, None])[:, 0]
        if tv_weight:
            obj = obj - tv_weight * total_variation(xa, ma)
        if nps_weight:
            obj = obj - nps_weight * non_printability_score(xa, ma, palette)
        taken[act.cpu()] += 1
        return torch.zeros(b, dtype=obj.dtype, device=obj.device).index_put((act,), obj)

    def stop(x: Tensor) -> Tensor:
        act = (~done).nonzero()[:, 0]
        with torch.no_grad():
            p = F.softmax(model(x[act]), -1).gather(1, cls[act][:, None])[:, 0]
        hit = p >= stop_confidence if targets is not None else p <= 1 - stop_confidence
        done[act[hit]] = True
        return done.clone()

    out = ifgsm(x0, loss_fn, eps=1.0, steps=steps, alpha=alpha, mask=m,
                stop=None if stop_confidence is None else stop)
    return (out, taken) if return_steps else out


class EyeglassAttack(Attack):
    """``EyeglassAttack(model, steps=100, alpha=4/255, ...)(images, labels, mask, targets=None)``."""

    def __init__(self, model: nn.Module, device=None, **kwargs) -> None:
        super().__init__(model, device)
        self.kwargs = kwargs

    def forward(self, images: Tensor, labels: Tensor, mask: Tensor, targets: Tensor | None = None) -> Tensor:
        with frozen(self.model, check=False):
            return eyeglass_attack(self.model, images.to(self.device), labels, mask.to(self.device), targets,
                                   **self.kwargs)
