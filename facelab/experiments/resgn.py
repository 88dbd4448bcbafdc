"""Chapter 5: cleaning adversarial perturbations with a residual generative network (Su et al., ICIP 2019).

The notebook ``notebooks/05_resgn.ipynb`` builds a :class:`Config` from its parameters cell and calls
:class:`ResGNExperiment` section by section:

* :meth:`~ResGNExperiment.verification` -- the target as a verifier: ``d`` and ``η`` of Eq. 2, clean accuracy;
* :meth:`~ResGNExperiment.table1` -- FGSM dodging / impersonation at ``eps``, seven ResGNs trained with the
  seven loss combinations, Randomization (Xie et al.) and the uncleaned input (Table 1, Fig. 2);
* :meth:`~ResGNExperiment.table2` -- ResGN (joint loss) trained at each ε of ``eps_grid``, tested at each (Table 2);
* :meth:`~ResGNExperiment.adaptive` -- beyond the paper: FGSM and PGD through the cleaner (white box,
  differentiable end to end), and PGD crafted on the recognizer alone (an attack the cleaner never saw).

Data. Pairs in LFW's layout, read by :class:`facelab.data.lfw.LFWPairs`: by default a fixture folder written
from the bundled faces (:func:`facelab.data.fixtures.write_lfw`: 37 identities, identity-disjoint folds;
genuine pairs are two photos for Obama and Einstein, photo vs seeded augmentation for the others), at full
scale ``lfw_root`` (+ ``pairs``). Folds ``train_folds`` train the cleaners and choose ``η``; ``test_folds``
test; a test pair that shares an identity with a training pair is dropped. A pair is (probe, reference): the
probe is attacked and cleaned, the reference (the enrolled image) is not. The unit of the intervals is the pair.

Adversarial sets are cached under ``out_dir/cache`` keyed by the target, ε, the pair list and the pixels;
ResGN trainings checkpoint to ``out_dir/resgn`` (atomic writes) and resume from there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.attacks.fgsm import fgsm, ifgsm
from facelab.defenses.randomization import RandomResizePad
from facelab.defenses.resgn import ResGNCleaner
from facelab.experiments.base import Case, Claim, Experiment, ExperimentConfig, param
from facelab.io import atomic_write
from facelab.metrics.uncertainty import Interval, UnitTable, bootstrap
from facelab.metrics.verification import (
    D_MAX,
    choose_threshold,
    embedding_distance,
    eq2_score,
    pair_loss,
    verification_loss,
)
from facelab.models.resgn import PenultimateFeatures, ResGN

__all__ = ["Config", "ResGNExperiment", "LOSSES", "PAPER_T1", "PAPER_T2", "CRITERIA", "run", "tolerance_floor"]

CHAPTER = "05_resgn"

#: the seven loss combinations of Table 1 (name -> terms)
LOSSES: dict[str, tuple[str, ...]] = {
    "pixel": ("pixel",), "texture": ("texture",), "verification": ("verification",),
    "pixel+texture": ("pixel", "texture"), "pixel+verification": ("pixel", "verification"),
    "texture+verification": ("texture", "verification"), "joint": ("pixel", "texture", "verification"),
}

#: Table 1 of the paper (%): dodging, impersonation, legitimate
PAPER_T1: dict[str, tuple[float, float, float]] = {
    "pixel": (99.16, 99.68, 90.52), "texture": (99.06, 99.67, 97.91), "verification": (88.36, 95.31, 98.31),
    "pixel+texture": (99.25, 99.82, 97.86), "pixel+verification": (99.26, 99.83, 98.70),
    "texture+verification": (95.99, 97.57, 98.83), "joint": (99.45, 99.92, 99.18),
    "Randomization": (65.28, 61.81, 97.65), "original": (0.84, 43.21, 100.0),
}

#: Table 2 of the paper (%): kind -> (train ε, test ε) -> accuracy
PAPER_T2: dict[str, dict[tuple[float, float], float]] = {
    "dodging": {(0.02, 0.02): 98.32, (0.03, 0.02): 98.33, (0.04, 0.02): 96.20,
                (0.02, 0.03): 5.12, (0.03, 0.03): 99.45, (0.04, 0.03): 98.69,
                (0.02, 0.04): 1.31, (0.03, 0.04): 5.68, (0.04, 0.04): 99.06},
    "impersonation": {(0.02, 0.02): 99.92, (0.03, 0.02): 99.35, (0.04, 0.02): 99.51,
                      (0.02, 0.03): 42.48, (0.03, 0.03): 99.92, (0.04, 0.03): 99.76,
                      (0.02, 0.04): 33.98, (0.03, 0.04): 42.23, (0.04, 0.04): 99.83},
}

#: criteria of the claims (accuracies as fractions)
CRITERIA = {
    "attack_dodging": 0.2,      # uncleaned dodging accuracy <= 20 % (paper 0.84 %)
    "attack_impersonation": 0.6,  # uncleaned impersonation accuracy <= 60 % (paper 43.21 %)
    "cleaned": 0.9,             # accuracy >= 90 % after cleaning (paper 99.45 / 99.92 / 99.18)
    "margin": 0.0,              # ResGN minus Randomization > 0 (paper +34 / +38 points)
    "not_vice_versa": 0.2,      # train ε < test ε: accuracy at least 20 points below the diagonal
}

COLUMNS = ("dodging", "impersonation", "legitimate")


@dataclasses.dataclass
class Config(ExperimentConfig):
    """Parameters of one chapter-5 run; each is a notebook parameter (``facelab run 5 --list-parameters``)."""

    out_dir: str = param("runs/default/05_resgn", "where results.json, the caches and the ResGN checkpoints go")
    target: str = param("face_recognition", "recognizer: a zoo FaceEmbedder, or facenet (needs facenet_weights)")
    facenet_weights: str | None = param(None, "InceptionResnetV1 state dict (facenet-pytorch) for target facenet")
    texture_net: str = param("expression", "texture features: expression, mobilefacenet, faceres, face_recognition or vggface")
    vggface_weights: str | None = param(None, "VGG-Face state dict (texture_net vggface: fc7 as the paper)")
    lfw_root: str | None = param(None, "LFW images root (full scale); None: a fixture written from the bundled faces")
    pairs: str | None = param(None, "LFW pairs file (default lfw_root/pairs.txt)")
    train_folds: tuple[int, ...] = param((0,), "pair folds that train the cleaners and choose eta")
    test_folds: tuple[int, ...] = param((1,), "pair folds that test (identities of train folds dropped)")
    max_pairs: int | None = param(None, "cap on pairs per side (None: all)")
    fixture_images: int = param(3, "fixture only: images per person")
    crop: int = param(64, "side of the face crop the cleaner and the nets see (paper 160)")
    crop_fraction: float = param(0.5, "the crop is the central square of this fraction of the LFW image side")
    distance: str = param("squared", "d of Eq. 2 on L2-normalised embeddings: squared (d_max 4) or euclidean (d_max 2)")
    eta: float | None = param(None, "threshold of Eq. 2 (None: most accurate on the training pairs; paper 1.1)")
    eps: float = param(0.03, "FGSM epsilon of Table 1 on [0,1] pixels (paper 0.03)")
    eps_grid: tuple[float, ...] = param((0.02, 0.03, 0.04), "epsilons of Table 2")
    losses: tuple[str, ...] = param(tuple(LOSSES), "loss combinations of Table 1")
    blocks: int = param(2, "ResGN residual blocks (paper 24)")
    width: int = param(8, "ResGN feature maps (paper 64)")
    steps: int = param(24, "ResGN training steps (paper 1000 epochs of 250 batches)")
    batch_size: int = param(8, "training batch (paper 16)")
    lr: float = param(2e-3, "Adam learning rate (paper 1e-4)")
    lr_decay: float = param(0.9, "learning rate factor after each pass over the training set (paper 0.9)")
    w_pixel: float = param(1.0, "weight of the pixel loss (Eq. 6: 1)")
    w_texture: float = param(1e-8, "weight of the texture loss before rescaling (Eq. 6: 1e-8)")
    w_verification: float = param(1e-3, "weight of the verification loss (Eq. 6: 1e-3; dimensionless, not rescaled)")
    texture_rescale: str = param("balance", "balance: texture weight set so its term equals the pixel term at the start; none: as given")
    randomization_scale: float = param(331 / 299, "Randomization: largest resize factor (Xie et al.: 331/299)")
    pgd_steps: int = param(10, "adaptive section: PGD steps (step eps/4, random start)")
    checkpoint_every: int = param(8, "ResGN checkpoint every this many steps (and at the end)")
    resume: bool = param(True, "reuse cached adversarial sets and resume ResGN checkpoints in out_dir")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distance not in D_MAX:
            raise ValueError(f"distance: must be one of {list(D_MAX)}, got {self.distance!r}")
        unknown = [c for c in self.losses if c not in LOSSES]
        if unknown:
            raise ValueError(f"losses: unknown {unknown}; choose from {', '.join(LOSSES)}")
        for name in ("steps", "batch_size", "blocks", "width", "crop", "checkpoint_every", "fixture_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.pgd_steps < 0:
            raise ValueError(f"pgd_steps={self.pgd_steps}: must be >= 0")
        for name in ("eps", *(f"eps_grid[{i}]" for i in range(len(self.eps_grid)))):
            v = self.eps if name == "eps" else self.eps_grid[int(name[9:-1])]
            if not 0 < v < 1:
                raise ValueError(f"{name}={v}: must lie in (0, 1)")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction={self.crop_fraction}: must lie in (0, 1]")
        if self.eta is not None and not 0 < self.eta < D_MAX[self.distance]:
            raise ValueError(f"eta={self.eta}: must lie in (0, {D_MAX[self.distance]}) for distance {self.distance}")
        if self.texture_rescale not in ("balance", "none"):
            raise ValueError(f"texture_rescale: balance or none, got {self.texture_rescale!r}")
        if set(self.train_folds) & set(self.test_folds):
            raise ValueError(f"train_folds {self.train_folds} and test_folds {self.test_folds} overlap")


@dataclasses.dataclass
class PairSide:
    """One side's pairs: probe / reference image indices into the image table, labels, names, units."""

    probe: list[int]
    ref: list[int]
    same: Tensor  # [P] bool
    names: list[tuple[str, str]]
    units: list[str]


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.numpy().tobytes() if isinstance(p, Tensor) else repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


def _seeded(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(int(_sha(*parts)[:15], 16))


class ResGNExperiment(Experiment):
    """Pairs, recognizer, adversarial sets and trained cleaners of one chapter-5 run."""

    chapter = CHAPTER
    config_class = Config
    sections = ("verification", "table1", "table2", "adaptive")

    def __init__(self, cfg: Config, target: nn.Module | None = None, progress: bool = True) -> None:
        super().__init__(cfg, progress)
        self.out = Path(cfg.out_dir)
        with self.timer("data"):
            self._load_pairs()
        with self.timer("models"):
            self.target = target if target is not None else self._load_target()
            self.target.eval().requires_grad_(False)
            self._texture: PenultimateFeatures | None = None
        with self.timer("embed"):
            self.emb = self.embed(self.images)
        self.eta = float("nan")
        self._adv: dict[tuple[str, float], dict[str, Tensor]] = {}
        self.cleaners: dict[tuple[str, float], ResGN] = {}
        self.train_log: dict[tuple[str, float], dict[str, Any]] = {}
        self.texture_weights: dict[float, dict[str, float]] = {}

    # -- data and models --------------------------------------------------------------------------------
    def _lfw(self):
        from facelab.data.lfw import LFWPairs

        cfg = self.cfg
        if cfg.lfw_root:
            return LFWPairs(cfg.lfw_root, cfg.pairs)
        from facelab.data.fixtures import write_lfw

        root = self.out / f"lfw_fixture_seed{cfg.seed}_n{cfg.fixture_images}"
        if not (root / "pairs.txt").is_file():
            write_lfw(root, folds=max(2, max((*cfg.train_folds, *cfg.test_folds)) + 1),
                      images_per_person=cfg.fixture_images, seed=cfg.seed)
        return LFWPairs(root)

    def _load_pairs(self) -> None:
        from facelab.data.lfw import lfw_image_path

        cfg = self.cfg
        ds = self._lfw()
        self.lfw_root = str(ds.root)
        bad = [f for f in (*cfg.train_folds, *cfg.test_folds) if not 0 <= f < ds.folds]
        if bad:
            raise ValueError(f"train_folds/test_folds: folds {bad} do not exist ({ds.pairs_file} has {ds.folds})")
        by_fold = {"train": [p for p in ds.pairs if p.fold in cfg.train_folds],
                   "test": [p for p in ds.pairs if p.fold in cfg.test_folds]}
        train_ids = {n for p in by_fold["train"] for n in (p.name1, p.name2)}
        kept = [p for p in by_fold["test"] if p.name1 not in train_ids and p.name2 not in train_ids]
        self.dropped_test_pairs = len(by_fold["test"]) - len(kept)
        by_fold["test"] = kept
        if cfg.max_pairs is not None:
            by_fold = {k: v[: cfg.max_pairs] for k, v in by_fold.items()}
        paths: dict[Path, int] = {}
        self.sides: dict[str, PairSide] = {}
        for side, plist in by_fold.items():
            if not plist:
                raise ValueError(f"{side} side: no pairs in folds {getattr(cfg, side + '_folds')} of {ds.pairs_file}")
            probe, ref = [], []
            for p in plist:
                for name, idx, out in ((p.name1, p.index1, probe), (p.name2, p.index2, ref)):
                    out.append(paths.setdefault(lfw_image_path(ds.root, name, idx), len(paths)))
            self.sides[side] = PairSide(probe, ref, torch.tensor([p.same for p in plist]),
                                        [(p.name1, p.name2) for p in plist],
                                        [f"{p.name1}/{p.index1}~{p.name2}/{p.index2}" for p in plist])
        self.image_paths = list(paths)
        self.images = torch.stack([self.jitter(self._crop(ds, p)) for p in self.image_paths])
        self.pair_ids = {side: [(s.names[i], s.units[i]) for i in range(len(s.units))] for side, s in self.sides.items()}

    def _crop(self, ds, path: Path) -> Tensor:
        from facelab.data._text import load_listed_image

        img = load_listed_image(path, ds.pairs_file, 0)
        h, w = img.shape[-2:]
        s = max(1, round(self.cfg.crop_fraction * min(h, w)))
        top, left = (h - s) // 2, (w - s) // 2
        x = img[:, top: top + s, left: left + s][None]
        return F.interpolate(x, size=(self.cfg.crop, self.cfg.crop), mode="bilinear", antialias=True,
                             align_corners=False)[0].clamp(0, 1).contiguous()

    def _load_target(self) -> nn.Module:
        cfg = self.cfg
        if cfg.target == "facenet":
            if not cfg.facenet_weights:
                raise ValueError("target facenet: give facenet_weights (an InceptionResnetV1 state dict); none are bundled")
            from facelab.models.resgn import FaceNetEmbedder

            return FaceNetEmbedder(cfg.facenet_weights).to(self.device)
        if cfg.facenet_weights:
            raise ValueError(f"facenet_weights is only for target facenet, target is {cfg.target!r}")
        from facelab import models

        return models.load(cfg.target, self.device)

    @property
    def texture(self) -> PenultimateFeatures:
        if self._texture is None:
            with self.timer("models"):
                self._texture = PenultimateFeatures(self.cfg.texture_net, self.device, self.cfg.vggface_weights)
        return self._texture

    @torch.no_grad()
    def embed(self, images: Tensor, batch: int = 64) -> Tensor:
        return torch.cat([self.target(images[i: i + batch].to(self.device)).float().cpu()
                          for i in range(0, len(images), batch)])

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        return embedding_distance(a, b, self.cfg.distance)

    def score(self, d: Tensor) -> Tensor:
        return eq2_score(d, self.eta, D_MAX[self.cfg.distance])

    def data_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lfw_root": self.lfw_root if self.cfg.lfw_root else "fixture (bundled faces)",
                               "images": len(self.image_paths), "dropped_test_pairs": self.dropped_test_pairs}
        for side, s in self.sides.items():
            ids = {n for pair in s.names for n in pair}
            out[side] = {"pairs": len(s.units), "genuine": int(s.same.sum()), "impostor": int((~s.same).sum()),
                         "identities": len(ids)}
        tr = {n for pair in self.sides["train"].names for n in pair}
        te = {n for pair in self.sides["test"].names for n in pair}
        trp = {self.image_paths[i] for s in ("probe", "ref") for i in getattr(self.sides["train"], s)}
        tep = {self.image_paths[i] for s in ("probe", "ref") for i in getattr(self.sides["test"], s)}
        out["shared_identities"], out["shared_images"] = len(tr & te), len(trp & tep)
        return out

    # -- verification ----------------------------------------------------------------------------------
    def pair_distances(self, side: str) -> Tensor:
        s = self.sides[side]
        return self.distance(self.emb[s.probe], self.emb[s.ref])

    def verification(self) -> dict[str, Any]:
        """``η`` of Eq. 2 (chosen on the training pairs unless given), clean accuracy on both sides, and which
        pairs are verified correctly (only those are attacked, as in the paper)."""
        cfg = self.cfg
        d_tr = self.pair_distances("train")
        same = self.sides["train"].same
        eta, acc = choose_threshold(d_tr[same].numpy(), d_tr[~same].numpy())
        self.eta = float(cfg.eta) if cfg.eta is not None else eta
        out: dict[str, Any] = {"eta": self.eta, "eta_chosen": eta, "eta_train_accuracy": acc, "d_max": D_MAX[cfg.distance],
                               "distance": cfg.distance}
        self.correct: dict[str, Tensor] = {}
        for side in ("train", "test"):
            d, s = self.pair_distances(side), self.sides[side].same
            ok = (d < self.eta) == s
            self.correct[side] = ok
            out[side] = {"accuracy": float(ok.float().mean()), "correct": int(ok.sum()), "pairs": len(ok),
                         "genuine_correct": int((ok & s).sum()), "impostor_correct": int((ok & ~s).sum()),
                         "d_genuine": [round(float(v), 4) for v in d[s]], "d_impostor": [round(float(v), 4) for v in d[~s]]}
        # the net's own metric, for comparison
        s_te = self.sides["test"]
        own = self.target.distance(self.emb[s_te.probe], self.emb[s_te.ref]) if hasattr(self.target, "distance") else None
        if own is not None and hasattr(self.target, "threshold"):
            out["own_metric"] = {"metric": getattr(self.target, "metric", "?"), "threshold": float(self.target.threshold),
                                 "test_accuracy": float(((own < self.target.threshold) == s_te.same).float().mean())}
        norms = self.emb.norm(dim=1)
        out["embedding_norm"] = [round(float(norms.min()), 4), round(float(norms.max()), 4)]
        self.results["verification"] = out
        return out

    def _need_eta(self) -> None:
        if not math.isfinite(self.eta):
            self.verification()

    # -- adversarial sets ------------------------------------------------------------------------------
    def _attack_loss(self, ref_emb: Tensor, same: Tensor, cleaner: nn.Module | None = None):
        def loss_fn(x: Tensor) -> Tensor:
            z = x if cleaner is None else cleaner(x)
            return pair_loss(self.score(self.distance(self.target(z), ref_emb)), same)
        return loss_fn

    def _probes(self, side: str) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """(probe images, reference embeddings, same, pair index) of the correctly verified pairs; the
        training side also attacks each pair the other way round (two examples per pair)."""
        self._need_eta()
        s, ok = self.sides[side], self.correct[side]
        idx = [i for i in range(len(s.units)) if ok[i]]
        probe = [s.probe[i] for i in idx]
        ref = [s.ref[i] for i in idx]
        same = s.same[idx]
        pairs = list(idx)
        if side == "train":
            probe, ref, same, pairs = probe + ref, ref + probe, torch.cat([same, same]), pairs + pairs
        return self.images[probe], self.emb[ref], same, pairs

    def adversarial(self, side: str, eps: float) -> dict[str, Tensor]:
        """FGSM (Eq. 1) on the probes of ``side`` at ``eps``: dodging on genuine pairs, impersonation on impostor
        pairs. Cached in memory and on disk (``out_dir/cache``), keyed by target, ε, pair list and pixels."""
        key = (side, round(float(eps), 6))
        if key in self._adv:
            return self._adv[key]
        x, ref_emb, same, pairs = self._probes(side)
        s = self.sides[side]
        h = _sha(self.cfg.target, self.cfg.facenet_weights, key, self.cfg.distance, round(self.eta, 8),
                 [s.units[i] for i in pairs], x, ref_emb)
        path = self.out / "cache" / f"adv_{side}_eps{eps:g}_{h[:16]}.pt"
        if self.cfg.resume and path.is_file():
            adv = torch.load(path, map_location="cpu", weights_only=True)["adv"]
        else:
            with self.timer("attack"):
                adv = torch.cat([fgsm(x[i: i + 32].to(self.device),
                                      self._attack_loss(ref_emb[i: i + 32].to(self.device), same[i: i + 32].to(self.device)),
                                      float(eps)).cpu() for i in range(0, len(x), 32)])
            with atomic_write(path, "wb") as f:
                torch.save({"adv": adv, "key": h}, f)
        self._adv[key] = {"adv": adv, "legit": x, "ref_emb": ref_emb, "same": same,
                          "pairs": torch.tensor(pairs, dtype=torch.long)}
        return self._adv[key]

    # -- ResGN training --------------------------------------------------------------------------------
    def texture_weight(self, eps: float) -> dict[str, float]:
        """The texture weight for training at ``eps`` and how it was rescaled: with ``texture_rescale="balance"``
        the weighted texture term equals the pixel term on the training set at the start (the cleaner is then
        the identity, so the terms are those of the adversarial vs the legitimate images)."""
        key = round(float(eps), 6)
        if key not in self.texture_weights:
            a = self.adversarial("train", eps)
            pix0 = float(F.mse_loss(a["adv"], a["legit"]))
            with torch.no_grad(), self.timer("train"):
                fa = self._features(a["adv"])
                fl = self._features(a["legit"])
            tex0 = float(F.mse_loss(fa, fl))
            w = self.cfg.w_texture if self.cfg.texture_rescale == "none" else pix0 / max(tex0, 1e-30)
            self.texture_weights[key] = {"pixel0": pix0, "texture0": tex0, "w_texture": w,
                                         "factor_vs_paper": w / self.cfg.w_texture}
        return self.texture_weights[key]

    @torch.no_grad()
    def _features(self, x: Tensor, batch: int = 32) -> Tensor:
        return torch.cat([self.texture(x[i: i + batch].to(self.device)).float().cpu() for i in range(0, len(x), batch)])

    def _ckpt_path(self, combo: str, eps: float, adv_key: str) -> Path:
        cfg = self.cfg
        h = _sha(combo, round(float(eps), 6), adv_key, cfg.blocks, cfg.width, cfg.batch_size, cfg.lr, cfg.lr_decay,
                 cfg.w_pixel, cfg.w_texture, cfg.w_verification, cfg.texture_rescale, cfg.texture_net,
                 cfg.vggface_weights, cfg.seed)
        return self.out / "resgn" / f"{combo}_eps{eps:g}_{h[:12]}.pt"

    def train_cleaner(self, combo: str = "joint", eps: float | None = None) -> ResGN:
        """Train (or load / resume) the ResGN of loss combination ``combo`` on the FGSM training set at ``eps``
        (Algorithm 1 with Adam; Eqs. 3–6)."""
        cfg = self.cfg
        eps = cfg.eps if eps is None else float(eps)
        if combo not in LOSSES:
            raise ValueError(f"combo: unknown {combo!r}; choose from {', '.join(LOSSES)}")
        key = (combo, round(eps, 6))
        if key in self.cleaners:
            return self.cleaners[key]
        terms = LOSSES[combo]
        a = self.adversarial("train", eps)
        adv_key = _sha(a["adv"][:4], len(a["adv"]))
        weights = {"pixel": cfg.w_pixel, "verification": cfg.w_verification,
                   "texture": self.texture_weight(eps)["w_texture"] if "texture" in terms else cfg.w_texture}
        n = len(a["adv"])
        per_epoch = max(1, math.ceil(n / cfg.batch_size))
        torch.manual_seed(int(_sha(cfg.seed, combo, eps)[:15], 16))
        net = ResGN(cfg.blocks, cfg.width).to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=per_epoch, gamma=cfg.lr_decay)
        path = self._ckpt_path(combo, eps, adv_key)
        start, history, resumed = 0, [], 0
        if cfg.resume and path.is_file():
            ck = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            start, history = int(ck["step"]), list(ck["history"])
            resumed = start
        emb_l = a["ref_emb"].new_zeros(0)
        if "verification" in terms:
            with self.timer("train"):
                emb_l = self.embed(a["legit"])
        feat_l = self._features(a["legit"]) if "texture" in terms else None
        t0 = time.perf_counter()
        bar = _progress(range(start, cfg.steps), self.progress, f"ResGN {combo} ε={eps:g}")
        net.train()
        with self.timer("train"):
            for step in bar:
                ep, pos = divmod(step, per_epoch)
                perm = torch.randperm(n, generator=_seeded(cfg.seed, combo, eps, ep))
                idx = perm[pos * cfg.batch_size: (pos + 1) * cfg.batch_size]
                if len(idx) < 2:  # batch norm needs two images: take the batch from the epoch's start
                    idx = perm[: min(n, cfg.batch_size)]
                x, y = a["adv"][idx].to(self.device), a["legit"][idx].to(self.device)
                out = net(x)
                parts: dict[str, Tensor] = {}
                if "pixel" in terms:
                    parts["pixel"] = F.mse_loss(out, y)  # Eq. 3
                if "texture" in terms:
                    parts["texture"] = F.mse_loss(self.texture(out), feat_l[idx].to(self.device))  # Eq. 4
                if "verification" in terms:
                    d = self.distance(self.target(out), emb_l[idx].to(self.device))
                    parts["verification"] = verification_loss(self.score(d)).mean()  # Eq. 5
                loss = sum(weights[k] * v for k, v in parts.items())  # Eq. 6
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                history.append({k: float(v.detach()) for k, v in parts.items()} | {"joint": float(loss.detach())})
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    with atomic_write(path, "wb") as f:
                        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "step": step + 1, "history": history, "blocks": cfg.blocks, "width": cfg.width,
                                    "combo": combo, "eps": eps}, f)
        net.eval()
        self.cleaners[key] = net
        self.train_log[key] = {"seconds": time.perf_counter() - t0, "resumed_from": resumed, "steps": cfg.steps,
                               "examples": n, "weights": {k: weights[k] for k in terms}, "history": history,
                               "checkpoint": str(path)}
        return net

    def cleaner(self, name: str, eps: float | None = None) -> nn.Module | None:
        """A defense by name: a loss combination (its trained ResGN), ``"Randomization"`` or ``"original"`` (None)."""
        if name == "original":
            return None
        if name == "Randomization":
            return RandomResizePad(self.cfg.randomization_scale, seed=self.cfg.seed)
        return ResGNCleaner(self.train_cleaner(name, eps))

    # -- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _clean_distance(self, images: Tensor, ref_emb: Tensor, cleaner: nn.Module | None) -> Tensor:
        out = []
        for i in range(0, len(images), 64):
            x = images[i: i + 64].to(self.device)
            z = x if cleaner is None else cleaner(x)
            out.append(self.distance(self.target(z), ref_emb[i: i + 64].to(self.device)).cpu())
        return torch.cat(out)

    def evaluate(self, cleaner: nn.Module | None, eps: float | None = None, adv: Tensor | None = None) -> dict:
        """Test-side accuracies with ``cleaner`` in front of the probe: dodging (adversarial genuine probes still
        match), impersonation (adversarial impostor probes still do not), legitimate (clean probes decided
        correctly); per-pair counts as a :class:`UnitTable` over the test pairs."""
        eps = self.cfg.eps if eps is None else eps
        a = self.adversarial("test", eps)
        x_adv = a["adv"] if adv is None else adv
        with self.timer("evaluate"):
            d_adv = self._clean_distance(x_adv, a["ref_emb"], cleaner)
            d_leg = self._clean_distance(a["legit"], a["ref_emb"], cleaner)
        same = a["same"]
        ok_adv = (d_adv < self.eta) == same
        ok_leg = (d_leg < self.eta) == same
        units = self.sides["test"].units
        cols = {k: np.zeros(len(units)) for k in ("dodge_ok", "dodge_n", "imp_ok", "imp_n", "legit_ok", "legit_n")}
        for j, p in enumerate(a["pairs"].tolist()):
            kind = "dodge" if same[j] else "imp"
            cols[f"{kind}_ok"][p] += float(ok_adv[j])
            cols[f"{kind}_n"][p] += 1
            cols["legit_ok"][p] += float(ok_leg[j])
            cols["legit_n"][p] += 1
        table = UnitTable(tuple(units), cols)
        acc = {"dodging": float(ok_adv[same].float().mean()), "impersonation": float(ok_adv[~same].float().mean()),
               "legitimate": float(ok_leg.float().mean())}
        return {**acc, "units": table, "d_adv": d_adv, "d_legit": d_leg}

    def interval(self, stat, **evals: dict) -> Interval:
        tables = {k: v["units"] for k, v in evals.items()}
        return bootstrap(tables, stat, n_boot=self.cfg.bootstrap, seed=self.cfg.seed, level=self.cfg.confidence)

    def accuracy(self, ev: dict, column: str) -> Interval:
        c = {"dodging": "dodge", "impersonation": "imp", "legitimate": "legit"}[column]
        return self.interval(lambda t: t["e"][f"{c}_ok"] / t["e"][f"{c}_n"], e=ev)

    def accuracy_difference(self, ev: dict, ref: dict, column: str) -> Interval:
        c = {"dodging": "dodge", "impersonation": "imp", "legitimate": "legit"}[column]
        return self.interval(lambda t: t["e"][f"{c}_ok"] / t["e"][f"{c}_n"] - t["r"][f"{c}_ok"] / t["r"][f"{c}_n"],
                             e=ev, r=ref)

    def mean_accuracy_difference(self, ev: dict, ref: dict) -> Interval:
        """Mean of the three columns of ``ev`` minus that of ``ref`` (paired)."""
        def m(t):
            return sum(t[f"{c}_ok"] / t[f"{c}_n"] for c in ("dodge", "imp", "legit")) / 3
        return self.interval(lambda t: m(t["e"]) - m(t["r"]), e=ev, r=ref)

    # -- sections --------------------------------------------------------------------------------------
    def table1(self) -> list[dict]:
        """Table 1: the seven loss combinations, Randomization and the uncleaned adversarial input at ``eps``."""
        self._need_eta()
        rows = []
        for name in (*self.cfg.losses, "Randomization", "original"):
            ev = self.evaluate(self.cleaner(name))
            rows.append({"name": name, "eval": ev, **{c: ev[c] for c in COLUMNS}})
        self.results["table1"] = rows
        return rows

    def table2(self) -> dict:
        """Table 2: the joint-loss ResGN trained at each ε of ``eps_grid`` (columns), tested at each (rows)."""
        self._need_eta()
        grid = list(self.cfg.eps_grid)
        out = {}
        for tr in grid:
            c = self.cleaner("joint", tr)
            for te in grid:
                out[(tr, te)] = self.evaluate(c, te)
        self.results["table2"] = out
        return out

    def adaptive(self) -> list[dict]:
        """Beyond the paper, at ``eps``: FGSM and PGD through the joint-loss cleaner (white box, end to end), and
        PGD on the recognizer alone then cleaned (an attack the cleaner was not trained on)."""
        self._need_eta()
        cfg, eps = self.cfg, self.cfg.eps
        a = self.adversarial("test", eps)
        cl = self.cleaner("joint", eps)
        x, ref, same = a["legit"].to(self.device), a["ref_emb"].to(self.device), a["same"].to(self.device)
        g = torch.Generator(device=self.device).manual_seed(cfg.seed)
        with self.timer("attack"):
            fgsm_ad = fgsm(x, self._attack_loss(ref, same, cl), eps).cpu()
            pgd_ad = ifgsm(x, self._attack_loss(ref, same, cl), eps, cfg.pgd_steps, eps / 4, random_start=True,
                           generator=g).cpu()
            pgd = ifgsm(x, self._attack_loss(ref, same), eps, cfg.pgd_steps, eps / 4, random_start=True,
                        generator=g).cpu()
        rows = [
            {"name": "FGSM on the recognizer, no defense", "eval": self.evaluate(None, eps)},
            {"name": "FGSM on the recognizer, cleaned (Table 1)", "eval": self.evaluate(cl, eps)},
            {"name": "PGD on the recognizer, no defense", "eval": self.evaluate(None, eps, pgd)},
            {"name": "PGD on the recognizer, cleaned", "eval": self.evaluate(cl, eps, pgd)},
            {"name": "FGSM through the cleaner (adaptive)", "eval": self.evaluate(cl, eps, fgsm_ad)},
            {"name": "PGD through the cleaner (adaptive)", "eval": self.evaluate(cl, eps, pgd_ad)},
        ]
        for r in rows:
            r.update({c: r["eval"][c] for c in COLUMNS})
        self.results["adaptive"] = rows
        self._adaptive_images = {"fgsm_adaptive": fgsm_ad, "pgd_adaptive": pgd_ad, "pgd": pgd}
        return rows

    # -- figures and explorer data ---------------------------------------------------------------------
    def example(self, j: int, eps: float | None = None, combo: str = "joint") -> dict[str, Any]:
        """Test example ``j`` (index into the attacked test probes): legitimate, adversarial and cleaned images,
        the reference, and their distances to the reference (Fig. 2, the explorer)."""
        eps = self.cfg.eps if eps is None else eps
        a = self.adversarial("test", eps)
        p = int(a["pairs"][j])
        s = self.sides["test"]
        net = self.cleaners.get((combo, round(self.cfg.eps, 6))) or self.train_cleaner(combo, self.cfg.eps)
        with torch.no_grad():
            leg, adv = a["legit"][j: j + 1].to(self.device), a["adv"][j: j + 1].to(self.device)
            cln = ResGNCleaner(net)(adv)
            ims = torch.cat([leg, adv, cln])
            d = self.distance(self.target(ims), a["ref_emb"][j: j + 1].to(self.device).expand(3, -1)).cpu()
        return {"legitimate": leg[0].cpu(), "adversarial": adv[0].cpu(), "cleaned": cln[0].cpu(),
                "reference": self.images[s.ref[p]], "d": {"legitimate": float(d[0]), "adversarial": float(d[1]),
                                                          "cleaned": float(d[2])},
                "same": bool(a["same"][j]), "pair": s.units[p], "eta": self.eta, "eps": eps, "combo": combo}

    def showcase(self, k: int = 4, combo: str = "joint") -> list[int]:
        """Up to ``k`` test examples (half dodging, half impersonation) that the attack broke and ``combo``
        repaired, for Fig. 2; falls back to any attacked example."""
        t1 = {r["name"]: r["eval"] for r in self.results.get("table1", [])}
        ev = t1.get(combo) or self.evaluate(self.cleaner(combo))
        orig = t1.get("original") or self.evaluate(None)
        a = self.adversarial("test", self.cfg.eps)
        same = a["same"]
        broke = ((orig["d_adv"] < self.eta) != same)
        fixed = ((ev["d_adv"] < self.eta) == same)
        pick: list[int] = []
        for want in (True, False):
            cand = [j for j in range(len(same)) if bool(same[j]) == want and broke[j] and fixed[j]]
            cand += [j for j in range(len(same)) if bool(same[j]) == want and j not in cand]
            pick += cand[: k // 2]
        return pick

    # -- card --------------------------------------------------------------------------------------------
    def _acc_lists(self, ev: dict) -> dict:
        return {c: self.accuracy(ev, c).as_list() for c in COLUMNS}

    def headline(self) -> dict:
        r, out = self.results, {"data": self.data_summary()}
        if "verification" in r:
            v = r["verification"]
            out["verification"] = {k: v[k] for k in ("eta", "eta_chosen", "eta_train_accuracy", "distance", "d_max",
                                                     "embedding_norm")}
            out["verification"]["clean_accuracy"] = {s: v[s]["accuracy"] for s in ("train", "test")}
            out["verification"]["attacked_test_pairs"] = v["test"]["correct"]
            out["verification"]["attacked_genuine"] = v["test"]["genuine_correct"]
            out["verification"]["attacked_impostor"] = v["test"]["impostor_correct"]
            if "own_metric" in v:
                out["verification"]["own_metric"] = v["own_metric"]
        if "table1" in r:
            out["table1"] = {x["name"]: self._acc_lists(x["eval"]) for x in r["table1"]}
        if "table2" in r:
            out["table2"] = {f"train {tr:g} / test {te:g}": self._acc_lists(ev) for (tr, te), ev in r["table2"].items()}
        if "adaptive" in r:
            out["adaptive"] = {x["name"]: self._acc_lists(x["eval"]) for x in r["adaptive"]}
        out["texture_weights"] = {f"{k:g}": {kk: float(f"{vv:.4g}") for kk, vv in v.items()}
                                  for k, v in self.texture_weights.items()}
        out["train_seconds"] = {f"{c}/{e:g}": round(v["seconds"], 2) for (c, e), v in self.train_log.items()}
        out["final_train_loss"] = {f"{c}/{e:g}": {k: float(f"{x:.4g}") for k, x in v["history"][-1].items()}
                                   for (c, e), v in self.train_log.items() if v["history"]}
        return out

    def measured(self) -> dict[str, float]:
        r, out = self.results, {}
        if "verification" in r:
            out["eta"] = r["verification"]["eta"]
            out["clean_accuracy/test"] = r["verification"]["test"]["accuracy"]
        for x in r.get("table1", []):
            for c in COLUMNS:
                out[f"table1/{x['name']}/{c}"] = x[c]
        for (tr, te), ev in r.get("table2", {}).items():
            for c in COLUMNS:
                out[f"table2/{tr:g}/{te:g}/{c}"] = ev[c]
        for x in r.get("adaptive", []):
            for c in COLUMNS:
                out[f"adaptive/{x['name']}/{c}"] = x[c]
        return {k: float(v) for k, v in out.items() if math.isfinite(v)}

    def paper_comparison(self) -> list[dict]:
        rows = []
        note = (f"paper: FaceNet on LFW, 1286 dodging / 1294 impersonation test examples; ours: {self.cfg.target} "
                f"on {self._data_note()}")
        for x in self.results.get("table1", []):
            for j, c in enumerate(COLUMNS):
                iv = self.accuracy(x["eval"], c)
                rows.append({"quantity": f"Table 1 {x['name']} {c} (%)", "paper": PAPER_T1[x["name"]][j],
                             "ours": round(100 * iv.value, 1) if math.isfinite(iv.value) else None,
                             "interval": [round(100 * v, 1) if math.isfinite(v) else None for v in (iv.lo, iv.hi)],
                             "note": note})
        for (tr, te), ev in self.results.get("table2", {}).items():
            for kind in ("dodging", "impersonation"):
                p = PAPER_T2[kind].get((round(tr, 2), round(te, 2)))
                if p is None:
                    continue
                iv = self.accuracy(ev, kind)
                rows.append({"quantity": f"Table 2 {kind} train ε {tr:g} test ε {te:g} (%)", "paper": p,
                             "ours": round(100 * iv.value, 1) if math.isfinite(iv.value) else None,
                             "interval": [round(100 * v, 1) if math.isfinite(v) else None for v in (iv.lo, iv.hi)],
                             "note": note})
        return rows

    def _data_note(self) -> str:
        d = self.data_summary()
        v = self.results.get("verification", {})
        att = v.get("test", {}).get("correct", "?")
        return (f"{'LFW at ' + self.cfg.lfw_root if self.cfg.lfw_root else 'the LFW-format fixture of the bundled faces'}"
                f", {d['test']['pairs']} test pairs ({att} verified correctly and attacked), "
                f"{d['train']['pairs']} training pairs")

    def differences(self) -> dict[str, str]:
        cfg = self.cfg
        tw = self.texture_weights.get(round(cfg.eps, 6))
        resc = (f"texture weight rescaled so that its term equals the pixel term at the start (factor "
                f"{tw['factor_vs_paper']:.3g} × the paper's 1e-8 at ε = {cfg.eps:g})" if tw and cfg.texture_rescale == "balance"
                else f"texture weight {cfg.w_texture:g}")
        return {
            "model": f"recognizer {cfg.target} (paper: FaceNet Inception-ResNet-v1, MS-Celeb-1M); texture features of "
                     f"{cfg.texture_net} (paper: VGG-Face fc7, 4096-D); ResGN {cfg.blocks} blocks × {cfg.width} maps "
                     "(paper 24 × 64)",
            "data": self._data_note() + (" (genuine pairs are mostly photo vs augmentation of the same photo)"
                                         if not cfg.lfw_root else "") + "; paper: 2000 + 2000 training and 1286 + 1294 "
                    "test examples from LFW",
            "scale": f"{cfg.steps} Adam steps of batch {cfg.batch_size}, lr {cfg.lr:g} (paper: 1000 epochs of batch 16, "
                     f"lr 1e-4), {cfg.crop}×{cfg.crop} crops (paper 160×160)",
            "protocol": f"d of Eq. 2 = {cfg.distance} Euclidean distance of L2-normalised embeddings (d_max "
                        f"{D_MAX[cfg.distance]:g}), η = {self.eta:.3f} "
                        + ("(given)" if cfg.eta is not None else "(most accurate on the training pairs)")
                        + f" (paper: 1.1); {resc}; verification weight 1e-3 unchanged (dimensionless); training "
                        "examples attack each training pair both ways; the reference image is not cleaned; "
                        f"Randomization resizes by up to {cfg.randomization_scale:.3f} and pads (one draw per image)",
        }

    def summary_preamble(self) -> str:
        v = self.results.get("verification")
        if not v:
            return ""
        t = v["test"]
        return (f"Target {self.cfg.target}, η = {self.eta:.3f} on the {self.cfg.distance} distance; clean test "
                f"accuracy {100 * t['accuracy']:.1f} % ({t['correct']} of {t['pairs']} pairs verified correctly: "
                f"{t['genuine_correct']} genuine pairs attacked by dodging, {t['impostor_correct']} impostor pairs by "
                f"impersonation). One pair = {100 / max(1, t['genuine_correct']):.1f} points of dodging accuracy.")

    def claims(self) -> list[Claim]:
        cfg, r, C = self.cfg, self.results, CRITERIA
        out: list[Claim] = []
        t1 = {x["name"]: x["eval"] for x in r.get("table1", [])}
        if "original" in t1:
            o = t1["original"]
            out.append(Claim("attack", "Table 1 last row: FGSM at ε = %g breaks verification" % cfg.eps,
                             f"uncleaned dodging accuracy ≤ {C['attack_dodging']:.0%}, impersonation ≤ "
                             f"{C['attack_impersonation']:.0%}",
                             [Case("dodging", self.accuracy(o, "dodging"), "<=", C["attack_dodging"]),
                              Case("impersonation", self.accuracy(o, "impersonation"), "<=", C["attack_impersonation"])],
                             "Paper: 0.84 % dodging, 43.21 % impersonation."))
        if "joint" in t1:
            j = t1["joint"]
            out.append(Claim("cleaned", "Table 1: the joint-loss ResGN restores verification",
                             f"accuracy ≥ {C['cleaned']:.0%} in every column",
                             [Case(c, self.accuracy(j, c), ">=", C["cleaned"]) for c in COLUMNS],
                             "Paper: 99.45 / 99.92 / 99.18 %."))
            if "Randomization" in t1:
                out.append(Claim("vs_randomization", "Table 1: ResGN beats Randomization by a large margin on "
                                 "adversarial examples", "joint minus Randomization accuracy > 0 (paired)",
                                 [Case(c, self.accuracy_difference(j, t1["Randomization"], c), ">", C["margin"])
                                  for c in ("dodging", "impersonation")],
                                 "Paper: +34.2 and +38.1 points."))
            others = [n for n in cfg.losses if n != "joint" and n in t1]
            if others:
                out.append(Claim("joint_best", "Table 1: the joint loss is the best of the seven combinations",
                                 "mean accuracy over the three columns, joint minus the other combination > 0 (paired)",
                                 [Case(f"vs {n}", self.mean_accuracy_difference(j, t1[n]), ">", 0.0) for n in others],
                                 "Paper: joint is best in all three columns, by 0.1–11 points."))
        t2 = r.get("table2")
        if t2:
            grid = sorted({k[0] for k in t2})
            hi_lo = [(a, b) for a in grid for b in grid if a > b]
            lo_hi = [(a, b) for a in grid for b in grid if a < b]
            cases = [Case(f"{kind} train {a:g} → test {b:g}", self.accuracy(t2[(a, b)], kind), ">=", C["cleaned"])
                     for kind in ("dodging", "impersonation") for a, b in hi_lo]
            out.append(Claim("t2_high_cleans_low", "Table 2: a ResGN trained at a higher ε cleans lower-ε examples",
                             f"accuracy ≥ {C['cleaned']:.0%}", cases, "Paper: 96.2–99.8 %."))
            cases = [Case(f"{kind} train {a:g} → test {b:g} minus train {b:g} → test {b:g}",
                          self.accuracy_difference(t2[(a, b)], t2[(b, b)], kind), "<=", -C["not_vice_versa"])
                     for kind in ("dodging", "impersonation") for a, b in lo_hi]
            out.append(Claim("t2_not_vice_versa", "Table 2: a ResGN trained at a lower ε does not clean higher-ε "
                             "examples", f"accuracy at least {C['not_vice_versa']:.0%} below the cleaner trained at "
                             "the test ε (paired)", cases,
                             "Paper: dodging 1.3–5.7 % vs 99 %, impersonation 34–42 % vs 99.8 %."))
        ad = {x["name"]: x["eval"] for x in r.get("adaptive", [])}
        if ad:
            out.append(Claim("adaptive", "Beyond the paper: the cleaner survives attacks it was not trained on "
                             "(PGD) and white-box attacks through it", f"accuracy ≥ {C['cleaned']:.0%}",
                             [Case(f"{n.split(' (')[0]}, {c}", self.accuracy(ad[n], c), ">=", C["cleaned"])
                              for n in ("PGD on the recognizer, cleaned", "FGSM through the cleaner (adaptive)",
                                        "PGD through the cleaner (adaptive)") for c in ("dodging", "impersonation")],
                             f"No paper numbers; PGD: {cfg.pgd_steps} steps of ε/4, random start."))
        return out

    def write_artifacts(self, out: Path) -> None:
        with atomic_write(out / "cleaners.pt", "wb") as f:
            torch.save({f"{c}/{e:g}": {"model": n.state_dict(), "blocks": n.blocks, "width": n.width}
                        for (c, e), n in self.cleaners.items()}, f)


def _progress(it, on: bool, desc: str):
    if not on:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


def tolerance_floor(card: dict) -> dict[str, float]:
    """Resolution of each measured number: one attacked test pair of the smallest group (genuine or impostor)
    for accuracies; 1e-4 for η (a clean-model number)."""
    v = card["metrics"].get("verification", {})
    data = card["metrics"]["data"]["test"]
    n = max(1, min(int(v.get("attacked_genuine", data["genuine"])), int(v.get("attacked_impostor", data["impostor"]))))
    return {k: (1e-4 if k == "eta" else 1.0 / n) for k in card["measured"]}


def run(cfg: Config, sections: Sequence[str] | None = None, target: nn.Module | None = None,
        progress: bool = False) -> ResGNExperiment:
    """Run the chapter without the notebook (tests, scripts, the spread tool) and write the results card."""
    exp = ResGNExperiment(cfg, target=target, progress=progress)
    exp.run_sections(sections)
    exp.write_card()
    return exp
