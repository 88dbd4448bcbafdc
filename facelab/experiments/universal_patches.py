"""Chapter 1: universal adversarial patches on face detectors (Yang et al., ECCV 2020).

The notebook ``notebooks/01_universal_patches.ipynb`` builds a :class:`Config` from its parameters cell
and calls :class:`UniversalPatchesExperiment` section by section:

* :meth:`~UniversalPatchesExperiment.table1` -- baseline and patches with/without Patch-IoU for noise,
  non-face images and face crops (Table 1, Fig. 2, §3.2's observations);
* :meth:`~UniversalPatchesExperiment.generality` -- α × location and other detectors (Fig. 5, §3.3);
* :meth:`~UniversalPatchesExperiment.transfer` -- source → target recall matrix, OpenCV's Haar cascade as a
  black-box target (Table 2);
* :meth:`~UniversalPatchesExperiment.methods` -- the four sample-set rules (Table 3, Fig. 6), threshold-Fβ
  curves and AFβ (Fig. 7);
* :meth:`~UniversalPatchesExperiment.partial` -- half and two thirds of the patch (Appendix A style).

Default data: the bundled photos (:func:`facelab.data.faces.bundled_faces`) split by photo, one square crop
around every face, tiled ``mosaic``×``mosaic`` (:mod:`facelab.data.crops`); ``test_views`` seeded augmented
views of every held-out photo add further *instances* of the same faces. The unit of the intervals is the
face a crop is cut around. Full scale: ``wider_root`` (train split for training, val for testing; the unit
is the image).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facelab.attacks import UniversalPatchAttack, init_patch, partial_mask, paste_patch, patch_boxes
from facelab.data.crops import Sample, face_crops, mosaic, units_of, view_crops, wider_samples
from facelab.experiments.base import Case, Claim, Experiment, ExperimentConfig, param
from facelab.io import atomic_write
from facelab.metrics.detection import (
    area_fbeta,
    detection_unit_table,
    precision_recall_at,
    threshold_fbeta_curve,
)
from facelab.metrics.uncertainty import Interval, UnitTable, bootstrap

__all__ = ["Config", "UniversalPatchesExperiment", "PAPER", "PAPER_SETTINGS", "CRITERIA", "METHOD_NAMES",
           "init_images", "run", "tolerance_floor"]

CHAPTER = "01_universal_patches"

#: The paper's operating point for SLN on WIDER FACE (§3.2, §4.2); the defaults of ``facelab train-patch``.
PAPER_SETTINGS = {"delta": 0.99, "score_margin_threshold": 0.5, "iou_threshold": 0.6, "epochs": 100}

#: Paper values, precision/recall (%) on WIDER FACE val, δ = 0.99, column "All" (Tables 1-3).
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "table1": {
        "Baseline-SLN": (99.4, 22.5),
        "Noise w/o Patch-IoU": (99.4, 14.2), "Parachute w/o Patch-IoU": (99.3, 12.8),
        "Lemon w/o Patch-IoU": (99.2, 13.4), "Bottle w/o Patch-IoU": (99.4, 13.9),
        "Banana w/o Patch-IoU": (99.4, 14.1), "FaceA w/o Patch-IoU": (61.8, 8.3),
        "FaceB w/o Patch-IoU": (83.6, 10.4), "FaceC w/o Patch-IoU": (98.9, 10.2),
        "Noise w/ Patch-IoU": (7.3, 1.4), "Parachute w/ Patch-IoU": (5.9, 0.3), "Lemon w/ Patch-IoU": (1.0, 0.1),
        "Bottle w/ Patch-IoU": (2.6, 0.5), "Banana w/ Patch-IoU": (20.3, 2.0), "FaceA w/ Patch-IoU": (0.0, 0.0),
        "FaceB w/ Patch-IoU": (2.6, 0.1), "FaceC w/ Patch-IoU": (0.3, 0.0),
    },
    "table1_easy": {"Baseline-SLN": (99.0, 73.4), "Noise w/o Patch-IoU": (99.1, 54.9),
                    "Noise w/ Patch-IoU": (2.7, 2.7)},
    "table2": {
        "Baseline-SLN": (99.4, 22.5), "Patch-IoU-SLN": (7.3, 1.4), "SSD->SLN": (54.1, 8.6),
        "RetinaNet->SLN": (49.2, 8.5), "Faster R-CNN->SLN": (46.3, 1.2),
    },
    "table3": {
        "Baseline-SLN": (99.4, 22.5), "Patch-Score": (99.0, 6.7), "Patch-Score-Focal": (98.9, 6.1),
        "Patch-Combination": (98.7, 5.4),
    },
}

METHOD_NAMES = {"patch_iou": "Patch-IoU", "patch_score": "Patch-Score", "patch_score_focal": "Patch-Score-Focal",
                "patch_combination": "Patch-Combination"}

#: Criteria of the claims (stated in the summary). Recall ratios are patched / clean, paired on faces.
CRITERIA = {
    "collapse": 0.25,          # recall ≤ 25 % of clean: the patch makes faces (nearly) vanish
    "suppress": 0.5,           # recall ≤ 50 % of clean: the patch suppresses faces (Criterion 1)
    "face_like": 0.5,          # patch-as-face rate ≥ 0.5: the patch itself is detected as a face
    "no_false_positive": 0.1,  # patch-as-face rate ≤ 0.1: Criterion 2 holds
    "transfer_margin": 0.1,    # transfer: recall ≥ 0.1 (absolute) below the unoptimised-noise control
}


@dataclasses.dataclass
class Config(ExperimentConfig):
    """Parameters of one chapter-1 run; each is a notebook parameter (``facelab run 1 --list-parameters``)."""

    out_dir: str = param("runs/default/01_universal_patches", "where results.json, patches.pt go (facelab run sets it)")
    victim: str = param("ssd_mobilenetv1", "zoo name, a trained arch (sln, ssd, ...) with victim_checkpoint, or module:callable")
    victim_checkpoint: str | None = param(None, "model.pt of facelab train-detector, or a state dict for the victim")
    other_detectors: tuple[str, ...] = param(("tiny_face_detector", "mtcnn"), "gradient detectors of Fig. 5 and Table 2")
    black_box: tuple[str, ...] = param(("haar",), "transfer-only targets (no gradient)")
    wider_root: str | None = param(None, "WIDER FACE root: full scale (train on train, test on val)")
    max_images: int | None = param(None, "cap on WIDER images per split (None: all)")
    max_side: int = param(640, "WIDER images are downscaled to this longest side")
    crop: int = param(128, "bundled photos: side of the square crop around each face")
    crop_context: float = param(2.2, "crop side = crop_context * sqrt(face area)")
    test_views: int = param(5, "bundled photos: augmented views per held-out photo, extra test instances")
    train_views: int = param(0, "bundled photos: augmented views per training photo (0: originals only)")
    mosaic: int = param(5, "bundled crops tiled grid x grid per image (0 or 1: one crop per image)")
    epochs: int = param(12, "paper: 100 on WIDER train; here 1 epoch = 1 step on the training mosaic")
    sweep_epochs: int = param(8, "epochs of the scale/location and other-detector sweeps")
    batch_size: int = param(1, "images per step")
    lr: float = param(0.05, "Adam learning rate on the patch pixels")
    patch_size: int = param(128, "patch side in pixels (paper 128, the largest SLN anchor)")
    alpha: float = param(0.5, "pasted patch side = alpha * sqrt(w h) of the face")
    location: str = param("top", "where the patch sits on the face: top | center | bottom")
    iou_threshold: float = param(0.5, "Patch-IoU rule IoU(A, B) > this (paper 0.6; SSD positive rule 0.5)")
    delta: float = param(0.7, "operating threshold of the victim (paper 0.99 for SLN)")
    score_margin_threshold: float = param(0.3, "delta - m of Patch-Score and Patch-Combination (paper 0.5)")
    detect_threshold: float = param(0.05, "detections kept for the threshold-F curves (P/R use delta)")
    deltas: dict | None = param(None, "delta per other detector (default: each detector default threshold)")
    inits: tuple[str, ...] = param(("noise", "coffee", "rocket", "faceA", "faceB", "faceC"), "patch initialisations of Table 1")
    methods: tuple[str, ...] = param(("patch_iou", "patch_score", "patch_score_focal", "patch_combination"), "sample-set rules of Table 3")
    scales: tuple[float, ...] = param((0.3, 0.35, 0.4), "alpha values of the Fig. 5 sweep")
    locations: tuple[str, ...] = param(("top", "center", "bottom"), "locations of the Fig. 5 sweep")
    partial_keep: tuple[float, ...] = param((0.5, 2 / 3), "kept top fraction of the patch (Appendix A style)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.score_margin_threshold < 1 or not 0 < self.delta <= 1:
            raise ValueError(f"delta={self.delta}, score_margin_threshold={self.score_margin_threshold}: "
                             "need 0 < delta - m < 1 and 0 < delta <= 1")
        for name in ("epochs", "sweep_epochs", "test_views", "train_views"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; choose from {', '.join(METHOD_NAMES)}")


def init_images(face_items: Sequence[tuple[Tensor, Tensor, Tensor]], size: int = 128) -> dict[str, Tensor]:
    """Patch initialisations: noise; non-face images (scikit-image's coffee cup and rocket, stand-ins for the
    paper's ImageNet parachute/lemon/bottle/banana); the three largest counted training faces (FaceA/B/C)."""
    import skimage.data

    inits = {"noise": init_patch("noise", size, seed=0)}
    for name in ("coffee", "rocket"):
        arr = getattr(skimage.data, name)()
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255
        h, w = img.shape[-2:]
        m = min(h, w)
        inits[name] = init_patch("image", size, image=img, box=[(w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2])
    faces = [(it[0], it[1][k]) for it in face_items for k in range(len(it[1])) if not it[2][k]]
    faces.sort(key=lambda t: -float((t[1][2] - t[1][0]) * (t[1][3] - t[1][1])))
    for letter, (im, b) in zip("ABC", faces[:3]):
        inits[f"face{letter}"] = init_patch("image", size, image=im, box=b.tolist())
    return inits


class UniversalPatchesExperiment(Experiment):
    """Data, detectors, clean-detection cache and trained patches of one chapter-1 run."""

    chapter = CHAPTER
    config_class = Config
    sections = ("table1", "methods", "generality", "transfer", "partial")

    def __init__(self, cfg: Config, victim: torch.nn.Module | None = None, progress: bool = True) -> None:
        super().__init__(cfg, progress)
        from facelab import models

        with self.timer("data"):
            self.split = None
            if cfg.wider_root:
                self.train = wider_samples(cfg.wider_root, "train", cfg.max_images, cfg.max_side)
                self.test = wider_samples(cfg.wider_root, "val", cfg.max_images, cfg.max_side)
                self.face_items = self.train
                self.test_originals: list[Sample] = []
            else:
                from facelab.data.faces import bundled_faces

                self.split = bundled_faces().split()
                train = face_crops(self.split.train_photos, cfg.crop, cfg.crop_context)
                test = face_crops(self.split.test_photos, cfg.crop, cfg.crop_context)
                self.face_items, self.test_originals = train, test  # inits from unaugmented training crops
                train = train + view_crops(self.split.train_photos, cfg.train_views, cfg.seed + 2, cfg.crop,
                                           cfg.crop_context)
                test = test + view_crops(self.split.test_photos, cfg.test_views, cfg.seed + 1, cfg.crop,
                                         cfg.crop_context)
                self.n_train_crops, self.n_test_crops = len(train), len(test)
                self.train = mosaic(train, cfg.mosaic, fill_with_repeats=True) if cfg.mosaic > 1 else train
                self.test = mosaic(test, cfg.mosaic) if cfg.mosaic > 1 else test
            self.train = [s._replace(image=self.jitter(s.image)) for s in self.train]
            self.test = [s._replace(image=self.jitter(s.image)) for s in self.test]
            self.units = units_of(self.test)
        self.detectors: dict[str, torch.nn.Module] = {}
        with self.timer("models"):
            self.detectors[cfg.victim] = (victim if victim is not None else
                                          models.load(cfg.victim, self.device, checkpoint=cfg.victim_checkpoint))
            for name in list(cfg.other_detectors) + list(cfg.black_box):
                if name in self.detectors:
                    raise ValueError(f"detector {name!r} is listed twice (victim, other_detectors, black_box)")
                self.detectors[name] = models.load(name, self.device)
        self.inits = init_images(self.face_items, cfg.patch_size)
        missing = [i for i in cfg.inits if i not in self.inits]
        if missing:
            raise ValueError(f"inits: {missing} unavailable; available: {', '.join(self.inits)}")
        self.patches: dict[tuple, Tensor] = {}
        self.snapshots: dict[tuple, dict[int, Tensor]] = {}
        self.train_time: dict[tuple, float] = {}
        self._clean: dict[str, dict] = {}

    # -- basic operations ------------------------------------------------------------------------------
    def delta_for(self, name: str) -> float:
        if name == self.cfg.victim:
            return self.cfg.delta
        if self.cfg.deltas and name in self.cfg.deltas:
            return float(self.cfg.deltas[name])
        return 0.5 if name == "haar" else float(getattr(self.detectors[name], "score_threshold", 0.5))

    def gradient_detectors(self) -> list[str]:
        return [n for n in self.detectors if n not in self.cfg.black_box]

    def train_patch(self, detector: str | None = None, method: str = "patch_iou", init: str = "noise",
                    alpha: float | None = None, location: str | None = None, epochs: int | None = None) -> Tensor:
        """Train (or fetch from cache) the patch for this setting; returns it [3,p,p] on CPU."""
        cfg = self.cfg
        detector = detector or cfg.victim
        alpha = cfg.alpha if alpha is None else alpha
        location = location or cfg.location
        epochs = cfg.epochs if epochs is None else epochs
        key = (detector, method, init, round(alpha, 4), location, epochs)
        if key in self.patches:
            return self.patches[key]
        thr = cfg.score_margin_threshold if detector == cfg.victim else self.delta_for(detector) * 0.6
        atk = UniversalPatchAttack(self.detectors[detector], method, alpha=alpha, location=location,
                                   score_threshold=thr, iou_threshold=cfg.iou_threshold, size=cfg.patch_size,
                                   init=self.inits[init], lr=cfg.lr, seed=cfg.seed, device=self.device)
        t0 = time.perf_counter()
        with self.timer("train"):
            snaps = atk.fit([(s.image, s.boxes) for s in self.train], epochs=epochs, batch_size=cfg.batch_size,
                            snapshots=(0, max(1, epochs // 2), epochs), progress=self.progress)
        self.train_time[key] = time.perf_counter() - t0
        self.patches[key] = atk.patch.detach().cpu()
        self.snapshots[key] = snaps
        return self.patches[key]

    def _detect(self, name: str, images: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        det = self.detectors[name]
        thr = None if name in self.cfg.black_box else self.cfg.detect_threshold
        with torch.no_grad():
            return [(d.boxes.cpu(), d.scores.cpu()) for d in
                    (det.detect([im.to(self.device)], score_threshold=thr)[0] for im in images)]

    def _score(self, name: str, dets, pboxes) -> dict:
        """P/R at δ of ``dets`` on the test side, the per-unit counts behind them, and the patch-as-face rate."""
        delta = self.delta_for(name)
        gts, ign = [s.boxes for s in self.test], [s.ignore for s in self.test]
        pr = precision_recall_at(dets, gts, delta, ign)
        table = detection_unit_table(dets, gts, ign, [s.units for s in self.test], delta,
                                     patch_boxes=pboxes).aligned(self.units)
        out = {"precision": pr["precision"], "recall": pr["recall"], "tp": pr["tp"], "fp": pr["fp"],
               "n_faces": pr["n_faces"], "delta": delta, "dets": dets, "units": table}
        if pboxes is not None:
            out["patch_as_face"] = table.total("patch_hits") / max(table.total("patches"), 1.0)
        return out

    def clean(self, name: str) -> dict:
        """Clean detections of detector ``name`` on the test side (cached) and P/R at its δ."""
        if name not in self._clean:
            with self.timer("evaluate"):
                dets = self._detect(name, [s.image for s in self.test])
            self._clean[name] = self._score(name, dets, None)
        return self._clean[name]

    def evaluate(self, patch: Tensor | None, name: str | None = None, alpha: float | None = None,
                 location: str | None = None, mask: Tensor | None = None) -> dict:
        """P/R at δ of detector ``name`` with ``patch`` pasted on every test face (None = clean), plus the
        patch-as-face rate: the share of pasted patches found as a face (IoU ≥ 0.5, score ≥ δ)."""
        name = name or self.cfg.victim
        if patch is None:
            return self.clean(name)
        alpha = self.cfg.alpha if alpha is None else alpha
        location = location or self.cfg.location
        with self.timer("evaluate"):
            imgs = [paste_patch(s.image, patch, s.boxes, alpha, location, mask=mask) for s in self.test]
            dets = self._detect(name, imgs)
        return self._score(name, dets, [patch_boxes(s.boxes, alpha, location) for s in self.test])

    def clean_scores(self, name: str | None = None, split: str = "test", iou: float = 0.5) -> dict:
        """Where the clean scores of detector ``name`` lie on the ``split`` ("train" or "test") side: detections
        (score ≥ ``detect_threshold``) matching a face (IoU ≥ ``iou``, ignored faces included) vs the rest,
        and P/R at δ. ``separates``: max background < δ ≤ min face."""
        from torchvision.ops import box_iou

        name = name or self.cfg.victim
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        items = self.test if split == "test" else self.train
        if split == "test":
            dets = self.clean(name)["dets"]
        else:
            with self.timer("evaluate"):
                dets = self._detect(name, [s.image for s in items])
        face_s: list[float] = []
        bg_s: list[float] = []
        for (b, sc), s in zip(dets, items):
            if not len(b):
                continue
            m = box_iou(b.float(), s.boxes.float()).max(1).values if len(s.boxes) else torch.zeros(len(b))
            face_s += sc[m >= iou].tolist()
            bg_s += sc[m < iou].tolist()
        delta = self.delta_for(name)
        pr = precision_recall_at(dets, [s.boxes for s in items], delta, [s.ignore for s in items])
        min_face, max_bg = min(face_s, default=float("nan")), max(bg_s, default=float("nan"))
        return {"split": split, "detector": name, "delta": delta, "n_face": len(face_s), "min_face": min_face,
                "n_background": len(bg_s), "max_background": max_bg,
                "separates": bool((not bg_s or max_bg < delta) and face_s and delta <= min_face),
                "precision": pr["precision"], "recall": pr["recall"], "tp": pr["tp"], "fp": pr["fp"],
                "n_faces": pr["n_faces"]}

    def data_summary(self) -> dict:
        """Sizes of both sides: images, counted face instances, units, and for the bundled photos the photos,
        distinct faces, crops and views behind them."""
        def count(items: list[Sample]) -> dict:
            return {"images": len(items), "face_instances": sum(int((~s.ignore).sum()) for s in items)}

        out: dict[str, Any] = {"train": count(self.train), "test": count(self.test)}
        out["test"]["units"] = len(self.units)
        if self.split is not None:
            out["train"].update(photos=list(self.split.train_photos), distinct_faces=len(self.split.train_faces),
                                crops=self.n_train_crops, views_per_photo=self.cfg.train_views)
            out["test"].update(photos=list(self.split.test_photos), distinct_faces=len(self.split.test_faces),
                               crops=self.n_test_crops, views_per_photo=self.cfg.test_views)
        return out

    def showcase(self) -> Sample:
        """One test image for figures: the held-out photos' own crops tiled as in evaluation, cut to the
        occupied tile rows (bundled photos), else the first test image."""
        items = self.test_originals
        if not items:
            return self.test[0]
        grid = self.cfg.mosaic if self.cfg.mosaic > 1 else 1
        if grid == 1:
            return items[0]
        s = mosaic(items[: grid * grid], grid)[0]
        h = math.ceil(min(len(items), grid * grid) / grid) * items[0].image.shape[-1]
        return s._replace(image=s.image[:, :h].contiguous())

    # -- intervals -------------------------------------------------------------------------------------
    def interval(self, stat, **evals: dict) -> Interval:
        """``stat`` of the unit tables of ``evals`` with its paired cluster-bootstrap interval."""
        tables: dict[str, UnitTable] = {k: v["units"] for k, v in evals.items()}
        return bootstrap(tables, stat, n_boot=self.cfg.bootstrap, seed=self.cfg.seed, level=self.cfg.confidence)

    def recall(self, ev: dict) -> Interval:
        return self.interval(lambda t: t["e"]["tp"] / t["e"]["faces"], e=ev)

    def precision(self, ev: dict) -> Interval:
        return self.interval(lambda t: np.where(t["e"]["tp"] + t["e"]["fp"] > 0,
                                                t["e"]["tp"] / (t["e"]["tp"] + t["e"]["fp"]), 1.0), e=ev)

    def patch_as_face(self, ev: dict) -> Interval:
        return self.interval(lambda t: t["e"]["patch_hits"] / t["e"]["patches"], e=ev)

    def recall_ratio(self, ev: dict, ref: dict) -> Interval:
        """Recall of ``ev`` / recall of ``ref`` on the same faces (paired)."""
        return self.interval(lambda t: t["e"]["tp"] / t["r"]["tp"], e=ev, r=ref)

    def recall_difference(self, ev: dict, ref: dict) -> Interval:
        return self.interval(lambda t: t["e"]["tp"] / t["e"]["faces"] - t["r"]["tp"] / t["r"]["faces"], e=ev, r=ref)

    # -- sections --------------------------------------------------------------------------------------
    def table1(self) -> list[dict]:
        """Baseline, every init without and with Patch-IoU (Table 1)."""
        rows = [_row("Baseline", None, self.clean(self.cfg.victim))]
        rows += [_row(f"{i} w/o Patch-IoU", i, self.evaluate(self.inits[i])) for i in self.cfg.inits]
        rows += [_row(f"{i} w/ Patch-IoU", i, self.evaluate(self.train_patch(init=i))) for i in self.cfg.inits]
        self.results["table1"] = rows
        return rows

    def methods(self) -> list[dict]:
        """The four sample-set rules from noise (Table 3) and their threshold-Fβ curves (Fig. 7)."""
        rows = [_row("Baseline", None, self.clean(self.cfg.victim))]
        rows += [_row(METHOD_NAMES[m], m, self.evaluate(self.train_patch(method=m))) for m in self.cfg.methods]
        curves = {}
        for r in rows:
            curves[r["name"]] = curve = self.fbeta_curve(r["eval"]["dets"])
            r["afbeta"] = area_fbeta(curve=curve)
        self.results["table3"], self.results["fbeta_curves"] = rows, curves
        return rows

    def fbeta_curve(self, dets) -> dict:
        th = np.linspace(self.cfg.detect_threshold, 1.0, 200)
        return threshold_fbeta_curve(dets, [s.boxes for s in self.test], thresholds=th,
                                     ignores=[s.ignore for s in self.test])

    def generality(self) -> list[dict]:
        """Patch-IoU at α × location on the victim (Fig. 5) and on the other gradient detectors."""
        cfg, rows = self.cfg, []
        for a in cfg.scales:
            for loc in cfg.locations:
                p = self.train_patch(alpha=a, location=loc, epochs=cfg.sweep_epochs)
                rows.append({"detector": cfg.victim, "alpha": a, "location": loc, "patch": p,
                             "clean": self.clean(cfg.victim), "eval": self.evaluate(p, alpha=a, location=loc)})
        for name in self.gradient_detectors():
            if name != cfg.victim:
                p = self.train_patch(detector=name, epochs=cfg.sweep_epochs)
                rows.append({"detector": name, "alpha": cfg.alpha, "location": cfg.location, "patch": p,
                             "clean": self.clean(name), "eval": self.evaluate(p, name)})
        self.results["generality"] = rows
        return rows

    def transfer(self) -> dict:
        """Recall/precision matrix: Patch-IoU noise patches trained on each gradient detector (rows), pasted on
        the test faces and detected by every detector incl. black-box ones (columns)."""
        targets = list(self.detectors)
        mat: dict[str, dict[str, dict]] = {}
        for s in self.gradient_detectors():
            p = self.train_patch(detector=s, epochs=self.cfg.epochs if s == self.cfg.victim else self.cfg.sweep_epochs)
            mat[s] = {t: self.evaluate(p, t) for t in targets}
        mat["noise (unoptimised)"] = {t: self.evaluate(self.inits["noise"], t) for t in targets}
        mat["clean"] = {t: self.clean(t) for t in targets}
        self.results["transfer"] = mat
        return mat

    def partial(self) -> list[dict]:
        """The noise Patch-IoU patch with only its top half / two thirds pasted (Appendix-A style)."""
        p = self.train_patch()
        rows = [{"keep": 1.0, "eval": self.evaluate(p)}]
        rows += [{"keep": float(k), "eval": self.evaluate(p, mask=partial_mask(self.cfg.patch_size, k))}
                 for k in self.cfg.partial_keep]
        for r in rows:
            r.update(_short(r["eval"]))
        self.results["partial"] = rows
        return rows

    # -- card --------------------------------------------------------------------------------------------
    def headline(self) -> dict:
        """Key numbers with intervals ([value, lo, hi]) for the card."""
        r, out = self.results, {"data": self.data_summary()}
        for key in ("table1", "table3"):
            if key in r:
                out[key] = {x["name"]: self._pr_intervals(x["eval"]) for x in r[key]}
        if "table3" in r:
            out["afbeta"] = {x["name"]: {str(b): round(v, 4) for b, v in x["afbeta"].items()} for x in r["table3"]}
        if "transfer" in r:
            out["transfer_recall"] = {s: {t: self.recall(v).as_list() for t, v in row.items()}
                                      for s, row in r["transfer"].items()}
        if "partial" in r:
            out["partial_recall"] = {f"{x['keep']:.3f}": self.recall(x["eval"]).as_list() for x in r["partial"]}
        if "generality" in r:
            out["generality"] = {f"{g['detector']}/{g['alpha']}/{g['location']}": {
                "clean_recall": self.recall(g["clean"]).as_list(), **self._pr_intervals(g["eval"])}
                for g in r["generality"]}
        out["train_seconds"] = {"/".join(map(str, k)): round(v, 2) for k, v in self.train_time.items()}
        return out

    def _pr_intervals(self, ev: dict) -> dict:
        out = {"precision": self.precision(ev).as_list(), "recall": self.recall(ev).as_list()}
        if "patch_as_face" in ev:
            out["patch_as_face"] = self.patch_as_face(ev).as_list()
        return out

    def measured(self) -> dict[str, float]:
        """Flat point values compared with the reference run: P/R/patch-as-face of every evaluated setting."""
        r, out = self.results, {}

        def put(prefix: str, ev: dict) -> None:
            out[f"{prefix}/precision"], out[f"{prefix}/recall"] = ev["precision"], ev["recall"]
            if "patch_as_face" in ev and math.isfinite(ev["patch_as_face"]):
                out[f"{prefix}/patch_as_face"] = ev["patch_as_face"]

        for key in ("table1", "table3"):
            for x in r.get(key, []):
                put(f"{key}/{x['name']}", x["eval"])
        for x in r.get("table3", []):
            for b, v in x["afbeta"].items():
                out[f"afbeta/{x['name']}/{b}"] = v
        for s, row in r.get("transfer", {}).items():
            for t, ev in row.items():
                put(f"transfer/{s}/{t}", ev)
        for x in r.get("partial", []):
            put(f"partial/{x['keep']:.3f}", x["eval"])
        for g in r.get("generality", []):
            put(f"generality/{g['detector']}/{g['alpha']}/{g['location']}", g["eval"])
        return out

    def paper_comparison(self) -> list[dict]:
        """One row per quantity with scalar ``paper`` and ``ours`` (%), precision and recall apart."""
        d = self.data_summary()["test"]
        data = (f"{d['face_instances']} face instances in {d['images']} test images"
                + (f" ({d['distinct_faces']} distinct faces of {len(d['photos'])} held-out photos, "
                   f"{d['views_per_photo']} augmented views each)" if "photos" in d else ""))
        note = f"paper: WIDER FACE val 'All', SLN, δ=0.99; ours: {self.cfg.victim}, δ={self.cfg.delta}, {data}"
        rows = []
        for table, key_of in (("table1", _paper_key), ("table3", lambda n: "Baseline-SLN" if n == "Baseline" else n)):
            paper = PAPER[table]
            for x in self.results.get(table, []):
                key = key_of(x["name"])
                if key not in paper:
                    continue
                for j, (what, iv) in enumerate((("precision", self.precision(x["eval"])),
                                                ("recall", self.recall(x["eval"])))):
                    rows.append({"quantity": f"Table {table[-1]} {x['name']} {what} (%)", "paper": float(paper[key][j]),
                                 "ours": round(100 * iv.value, 1),
                                 "interval": [round(100 * v, 1) if math.isfinite(v) else None for v in (iv.lo, iv.hi)],
                                 "note": f"{key}; {note}"})
        return rows

    def differences(self) -> dict[str, str]:
        cfg = self.cfg
        data = (f"WIDER FACE at {cfg.wider_root}" if cfg.wider_root else
                f"the bundled photos split by photo, {cfg.crop}-px face crops tiled {cfg.mosaic}×{cfg.mosaic}, "
                f"{cfg.test_views} (train {cfg.train_views}) augmented views per photo, not WIDER FACE")
        return {
            "model": f"victim {cfg.victim}" + (f" ({cfg.victim_checkpoint})" if cfg.victim_checkpoint else "")
                     + " (paper: SLN, a ResNet-50 single-level network trained on WIDER FACE); transfer sources and "
                     f"targets {', '.join(self.detectors)} (paper: SSD, RetinaNet, Faster R-CNN, SLN)",
            "data": data,
            "scale": f"{cfg.epochs} epochs (sweeps {cfg.sweep_epochs}) of Adam, lr {cfg.lr}, batch {cfg.batch_size} "
                     "(paper: 100 epochs over WIDER FACE train)",
            "protocol": f"δ = {cfg.delta}, δ − m = {cfg.score_margin_threshold} (paper 0.99 / 0.5); Patch-IoU rule "
                        f"IoU > {cfg.iou_threshold} (paper 0.6); Eq. 2's S^γ used as a weight; P/R/AFβ on "
                        "probability scores (paper: logits)",
        }

    def summary_preamble(self) -> str:
        d = self.data_summary()["test"]
        clean = self.clean(self.cfg.victim)
        inst = f"{d['face_instances']} counted face instances"
        if "distinct_faces" in d:
            inst += (f" = {d['distinct_faces']} distinct held-out faces seen in the original photos and in "
                     f"{d['views_per_photo']} augmented views of each photo; views of one face are **not "
                     f"independent**, so the intervals resample the {d['units']} faces, not the instances")
        return (f"Test side: {inst}; one instance = {100 / max(d['face_instances'], 1):.1f} points of recall. "
                f"Victim {self.cfg.victim} at δ = {self.cfg.delta}: clean precision {self.precision(clean).fmt()}, "
                f"recall {self.recall(clean).fmt()}.")

    def claims(self) -> list[Claim]:
        """§3.2's observations, Fig. 5, Table 2 and Table 3 as claims decided on intervals (:data:`CRITERIA`)."""
        cfg, r, C = self.cfg, self.results, CRITERIA
        clean = self.clean(cfg.victim)
        out: list[Claim] = []
        t1 = {x["name"]: x["eval"] for x in r.get("table1", [])}
        P1 = PAPER["table1"]
        if t1:
            inits = list(cfg.inits)
            cases = [Case(f"{i} optimised, recall ratio", self.recall_ratio(t1[f"{i} w/ Patch-IoU"], clean), "<=",
                          C["collapse"]) for i in inits]
            cases += [Case(f"{i} unoptimised, recall ratio", self.recall_ratio(t1[f"{i} w/o Patch-IoU"], clean), ">",
                           C["collapse"]) for i in inits]
            out.append(Claim("obs1", "§3.2 obs. 1, an optimised patch collapses recall, the same image unoptimised "
                             "does not", f"recall ratio ≤ {C['collapse']} optimised, > {C['collapse']} unoptimised",
                             cases, f"Paper 'All': recall {P1['Baseline-SLN'][1]} % clean, "
                             f"{_span(v[1] for k, v in P1.items() if 'w/o' in k)} % unoptimised, "
                             f"{_span(v[1] for k, v in P1.items() if 'w/ ' in k)} % optimised."))
            out.append(Claim("obs2", "§3.2 obs. 2, the Patch-IoU patch is itself detected as a face",
                             f"patch-as-face rate ≥ {C['face_like']}",
                             [Case(f"{i}", self.patch_as_face(t1[f"{i} w/ Patch-IoU"]), ">=", C["face_like"])
                              for i in inits],
                             f"Paper: precision {_span(v[0] for k, v in P1.items() if 'w/ ' in k)} % after Patch-IoU. "
                             f"Training here: {cfg.epochs} epochs over {len(self.train)} training image(s)."))
            faces = [i for i in inits if i.startswith("face")]
            if faces:
                out.append(Claim("obs3", "§3.2 obs. 3, a pasted real face does not hide the face",
                                 f"recall ratio > {C['collapse']}",
                                 [Case(i, self.recall_ratio(t1[f"{i} w/o Patch-IoU"], clean), ">", C["collapse"])
                                  for i in faces],
                                 "Paper: FaceA/B/C unoptimised recall "
                                 f"{_span(P1[f'Face{x} w/o Patch-IoU'][1] for x in 'ABC')} % (clean 22.5 %)."))
        gen = r.get("generality", [])
        if gen:
            vg = [g for g in gen if g["detector"] == cfg.victim]
            og = [g for g in gen if g["detector"] != cfg.victim]
            out.append(Claim("fig5_scales", f"§3.3 / Fig. 5, Patch-IoU works at every scale and location on {cfg.victim}",
                             f"recall ratio ≤ {C['suppress']}",
                             [Case(f"α={g['alpha']} {g['location']}", self.recall_ratio(g["eval"], g["clean"]), "<=",
                                   C["suppress"]) for g in vg],
                             f"{cfg.sweep_epochs} epochs each; the paper finds every such patch face-like."))
            if og:
                out.append(Claim("fig5_detectors", "§3.3, Patch-IoU works on other detectors",
                                 f"recall ratio ≤ {C['suppress']}",
                                 [Case(g["detector"], self.recall_ratio(g["eval"], g["clean"]), "<=", C["suppress"])
                                  for g in og], f"{cfg.sweep_epochs} epochs each."))
        mat = r.get("transfer")
        if mat:
            noise = mat["noise (unoptimised)"]
            pairs = [(s, t) for s in mat if s in self.detectors for t in mat[s] if t != s]
            out.append(Claim("table2", "Table 2, patches transfer between detectors",
                             f"recall at least {C['transfer_margin']} below the unoptimised-noise control",
                             [Case(f"{s} → {t}, recall minus noise recall", self.recall_difference(mat[s][t], noise[t]),
                                   "<=", -C["transfer_margin"]) for s, t in pairs],
                             "Paper, recall on SLN: " + ", ".join(f"{k} {v[1]:.1f} %" for k, v in PAPER["table2"].items()
                                                                  if "->" in k or k.startswith("Baseline")) + "."))
        t3 = [x for x in r.get("table3", []) if x["key"] not in (None, "patch_iou")]
        if t3:
            cases = []
            for x in t3:
                cases.append(Case(f"{x['name']} recall ratio", self.recall_ratio(x["eval"], clean), "<=", C["suppress"]))
                cases.append(Case(f"{x['name']} patch-as-face", self.patch_as_face(x["eval"]), "<=",
                                  C["no_false_positive"]))
            p3 = {k: v for k, v in PAPER["table3"].items() if k != "Baseline-SLN"}
            pbest = min(p3, key=lambda k: p3[k][1])
            ps = {x["key"]: self.patches.get((cfg.victim, x["key"], "noise", round(cfg.alpha, 4), cfg.location,
                                              cfg.epochs)) for x in t3}
            same = (ps.get("patch_score") is not None and ps.get("patch_combination") is not None
                    and torch.equal(ps["patch_score"], ps["patch_combination"]))
            out.append(Claim("table3", "Table 3, Criteria 1 and 2 for the improved methods",
                             f"recall ratio ≤ {C['suppress']} and patch-as-face ≤ {C['no_false_positive']}", cases,
                             f"Paper: lowest recall {pbest} {p3[pbest][1]:.1f} %."
                             + (" Patch-Combination trained the very same patch as Patch-Score (λ1/λ2 excluded no "
                                "anchor above δ − m)." if same else "")))
        part = r.get("partial")
        if part:
            out.append(Claim("partial", "Appendix-A style, part of the patch still suppresses faces (no paper numbers)",
                             f"recall ratio ≤ {C['suppress']}",
                             [Case(f"top {x['keep']:.2f}", self.recall_ratio(x["eval"], clean), "<=", C["suppress"])
                              for x in part]))
        return out

    def write_artifacts(self, out: Path) -> None:
        with atomic_write(out / "patches.pt", "wb") as f:
            torch.save({"/".join(map(str, k)): v for k, v in self.patches.items()}, f)


def _short(ev: dict) -> dict:
    return {k: ev[k] for k in ("precision", "recall", "tp", "fp", "n_faces", "patch_as_face") if k in ev}


def _row(name: str, key: Any, ev: dict) -> dict:
    return {"name": name, "key": key, "eval": ev, **_short(ev)}


def _paper_key(name: str) -> str:
    if name == "Baseline":
        return "Baseline-SLN"
    init, _, rest = name.partition(" ")
    return f"{init[0].upper() + init[1:]} {rest}"


def _span(xs) -> str:
    xs = sorted(xs)
    return f"{xs[0]}" if xs[0] == xs[-1] else f"{xs[0]}–{xs[-1]}"


def tolerance_floor(card: dict) -> dict[str, float]:
    """The resolution of each measured number of a card: one counted test face instance (a recall, precision
    or patch-as-face rate cannot move by less than about that once a face changes)."""
    n = max(int(card["metrics"]["data"]["test"]["face_instances"]), 1)
    return {k: 1.0 / n for k in card["measured"]}


def run(cfg: Config, sections: Sequence[str] | None = None, victim: torch.nn.Module | None = None,
        progress: bool = False) -> UniversalPatchesExperiment:
    """Run the chapter without the notebook (tests, scripts, the spread tool) and write the results card."""
    exp = UniversalPatchesExperiment(cfg, victim=victim, progress=progress)
    exp.run_sections(sections)
    exp.write_card()
    return exp
