"""Face verification as a two-class classifier (ResGN paper, §2.2, Eq. 2 and Eq. 5).

A verifier compares the embeddings of two face crops. The ResGN paper (after Bruno López's FGSM code for
FaceNet) turns the distance ``d`` of the two embeddings into a *score* with the threshold ``η`` (Eq. 2)::

    score = 0.5 + 0.5 (d − η) / (d_max − η)   if d > η
            0.5 d / η                          otherwise

and forms ``h(x) = [1 − score, score]``: class 0 = "same person", class 1 = "not the same person".
``d_max = 4`` in the paper: the largest *squared* Euclidean distance between unit-norm embeddings (FaceNet's
embeddings are L2-normalised, and its usual threshold 1.1 is a squared distance). So ``d`` here is always a
distance of **L2-normalised** embeddings:

* ``kind="squared"`` (default, the paper's reading): ``d = |a/|a| − b/|b||²`` in [0, 4], ``d_max = 4``;
* ``kind="euclidean"``: ``d = |a/|a| − b/|b||`` in [0, 2], ``d_max = 2``.

Either way the score lies in [0, 1] (it is also clamped, against rounding), is continuous, and is 0.5 exactly
at ``d = η``. Nets whose own descriptors are not unit-norm (face-api's recognition net) are normalised
first; :func:`choose_threshold` picks ``η`` for any net from labelled pairs.

The FGSM loss of Eq. (1) is the cross-entropy of ``h(x)`` against the ground truth (:func:`pair_loss`),
and the ResGN verification loss of Eq. (5) is ``−log(1 − score)`` (:func:`verification_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["D_MAX", "embedding_distance", "eq2_score", "h_of", "pair_loss", "verification_loss", "choose_threshold",
           "verification_accuracy"]

#: the largest distance between two unit-norm embeddings, per kind of ``d``
D_MAX = {"squared": 4.0, "euclidean": 2.0}
_EPS = 1e-7


def _kind(kind: str) -> float:
    if kind not in D_MAX:
        raise ValueError(f"kind: must be one of {list(D_MAX)}, got {kind!r}")
    return D_MAX[kind]


def embedding_distance(a: Tensor, b: Tensor, kind: str = "squared") -> Tensor:
    """``d`` of Eq. 2 between embeddings ``a`` and ``b`` ``[B,D]`` (broadcasting): the squared (default) or
    plain Euclidean distance of the **L2-normalised** embeddings, in ``[0, D_MAX[kind]]``."""
    _kind(kind)
    if a.dim() != 2 or b.dim() != 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding_distance: expected embeddings [B,D] and [B,D], got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = F.normalize(a, dim=-1, eps=1e-12), F.normalize(b, dim=-1, eps=1e-12)
    sq = (a - b).pow(2).sum(-1)
    return sq if kind == "squared" else torch.sqrt(sq.clamp_min(1e-12))


def eq2_score(d: Tensor, eta: float, d_max: float = 4.0) -> Tensor:
    """Eq. 2: distance ``d`` -> score in [0, 1] (0.5 at ``d = eta``; above 0.5 means "not the same person")."""
    if not (isinstance(eta, (int, float)) and 0 < float(eta) < float(d_max)):
        raise ValueError(f"eq2_score: eta must be a number with 0 < eta < d_max = {d_max}, got {eta!r}")
    eta, d_max = float(eta), float(d_max)
    d = torch.as_tensor(d)
    above = 0.5 + (d - eta) * 0.5 / (d_max - eta)
    below = 0.5 * d / eta
    return torch.where(d > eta, above, below).clamp(0.0, 1.0)


def h_of(score: Tensor) -> Tensor:
    """``h(x) = [1 − score, score]`` ``[B,2]``: probabilities of "same person" and "not the same person"."""
    return torch.stack([1 - score, score], -1)


def pair_loss(score: Tensor, same: Tensor | bool) -> Tensor:
    """Cross-entropy of ``h(x)`` against the ground truth ``y_gt`` ([1, 0] for a genuine pair, [0, 1] for an
    impostor pair), per pair: ``−log(1 − score)`` or ``−log(score)``. FGSM (Eq. 1) ascends it: on a genuine
    pair that is dodging, on an impostor pair impersonation."""
    same_t = torch.as_tensor(same, dtype=torch.bool, device=score.device).expand_as(score)
    p_true = torch.where(same_t, 1 - score, score)
    return -torch.log(p_true.clamp_min(_EPS))


def verification_loss(score: Tensor) -> Tensor:
    """Eq. 5: ``−log(1 − score)``, ``score`` from Eq. 2 on ``d(I_C, I_L)``: small when the cleaned image
    verifies as its legitimate image."""
    return -torch.log((1 - score).clamp_min(_EPS))


def choose_threshold(d_same: Sequence[float] | np.ndarray, d_diff: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(eta, accuracy)``: the threshold with the highest pair accuracy on labelled distances (genuine pairs
    match when ``d < eta``). Candidates are the midpoints between consecutive sorted distances; among equally
    accurate ones the widest gap wins (then the smallest). The paper's η = 1.1 is, in the same way, one that
    classifies every pair of its reference set correctly."""
    s, t = np.asarray(d_same, dtype=np.float64).ravel(), np.asarray(d_diff, dtype=np.float64).ravel()
    if not len(s) or not len(t):
        raise ValueError(f"choose_threshold: need genuine and impostor distances, got {len(s)} and {len(t)}")
    if not (np.isfinite(s).all() and np.isfinite(t).all()):
        raise ValueError("choose_threshold: distances must be finite")
    allv = np.unique(np.concatenate([s, t]))
    if len(allv) == 1:
        return float(allv[0]) + 1e-6, max(len(s), len(t)) / (len(s) + len(t))
    mids = (allv[:-1] + allv[1:]) / 2
    gaps = allv[1:] - allv[:-1]
    acc = ((s[None, :] < mids[:, None]).sum(1) + (t[None, :] >= mids[:, None]).sum(1)) / (len(s) + len(t))
    best = acc.max()
    cand = np.flatnonzero(acc == best)
    i = cand[np.argmax(gaps[cand])]
    return float(mids[i]), float(best)


def verification_accuracy(d: Tensor | np.ndarray, same: Tensor | np.ndarray, eta: float) -> float:
    """Share of pairs decided correctly: genuine pairs with ``d < eta``, impostor pairs with ``d >= eta``."""
    d, same = np.asarray(d, dtype=np.float64), np.asarray(same, dtype=bool)
    if d.shape != same.shape or not d.size:
        raise ValueError(f"verification_accuracy: d and same must have the same non-empty shape, got {d.shape} "
                         f"and {same.shape}")
    return float(np.mean((d < eta) == same))

