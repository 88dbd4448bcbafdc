"""PASS, the perceptual adversarial similarity score (Rozsa, Rudd & Boult 2016; Rozsa et al. §3).

``PASS(x_adv, x) = SSIM(psi(x_adv, x), x)``: first the homography ``psi`` that maximises the enhanced
correlation coefficient (ECC, Evangelidis & Psarakis 2008) between the two images aligns the perturbed image
onto the original (OpenCV ``findTransformECC`` with ``MOTION_HOMOGRAPHY`` on the grey images, then
``warpPerspective`` with the inverse map), then the structural similarity (scikit-image
``structural_similarity``, colour channels averaged, data range 1) of the aligned image and the original.
PASS is 1 for identical images; the paper calls a perturbed image *adversarial* when PASS >= tau = 0.95.

ECC can fail to converge (``cv2.error``, e.g. on a flat image, or a singular update); the pair is then scored
*without* alignment (identity homography) and the failure is reported in :class:`PassResult` and counted by
:func:`pass_scores`, never raised.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

__all__ = ["PassResult", "pass_score", "pass_scores", "ecc_homography"]


@dataclasses.dataclass
class PassResult:
    """``score`` (PASS), ``ecc_converged`` (False: ECC failed and the identity was used) and the homography."""

    score: float
    ecc_converged: bool
    homography: np.ndarray


def _hwc(image, name: str) -> np.ndarray:
    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected an RGB image [3,H,W] or [H,W,3], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: non-finite pixel values")
    return np.ascontiguousarray(a, dtype=np.float32)


def ecc_homography(adv: np.ndarray, orig: np.ndarray, iterations: int = 100, eps: float = 1e-6,
                   gauss_size: int = 5) -> tuple[np.ndarray, bool]:
    """(3x3 homography mapping ``orig``'s pixels into ``adv``, converged?) for HWC float images in [0, 1]."""
    g_adv = cv2.cvtColor(adv, cv2.COLOR_RGB2GRAY)
    g_orig = cv2.cvtColor(orig, cv2.COLOR_RGB2GRAY)
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, int(iterations), float(eps))
    try:
        _, warp = cv2.findTransformECC(g_orig, g_adv, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, gauss_size)
    except cv2.error:
        return np.eye(3, dtype=np.float32), False
    if not np.isfinite(warp).all():
        return np.eye(3, dtype=np.float32), False
    return warp, True


def pass_score(adv, orig, *, iterations: int = 100, eps: float = 1e-6) -> PassResult:
    """PASS of one perturbed image ``adv`` against its original ``orig`` (tensors [3,H,W] or HWC arrays, [0, 1])."""
    a, o = _hwc(adv, "adv"), _hwc(orig, "orig")
    if a.shape != o.shape:
        raise ValueError(f"adv, orig: shapes differ ({a.shape} vs {o.shape})")
    if np.array_equal(a, o):
        return PassResult(1.0, True, np.eye(3, dtype=np.float32))
    warp, ok = ecc_homography(a, o, iterations, eps)
    h, w = o.shape[:2]
    aligned = a if not ok else cv2.warpPerspective(a, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                                   borderMode=cv2.BORDER_REPLICATE)
    s = structural_similarity(o, aligned, channel_axis=-1, data_range=1.0)
    return PassResult(float(s), ok, warp)


def pass_scores(adv: torch.Tensor, orig: torch.Tensor, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(PASS [B], ECC failed [B] bool) of a batch ``adv`` [B,3,H,W] against ``orig`` [B,3,H,W]."""
    if adv.shape != orig.shape or adv.dim() != 4:
        raise ValueError(f"adv, orig: expected two [B,3,H,W] batches of one shape, got {tuple(adv.shape)} and "
                         f"{tuple(orig.shape)}")
    res = [pass_score(a, o, **kwargs) for a, o in zip(adv, orig)]
    return np.array([r.score for r in res]), np.array([not r.ecc_converged for r in res])
