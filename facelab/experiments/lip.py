"""Chapter 2: LIP, localized instance perturbations against single-stage face detectors (Yang, Wiliem, Chen &
Lovell, poster; seed document ``001_5ed60550866aaf81.txt``).

The notebook ``notebooks/02_lip.ipynb`` builds a :class:`Config` and calls :class:`LipExperiment` section by
section:

* :meth:`~LipExperiment.erf` -- the effective receptive field of every anchor scale of each detector against
  its theoretical receptive field (Luo et al.; claim 2), and the radius LIP-H uses;
* :meth:`~LipExperiment.ipi` -- the instance-perturbation-interference table and curve: IMP on synthetic scenes
  of real face crops, 1 … 64 faces 40 px apart and 9 faces 40 … 240 px apart (claim 1; the per-instance
  gradients of claim 2);
* :meth:`~LipExperiment.methods` -- None / IMP / LP / LIP-A / LIP-H on the bundled photos and on scenes (or on
  WIDER FACE val Easy / Medium / Hard with ``wider_root``): AP, recall and success rate (claims 3 and 4);
* :meth:`~LipExperiment.objects` -- IMP against LP on CenterNet, photos with people (or COCO val2017 with
  ``coco_root``): average recall and AP (claim 5).

Success (the poster's *attack success rate*) = the fraction of the faces detected on the clean image at the
operating threshold that are no longer detected after the attack. Intervals: cluster bootstrap over faces (the
unit is the source face of a crop -- a face pasted into several scenes is one unit), over objects (persons) for the object
row, over the ERF images for receptive fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facelab.attacks import erf as erf_mod
from facelab.attacks.lip import METHODS, anchor_regions, dense_of, disc_regions, box_regions, instance_gradients, \
    instance_losses, lip_attack
from facelab.experiments.base import Case, Claim, Experiment, ExperimentConfig, param
from facelab.io import atomic_write
from facelab.metrics.detection import match_detections
from facelab.metrics.uncertainty import Interval, UnitTable, bootstrap, percentile_interval

__all__ = ["Config", "LipExperiment", "PAPER", "METHOD_NAMES", "run", "tolerance_floor"]

CHAPTER = "02_lip"

METHOD_NAMES = {"none": "None", "imp": "IMP", "lp": "LP", "lip_a": "LIP-A", "lip_h": "LIP-H"}

#: The poster's numbers (detector HR; synthetic images; WIDER FACE val; an object-detection set it does not name).
PAPER: dict[str, Any] = {
    "ipi": {(1, 40): 100.0, (9, 40): 51.5, (9, 160): 56.0, (9, 240): 63.9, (64, 40): 18.3},
    "wider_ap": {"easy": (92.4, 46.2, 30.1, 28.2, 26.5), "medium": (90.7, 50.7, 34.7, 32.2, 31.1),
                 "hard": (77.3, 45.9, 29.3, 23.6, 26.6)},
    "wider_success": {"easy": (50.0, 67.4, 69.5, 71.3), "medium": (44.1, 61.7, 64.5, 65.7),
                      "hard": (40.6, 62.1, 69.5, 65.6)},
    "objects": {"average recall": (7.9, 2.2), "average precision": (6.9, 1.9)},
}


@dataclasses.dataclass
class Config(ExperimentConfig):
    """Parameters of one chapter-2 run; each is a notebook parameter (``facelab run 2 --list-parameters``)."""

    out_dir: str = param("runs/default/02_lip", "where results.json and adversarial.pt go (facelab run sets it)")
    victim: str = param("blazeface", "single-stage face detector of the zoo (paper: HR, not available), or a trained arch with victim_checkpoint")
    victim_checkpoint: str | None = param(None, "model.pt of facelab train-detector (SLN, SSD, RetinaNet) for the victim")
    delta: float = param(0.2, "operating threshold of the victim: a face counts as detected at score >= delta (0.2: BlazeFace default)")
    eps: float = param(2 / 255, "L-inf budget of every perturbation (the poster does not give it)")
    steps: int = param(3, "I-FGSM steps (Kurakin et al.), the same for IMP, LP, LIP-A, LIP-H")
    alpha: float = param(1 / 255, "I-FGSM step size")
    iou_assign: float = param(0.3, "an anchor belongs to a face when its decoded box has IoU >= this with it")
    gradient_mode: str = param("replicate", "per-instance gradients of LIP: replicate | vmap | group | loop")
    face_size: float = param(36.0, "face height in scene pixels at the poster scale (distances 40 to 240 px)")
    scene_scale: float = param(0.5, "scenes are rendered at this fraction of the poster scale (faces, distances)")
    ipi_counts: tuple[int, ...] = param((1, 9, 64), "numbers of faces of the IPI curve (at ipi_distance)")
    ipi_distance: float = param(40.0, "centre distance of the face-count family (poster px)")
    ipi_distances: tuple[float, ...] = param((40.0, 160.0, 240.0), "centre distances of the distance family (poster px)")
    ipi_faces: int = param(9, "number of faces of the distance family")
    faces_per_setting: int = param(9, "faces per IPI setting: scenes are added until this many faces")
    ipi_methods: tuple[str, ...] = param(("imp",), "methods run on every IPI setting (LIP costs one image copy per face)")
    table_scenes: int = param(1, "scenes of ipi_faces faces at ipi_distance in the methods table")
    max_photos: int = param(2, "bundled photos of the methods table, those with the most faces first (0: none)")
    photo_max_side: int = param(320, "bundled photos are downscaled to this longest side")
    wider_root: str | None = param(None, "WIDER FACE root: methods table on WIDER val Easy/Medium/Hard (official AP)")
    wider_gt_dir: str | None = param(None, "folder of the official wider_*_val.mat files (default: wider_root/eval_tools/ground_truth)")
    max_images: int | None = param(None, "cap on WIDER val images (None: all)")
    max_side: int = param(640, "WIDER images are downscaled to this longest side")
    erf_detectors: tuple[str, ...] = param(("tiny_face_detector",), "detectors besides the victim whose ERF is measured per anchor scale")
    erf_images: int = param(3, "images averaged for each ERF map (Luo et al.)")
    erf_threshold: float = param(erf_mod.ERF_THRESHOLD, "ERF = pixels >= this fraction of the peak (1 - 95.45 pct)")
    object_detector: str = param("centernet", "object detector of claim 5 (zoo)")
    coco_root: str | None = param(None, "COCO root with annotations/instances_val2017.json and val2017/ (claim 5 at scale)")
    object_images: int = param(1, "images of claim 5 (bundled photos with people, or COCO images)")
    object_delta: float = param(0.3, "operating threshold of the object detector")
    object_max_side: int = param(384, "object images are downscaled to this longest side")
    object_steps: int = param(2, "I-FGSM steps of the object row (same eps and alpha; CenterNet is slow on a CPU)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.delta < 1:
            raise ValueError(f"delta={self.delta}: must lie in (0, 1)")
        if not self.eps >= 0 or not self.alpha >= 0:
            raise ValueError(f"eps={self.eps}, alpha={self.alpha}: must be >= 0")
        for name in ("steps", "object_steps", "faces_per_setting", "table_scenes", "erf_images", "object_images", "max_photos"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if not 0 < self.scene_scale <= 4:
            raise ValueError(f"scene_scale={self.scene_scale}: must lie in (0, 4]")
        bad = [m for m in self.ipi_methods if m not in METHODS]
        if bad:
            raise ValueError(f"ipi_methods: unknown {bad}; choose from {', '.join(METHODS)}")
        if any(n < 1 for n in self.ipi_counts) or self.ipi_faces < 1:
            raise ValueError(f"ipi_counts={self.ipi_counts}, ipi_faces={self.ipi_faces}: need at least one face")
        if self.gradient_mode not in ("replicate", "group"):
            # vmap and loop give the same gradient; the attack itself uses the replicated batch (see lip.py)
            if self.gradient_mode not in ("vmap", "loop"):
                raise ValueError(f"gradient_mode={self.gradient_mode!r}: choose replicate, vmap, group or loop")


@dataclasses.dataclass
class Item:
    """One attacked image: pixels, faces, the unit of each face, and what the attacks made of it."""

    image: Tensor
    boxes: Tensor
    units: list[str]
    key: str
    ignore: Tensor | None = None
    adv: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    dets: dict[str, tuple[Tensor, Tensor]] = dataclasses.field(default_factory=dict)
    hits: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    regions: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


class LipExperiment(Experiment):
    """Detectors, scenes, photos and every attacked image of one chapter-2 run."""

    chapter = CHAPTER
    config_class = Config
    sections = ("erf", "ipi", "methods", "objects")

    def __init__(self, cfg: Config, victim: torch.nn.Module | None = None, progress: bool = True) -> None:
        super().__init__(cfg, progress)
        from facelab import models

        with self.timer("models"):
            self.victim = victim if victim is not None else models.load(cfg.victim, self.device,
                                                                       checkpoint=cfg.victim_checkpoint)
        self.models = models
        self.erf_radius: dict[float, float] = {}  # victim anchor scale (input px) -> ERF radius (input px)
        self.erf_maps: dict[str, list[dict]] = {}
        self.ipi_items: dict[tuple, list[Item]] = {}
        self.table_items: dict[str, list[Item]] = {}
        self.object_items: list[Item] = []
        self._canvas: dict[tuple, int] = {}
        self._erf_intervals: dict[tuple, Interval] = {}

    # -- basic operations -----------------------------------------------------------------------------
    def _input_size(self, model) -> int:
        return int(getattr(model, "input_size", 256))

    def _tqdm(self, it, **kw):
        if not self.progress:
            return it
        from tqdm.auto import tqdm
        return tqdm(it, **kw)

    def detect(self, x: Tensor, threshold: float | None = None) -> list[tuple[Tensor, Tensor]]:
        thr = self.cfg.delta if threshold is None else threshold
        out = self.victim.detect(x.to(self.device), score_threshold=thr)
        return [(d.boxes.cpu(), d.scores.cpu()) for d in out]

    def _hits(self, det: tuple[Tensor, Tensor], gt: Tensor, ignore: Tensor | None = None) -> np.ndarray:
        b, s = det
        keep = s >= self.cfg.delta
        m = match_detections(b[keep], s[keep], gt, None if ignore is None else ignore.numpy(), 0.5)
        hit = np.zeros(len(gt), dtype=bool)
        hit[m.matched_gt[m.tp]] = True
        return hit

    def victim_scales(self) -> list[float]:
        """The victim's anchor scales (prior side in input pixels)."""
        S = self._input_size(self.victim)
        with torch.no_grad():
            d = dense_of(self.victim, torch.full((1, 3, S, S), 0.5, device=self.device))
        return sorted(erf_mod.anchor_scales(d.anchors[0].cpu()))

    def lip_h_radius(self, image_size: Sequence[int], face_side: float) -> float:
        """LIP-H's radius in image pixels: the measured ERF radius of the victim's anchor scale nearest the face's
        size at the detector input (measured by :meth:`erf` on the victim)."""
        if not self.erf_radius:
            self.measure_victim_erf()
        S = self._input_size(self.victim)
        side_in = face_side * S / max(image_size)
        scale = min(self.erf_radius, key=lambda s: abs(math.log(s) - math.log(max(side_in, 1e-3))))
        return erf_mod.erf_radius_in_image(self.erf_radius[scale], S, image_size)

    def regions(self, x: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """Instance regions of one image: LIP-A (the assigned anchors' priors) and LIP-H (measured ERF discs)."""
        H, W = x.shape[-2:]
        with torch.no_grad():
            d = dense_of(self.victim, x.to(self.device))
        d = dataclasses.replace(d, anchors=d.anchors.cpu(), boxes=d.boxes.cpu(), scores=d.scores.cpu(),
                                logits=None if d.logits is None else d.logits.cpu())
        a = anchor_regions(d, boxes, (H, W), self.cfg.iou_assign)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1).sqrt()
        r = torch.tensor([self.lip_h_radius((H, W), float(s)) for s in side])
        h = disc_regions(centres, r, (H, W))
        return {"lip_a": a, "lip_h": h, "lp": h}

    def attack_items(self, items: Sequence[Item], methods: Sequence[str], batch: int = 8, desc: str = "") -> None:
        """Clean and attacked detections of ``items`` for each method (images of equal size are batched)."""
        cfg = self.cfg
        for it in items:
            if "none" not in it.dets:
                it.dets["none"] = self.detect(it.image[None], 0.05 if it.meta.get("low_threshold") else None)[0]
                it.hits["none"] = self._hits(it.dets["none"], it.boxes, it.ignore)
            if any(m != "imp" for m in methods) and not it.regions:
                it.regions = self.regions(it.image[None], it.boxes)
        groups: dict[tuple, list[Item]] = {}
        for it in items:
            groups.setdefault(tuple(it.image.shape), []).append(it)
        jobs = [(m, g[i:i + batch]) for m in methods for g in groups.values() for i in range(0, len(g), batch)]
        for m, chunk in self._tqdm(jobs, desc=desc or "attacks", leave=False):
            x = torch.stack([it.image for it in chunk]).to(self.device)
            regs = None if m == "imp" else [it.regions[m] for it in chunk]
            with self.timer("attack"):
                xa = lip_attack(self.victim, x, [it.boxes for it in chunk], m, cfg.eps, cfg.steps, cfg.alpha,
                                regions=regs, iou=cfg.iou_assign, stop_delta=cfg.delta).cpu()
            for it, a in zip(chunk, xa):
                it.adv[m] = a
                it.dets[m] = self.detect(a[None], 0.05 if it.meta.get("low_threshold") else None)[0]
                it.hits[m] = self._hits(it.dets[m], it.boxes, it.ignore)

    # -- units and rates ---------------------------------------------------------------------------------
    @staticmethod
    def success_table(items: Sequence[Item], method: str) -> UnitTable:
        """Per unit: ``hit0`` (detected clean), ``lost`` (detected clean, missed after ``method``), ``faces``, ``tp``."""
        cols: dict[str, dict[str, float]] = {k: {} for k in ("hit0", "lost", "faces", "tp")}
        for it in items:
            counted = np.ones(len(it.boxes), bool) if it.ignore is None else ~it.ignore.numpy().astype(bool)
            h0, h1 = it.hits["none"], it.hits.get(method, it.hits["none"])
            for j, u in enumerate(it.units):
                if not counted[j]:
                    continue
                for k, v in (("hit0", h0[j]), ("lost", h0[j] and not h1[j]), ("faces", 1), ("tp", h1[j])):
                    cols[k][u] = cols[k].get(u, 0.0) + float(v)
        units = tuple(dict.fromkeys(u for it in items for u in it.units))
        return UnitTable(units, {k: np.array([c.get(u, 0.0) for u in units]) for k, c in cols.items()})

    def _boot(self, tables: dict[str, UnitTable], stat) -> Interval:
        units = tuple(dict.fromkeys(u for t in tables.values() for u in t.units))
        al = {k: t.aligned(units) for k, t in tables.items()}
        return bootstrap(al, stat, self.cfg.bootstrap, self.cfg.seed, self.cfg.confidence)

    def success(self, items: Sequence[Item], method: str) -> Interval:
        return self._boot({"a": self.success_table(items, method)}, lambda t: t["a"]["lost"] / t["a"]["hit0"])

    def recall(self, items: Sequence[Item], method: str) -> Interval:
        return self._boot({"a": self.success_table(items, method)}, lambda t: t["a"]["tp"] / t["a"]["faces"])

    def success_difference(self, a: tuple[Sequence[Item], str], b: tuple[Sequence[Item], str]) -> Interval:
        """success(a) − success(b), paired over the faces both contain (bootstrap over the union of units)."""
        return self._boot({"a": self.success_table(*a), "b": self.success_table(*b)},
                          lambda t: t["a"]["lost"] / t["a"]["hit0"] - t["b"]["lost"] / t["b"]["hit0"])

    # -- ERF ---------------------------------------------------------------------------------------------
    def _erf_images(self, size: int) -> Tensor:
        from facelab.data.faces import bundled_faces

        fs = bundled_faces()
        ims = []
        for p in fs.photos[: self.cfg.erf_images]:
            im = fs.photo(p.photo_id).image(max_side=size * 2)
            h, w = im.shape[-2:]
            m = min(h, w)  # centre square, resized to the detector input
            sq = im[:, (h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
            ims.append(F.interpolate(sq[None], size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False)[0].clamp(0, 1))
        return self.jitter(torch.stack(ims))

    def _erf_of(self, name: str, model) -> list[dict]:
        S = self._input_size(model)
        ims = self._erf_images(S).to(self.device)
        with torch.no_grad():
            d = dense_of(model, ims[:1])
        rows = []
        for s, idx in erf_mod.anchor_scales(d.anchors[0].cpu()).items():
            a = erf_mod.centre_anchor(d.anchors[0].cpu(), idx, (S, S))
            with self.timer("erf"):
                g = erf_mod.erf_gradients(model, ims, a).cpu()
            st = erf_mod.erf_stats(g.mean(0), support=g.amax(0), threshold=self.cfg.erf_threshold)
            rows.append({"detector": name, "scale": s, "anchor": a, "input_size": S,
                         "prior": d.anchors[0, a].cpu().tolist(), **st, "grads": g})
        return rows

    def measure_victim_erf(self) -> None:
        rows = self._erf_of(self.cfg.victim, self.victim)
        self.erf_maps[self.cfg.victim] = rows
        self.erf_radius = {r["scale"]: r["erf_radius"] for r in rows}

    def erf(self) -> list[dict]:
        """ERF vs TRF for every anchor scale of the victim and of ``erf_detectors`` (claim 2)."""
        if self.cfg.victim not in self.erf_maps:
            self.measure_victim_erf()
        for name in self._tqdm(self.cfg.erf_detectors, desc="ERF"):
            if name not in self.erf_maps:
                self.erf_maps[name] = self._erf_of(name, self.models.load(name, self.device))
        rows = [{k: v for k, v in r.items() if k != "grads"} for rs in self.erf_maps.values() for r in rs]
        self.results["erf"] = rows
        return rows

    def erf_ratio_interval(self, row: dict) -> Interval:
        """ERF/TRF area with a bootstrap interval over the ERF images (each resample: a new mean map)."""
        key = (row["detector"], row["scale"])
        if key in self._erf_intervals:
            return self._erf_intervals[key]
        g = next(r for r in self.erf_maps[row["detector"]] if r["scale"] == row["scale"])["grads"]
        trf = float((g.amax(0) > 0).sum())
        rng = np.random.default_rng(self.cfg.seed)
        vals = []
        for _ in range(min(self.cfg.bootstrap, 200) if self.cfg.bootstrap else 0):
            h = g[torch.from_numpy(rng.integers(0, g.shape[0], g.shape[0]))].mean(0).double()
            vals.append(float((h >= self.cfg.erf_threshold * h.max()).sum()) / max(trf, 1.0))
        lo, hi = percentile_interval(np.array(vals), self.cfg.confidence) if vals else (math.nan, math.nan)
        self._erf_intervals[key] = Interval(row["ratio"], lo, hi, self.cfg.confidence)
        return self._erf_intervals[key]

    # -- scenes ----------------------------------------------------------------------------------------------
    def _scene_items(self, n: int, distance: float, canvas_grid: tuple[int, float], count: int, tag: str) -> list[Item]:
        from facelab.data.scenes import make_scene

        cfg, s = self.cfg, self.cfg.scene_scale
        key = (canvas_grid, s, cfg.face_size)
        if key not in self._canvas:  # the family's canvas: the widest grid of the family, rendered once
            big = make_scene(canvas_grid[0], canvas_grid[1] * s, face_size=cfg.face_size * s, seed=0)
            self._canvas[key] = max(big.image.shape[-2:])
        C = self._canvas[key]
        items = []
        for k in range(count):
            sc = make_scene(n, distance * s, face_size=cfg.face_size * s, seed=cfg.seed * 1000 + k, canvas=(C, C))
            items.append(Item(self.jitter(sc.image), sc.boxes, list(sc.face_ids), f"{tag}/n{n}/d{distance:g}/{k}",
                              meta={"n": n, "distance": distance, "canvas": C}))
        return items

    def ipi_settings(self) -> list[tuple[str, int, float]]:
        cfg = self.cfg
        out = [("count", n, cfg.ipi_distance) for n in cfg.ipi_counts]
        out += [("distance", cfg.ipi_faces, d) for d in cfg.ipi_distances]
        return out

    def ipi(self) -> list[dict]:
        """IMP (and ``ipi_methods``) on every IPI setting: success with intervals over the faces (claim 1)."""
        cfg = self.cfg
        fam_grid = {"count": (max(cfg.ipi_counts), cfg.ipi_distance),
                    "distance": (cfg.ipi_faces, max(cfg.ipi_distances))}
        rows = []
        for fam, n, d in self._tqdm(self.ipi_settings(), desc="IPI settings"):
            key = (fam, n, d)
            if key not in self.ipi_items:
                with self.timer("data"):
                    items = self._scene_items(n, d, fam_grid[fam], max(1, math.ceil(cfg.faces_per_setting / n)), fam)
                self.attack_items(items, cfg.ipi_methods, desc=f"{fam} n={n} d={d:g}")
                self.ipi_items[key] = items
            items = self.ipi_items[key]
            row = {"family": fam, "n": n, "distance": d, "scenes": len(items), "canvas": items[0].meta["canvas"],
                   "faces": int(sum(len(it.boxes) for it in items)),
                   "clean_detected": int(sum(it.hits["none"].sum() for it in items))}
            for m in cfg.ipi_methods:
                row[m] = self.success(items, m).as_list()
            rows.append(row)
        self.results["ipi"] = rows
        self.results["gradients"] = self.instance_gradient_stats()
        return rows

    def instance_gradient_stats(self) -> dict[str, Any]:
        """Claim 2 on the victim: how Gaussian-like one face's loss gradient is (R², 1-face scenes) and which share
        of its mass falls on the *other* faces (their boxes) in the densest 9-face scenes."""
        cfg = self.cfg
        out: dict[str, Any] = {}
        singles = self.ipi_items.get(("count", 1, cfg.ipi_distance), [])
        dense9 = self.ipi_items.get(("count", cfg.ipi_faces, cfg.ipi_distance)) or self.ipi_items.get(
            ("distance", cfg.ipi_faces, min(cfg.ipi_distances)), [])
        cols: dict[str, dict[str, float]] = {"r2": {}, "one": {}, "neigh": {}, "mass": {}}
        for it in singles:
            g = self._grads(it)
            if g is None:
                continue
            r2 = erf_mod.gaussian_r2(g[0].abs().sum(0))
            u = it.units[0]
            cols["r2"][u] = cols["r2"].get(u, 0.0) + r2
            cols["one"][u] = cols["one"].get(u, 0.0) + 1
        for it in dense9:
            g = self._grads(it)
            if g is None:
                continue
            faces = box_regions(it.boxes, tuple(it.image.shape[-2:])) > 0
            mag = g.abs().sum(1)  # [N,H,W]
            for i, u in enumerate(it.units):
                others = (faces[[j for j in range(len(faces)) if j != i]].any(0) & ~faces[i]) if len(faces) > 1 \
                    else torch.zeros_like(faces[i])
                cols["neigh"][u] = cols["neigh"].get(u, 0.0) + float(mag[i][others].sum())
                cols["mass"][u] = cols["mass"].get(u, 0.0) + float(mag[i].sum())
        self._grad_cols = cols
        if cols["one"]:
            out["gaussian_r2"] = self._col_interval(cols, "r2", "one").as_list()
        if cols["mass"]:
            out["neighbour_share"] = self._col_interval(cols, "neigh", "mass").as_list()
        return out

    def _col_interval(self, cols: dict, num: str, den: str) -> Interval:
        units = tuple(dict.fromkeys(list(cols[num]) + list(cols[den])))
        t = UnitTable(units, {"n": np.array([cols[num].get(u, 0.0) for u in units]),
                              "d": np.array([cols[den].get(u, 0.0) for u in units])})
        return bootstrap({"t": t}, lambda x: x["t"]["n"] / x["t"]["d"], self.cfg.bootstrap, self.cfg.seed,
                         self.cfg.confidence)

    def _grads(self, it: Item) -> Tensor | None:
        if not len(it.boxes):
            return None
        x = it.image[None].to(self.device)
        gts = [it.boxes.to(self.device)]

        def losses(X: Tensor) -> Tensor:
            return torch.stack(instance_losses(dense_of(self.victim, X), gts * X.shape[0], self.cfg.iou_assign))
        mode = self.cfg.gradient_mode if self.cfg.gradient_mode != "group" else "replicate"
        with self.timer("gradients"):
            return instance_gradients(losses, x, mode).cpu()

    # -- methods table (claims 3, 4) ----------------------------------------------------------------------
    def _photo_items(self) -> list[Item]:
        from facelab.data.faces import bundled_faces

        fs = bundled_faces()
        items = []
        photos = sorted(fs.photos, key=lambda p: -len(p.face_ids))[: self.cfg.max_photos]
        for p in photos:
            im = fs.photo(p.photo_id).image(max_side=self.cfg.photo_max_side)
            boxes = fs.photo(p.photo_id).scaled_boxes(self.cfg.photo_max_side)
            items.append(Item(self.jitter(im), boxes.float(), list(p.face_ids), f"photo/{p.photo_id}",
                              meta={"low_threshold": True}))
        return items

    def _wider_items(self) -> list[Item]:
        from facelab.data.crops import downscale
        from facelab.data.wider import WiderFace

        ds = WiderFace(self.cfg.wider_root, "val")
        n = len(ds) if self.cfg.max_images is None else min(len(ds), int(self.cfg.max_images))
        items = []
        for i in range(n):
            img, boxes, info = ds[i]
            s = min(1.0, self.cfg.max_side / max(img.shape[-2:]))
            img, boxes = downscale(img, boxes, self.cfg.max_side)
            ign = info["invalid"].bool() | ((boxes[:, 2] - boxes[:, 0]) < 1) | ((boxes[:, 3] - boxes[:, 1]) < 1)
            items.append(Item(self.jitter(img), boxes, [f"val/{i}"] * len(boxes), f"wider/{i}", ign,
                              meta={"low_threshold": True, "event": info["event"],
                                    "name": Path(info["file"]).stem, "scale": s}))
        return items

    def methods(self) -> dict[str, Any]:
        """None / IMP / LP / LIP-A / LIP-H on photos and scenes (default) or WIDER val: AP, recall, success."""
        cfg = self.cfg
        with self.timer("data"):
            if cfg.wider_root:
                sets = {"wider": self._wider_items()}
            else:
                sets = {"photos": self._photo_items()} if cfg.max_photos else {}
                if cfg.table_scenes:
                    sets["scenes"] = self._scene_items(cfg.ipi_faces, cfg.ipi_distance,
                                                       (max(cfg.ipi_counts), cfg.ipi_distance), cfg.table_scenes, "table")
                    for it in sets["scenes"]:
                        it.meta["low_threshold"] = True
        out: dict[str, Any] = {}
        for name, items in sets.items():
            self.attack_items(items, METHODS, batch=4, desc=f"methods on {name}")
            self.table_items[name] = items
            ap = self.average_precision(items)
            out[name] = {m: {"recall": self.recall(items, m).as_list(),
                             "success": (self.success(items, m).as_list() if m != "none" else None),
                             "ap": ap[m]} for m in ("none",) + METHODS}
        self.results["methods"] = out
        return out

    def average_precision(self, items: Sequence[Item]) -> dict[str, dict[str, float]]:
        """AP (%) per method with the official WIDER protocol (:func:`facelab.metrics.widerface.evaluate`): the
        Easy/Medium/Hard settings on WIDER val, setting "all" on other data."""
        wider = bool(self.cfg.wider_root)
        if wider:
            from facelab.data.wider_mat import load_wider_gt

            gt_dir = self.cfg.wider_gt_dir or str(Path(self.cfg.wider_root) / "eval_tools" / "ground_truth")
            full = load_wider_gt(gt_dir)
            keep = {(it.meta["event"], it.meta["name"]) for it in items}
            gt = {s: {e: {n: r for n, r in ev.items() if (e, n) in keep} for e, ev in full[s].items()}
                  for s in full}
            gt = {s: {e: ev for e, ev in g.items() if ev} for s, g in gt.items()}
            settings = ("easy", "medium", "hard")
        else:
            gt = {"all": {"set": {it.key: {"boxes": _xywh(it.boxes), "keep": None} for it in items}}}
            settings = ("all",)
        out = {}
        for m in ("none",) + METHODS:
            pred: dict[str, dict[str, np.ndarray]] = {}
            for it in items:
                b, s = it.dets[m]
                if wider:
                    b = b / it.meta["scale"]
                    pred.setdefault(it.meta["event"], {})[it.meta["name"]] = np.c_[_xywh(b), s.numpy()]
                else:
                    pred.setdefault("set", {})[it.key] = np.c_[_xywh(b), s.numpy()]
            out[m] = {k: round(100 * v, 2) for k, v in _ap(pred, gt, settings).items()}
        return out

    # -- objects (claim 5) ----------------------------------------------------------------------------------
    def objects(self) -> dict[str, Any]:
        """IMP vs LP on CenterNet: average recall (IoU 0.5:0.95) at ``object_delta`` and AP (IoU 0.5)."""
        cfg = self.cfg
        det = self.models.load(cfg.object_detector, self.device)
        person = 0
        items: list[Item] = []
        with self.timer("data"):
            if cfg.coco_root:
                from facelab.data.images import load_image
                from facelab.data.scenes import read_coco

                root = Path(cfg.coco_root)
                recs = read_coco(root / "annotations" / "instances_val2017.json", root / "val2017")
                for path, boxes in recs[: cfg.object_images]:
                    im = load_image(path)
                    s = min(1.0, cfg.object_max_side / max(im.shape[-2:]))
                    from facelab.data.crops import downscale
                    im, boxes = downscale(im, boxes, cfg.object_max_side)
                    items.append(Item(self.jitter(im), boxes, [path.name] * len(boxes), f"coco/{path.stem}",
                                      meta={"unit_per_image": True}))
            else:
                from facelab.data.faces import all_faces

                fs = all_faces()
                for p in fs.photos:
                    if len(items) >= cfg.object_images:
                        break
                    im = self.jitter(fs.photo(p.photo_id).image(max_side=cfg.object_max_side))
                    d = det.detect(im[None].to(self.device), score_threshold=cfg.object_delta)[0]
                    keep = (d.classes == person).cpu()
                    if keep.any():
                        items.append(Item(im, d.boxes.cpu()[keep], [f"{p.photo_id}/{k}" for k in range(int(keep.sum()))],
                                          f"objects/{p.photo_id}",
                                          meta={"pseudo_gt": True}))
        self.object_det = det
        classes_only = None if cfg.coco_root else person
        for it in items:
            it.dets["none"] = self._object_dets(det, it.image, classes_only)
        jobs = [(m, it) for m in ("imp", "lp") for it in items]
        for m, it in self._tqdm(jobs, desc="objects", leave=False):
            x = it.image[None].to(self.device)
            reg = [box_regions(it.boxes, tuple(it.image.shape[-2:]))]
            with self.timer("attack"):
                xa = lip_attack(det, x, [it.boxes], m, cfg.eps, cfg.object_steps, cfg.alpha, regions=reg,
                                iou=cfg.iou_assign, stop_delta=cfg.object_delta).cpu()
            it.adv[m] = xa[0]
            it.dets[m] = self._object_dets(det, xa[0], classes_only)
        self.object_items = items
        out = {m: self.object_metrics(items, m) for m in ("none", "imp", "lp")}
        self.results["objects"] = {"images": len(items), "objects": int(sum(len(it.boxes) for it in items)),
                                   **{m: {k: v.as_list() for k, v in r.items()} for m, r in out.items()}}
        return self.results["objects"]

    def _object_dets(self, det, image: Tensor, cls: int | None) -> tuple[Tensor, Tensor]:
        d = det.detect(image[None].to(self.device), score_threshold=0.05)[0]
        keep = torch.ones(len(d), dtype=torch.bool) if cls is None else (d.classes == cls).cpu()
        return d.boxes.cpu()[keep], d.scores.cpu()[keep]

    def _object_table(self, items: Sequence[Item], m: str) -> UnitTable:
        ious = np.arange(0.5, 0.951, 0.05)
        cols: dict[str, dict[str, float]] = {"rec": {}, "n": {}}
        for it in items:
            b, s = it.dets[m]
            keep = s >= self.cfg.object_delta
            for t in ious:
                mm = match_detections(b[keep], s[keep], it.boxes, None, float(t))
                for j in mm.matched_gt[mm.tp]:
                    cols["rec"][it.units[j]] = cols["rec"].get(it.units[j], 0.0) + 1.0
            for u in it.units:
                cols["n"][u] = cols["n"].get(u, 0.0) + len(ious)
        units = tuple(cols["n"])
        return UnitTable(units, {k: np.array([c.get(x, 0.0) for x in units]) for k, c in cols.items()})

    def object_metrics(self, items: Sequence[Item], m: str) -> dict[str, Interval]:
        t = self._object_table(items, m)
        ar = bootstrap({"t": t}, lambda x: x["t"]["rec"] / x["t"]["n"], self.cfg.bootstrap, self.cfg.seed,
                       self.cfg.confidence)
        gt = {"all": {"set": {it.key: {"boxes": _xywh(it.boxes), "keep": None} for it in items}}}
        pred = {"set": {it.key: np.c_[_xywh(it.dets[m][0]), it.dets[m][1].numpy()] for it in items}}
        ap = _ap(pred, gt, ("all",))["all"]
        # AP interval: bootstrap over images (AP is recomputed on each resample of the images)
        rng = np.random.default_rng(self.cfg.seed)
        vals = []
        keys = [it.key for it in items]
        for _ in range(min(self.cfg.bootstrap, 200) if self.cfg.bootstrap and keys else 0):
            pick = rng.integers(0, len(keys), len(keys))
            g2 = {"all": {"set": {f"{k}#{j}": gt["all"]["set"][keys[k]] for j, k in enumerate(pick)}}}
            p2 = {"set": {f"{k}#{j}": pred["set"][keys[k]] for j, k in enumerate(pick)}}
            vals.append(_ap(p2, g2, ("all",))["all"])
        lo, hi = percentile_interval(np.array(vals), self.cfg.confidence) if vals else (math.nan, math.nan)
        return {"average_recall": ar, "ap": Interval(ap, lo, hi, self.cfg.confidence)}

    # -- card ----------------------------------------------------------------------------------------------
    def data_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, items in self.ipi_items.items():
            out["/".join(map(str, key))] = {"scenes": len(items), "faces": int(sum(len(i.boxes) for i in items)),
                                            "clean_detected": int(sum(i.hits["none"].sum() for i in items)),
                                            "canvas": items[0].meta["canvas"]}
        for name, items in self.table_items.items():
            out[f"table/{name}"] = {"images": len(items), "faces": int(sum(len(i.boxes) for i in items)),
                                    "clean_detected": int(sum(i.hits["none"].sum() for i in items)),
                                    "units": len(dict.fromkeys(u for i in items for u in i.units))}
        if self.object_items:
            out["objects"] = {"images": len(self.object_items),
                              "objects": int(sum(len(i.boxes) for i in self.object_items))}
        return out

    def headline(self) -> dict[str, Any]:
        r = self.results
        out: dict[str, Any] = {"data": self.data_summary()}
        if "ipi" in r:
            out["ipi"] = {f"{x['family']}/n{x['n']}/d{x['distance']:g}": {m: x[m] for m in self.cfg.ipi_methods}
                          for x in r["ipi"]}
            out["gradients"] = r.get("gradients", {})
        if "methods" in r:
            out["methods"] = r["methods"]
        if "objects" in r:
            out["objects"] = r["objects"]
        if "erf" in r:
            out["erf"] = {f"{x['detector']}/{x['scale']:g}": {"erf_radius": round(x["erf_radius"], 2),
                                                             "trf_radius": round(x["trf_radius"], 2),
                                                             "ratio": round(x["ratio"], 4),
                                                             "gaussian_r2": round(x["gaussian_r2"], 3)}
                          for x in r["erf"]}
        return out

    def measured(self) -> dict[str, float]:
        r, out = self.results, {}
        for x in r.get("ipi", []):
            for m in self.cfg.ipi_methods:
                out[f"ipi/{x['family']}/n{x['n']}/d{x['distance']:g}/{m}"] = x[m][0]
        for name, row in r.get("methods", {}).items():
            for m, v in row.items():
                out[f"methods/{name}/{m}/recall"] = v["recall"][0]
                if v["success"] is not None:
                    out[f"methods/{name}/{m}/success"] = v["success"][0]
                for s, ap in v["ap"].items():
                    out[f"methods/{name}/{m}/ap_{s}"] = ap / 100
        for m in ("none", "imp", "lp"):
            if m in r.get("objects", {}):
                out[f"objects/{m}/average_recall"] = r["objects"][m]["average_recall"][0]
                out[f"objects/{m}/ap"] = r["objects"][m]["ap"][0]
        for k, v in r.get("gradients", {}).items():
            out[f"gradients/{k}"] = v[0]
        for x in r.get("erf", []):
            out[f"erf/{x['detector']}/{x['scale']:g}/ratio"] = x["ratio"]
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}

    def _ipi_items(self, fam: str, n: int, d: float) -> list[Item]:
        return self.ipi_items.get((fam, n, d), [])

    def claims(self) -> list[Claim]:
        cfg, r = self.cfg, self.results
        out: list[Claim] = []
        if "ipi" in r:
            cases = []
            counts = sorted(cfg.ipi_counts)
            lo_n, hi_n = counts[0], counts[-1]
            mid = cfg.ipi_faces if cfg.ipi_faces in counts and lo_n < cfg.ipi_faces < hi_n else None
            pairs = [(lo_n, mid), (mid, hi_n)] if mid else [(lo_n, hi_n)]
            for a, b in pairs:
                cases.append(Case(f"IMP success {a} − {b} faces at {cfg.ipi_distance:g} px",
                                  self.success_difference((self._ipi_items("count", a, cfg.ipi_distance), "imp"),
                                                          (self._ipi_items("count", b, cfg.ipi_distance), "imp")),
                                  ">", 0.0))
            dists = sorted(cfg.ipi_distances)
            for d in dists[1:]:
                cases.append(Case(f"IMP success {cfg.ipi_faces} faces at {d:g} − {dists[0]:g} px",
                                  self.success_difference((self._ipi_items("distance", cfg.ipi_faces, d), "imp"),
                                                          (self._ipi_items("distance", cfg.ipi_faces, dists[0]), "imp")),
                                  ">", 0.0))
            out.append(Claim("ipi", "Claim 1, IPI: IMP succeeds less often with more faces and with closer faces",
                             "success difference > 0 (fewer faces minus more; farther minus closer)", cases,
                             "Paper (HR, synthetic images): 100 % for 1 face, 51.5 / 56 / 63.9 % for 9 faces at "
                             "40 / 160 / 240 px, 18.3 % for 64 faces at 40 px."))
        if "erf" in r:
            cases = [Case(f"{x['detector']} scale {x['scale']:g}: ERF / TRF area", self.erf_ratio_interval(x), "<=", 0.5)
                     for x in r["erf"]]
            g = r.get("gradients", {})
            if "gaussian_r2" in g:
                cases.append(Case(f"{cfg.victim}: R² of one face's loss gradient vs a 2-D Gaussian (1-face scenes)",
                                  Interval(*g["gaussian_r2"], cfg.confidence), ">=", 0.5))
            if "neighbour_share" in g:
                cases.append(Case(f"{cfg.victim}: share of one face's gradient on its neighbours' faces "
                                  f"({cfg.ipi_faces} faces, {cfg.ipi_distance:g} px)",
                                  Interval(*g["neighbour_share"], cfg.confidence), ">=", 0.1))
            out.append(Claim("erf", "Claim 2, explanation: the ERF is a Gaussian-like fraction of the TRF and one "
                             "face's perturbation reaches its neighbours' ERF",
                             "ERF/TRF area ≤ 0.5; Gaussian R² ≥ 0.5; neighbour share ≥ 0.1", cases,
                             f"ERF = pixels ≥ {cfg.erf_threshold:.4f} × peak of the mean |gradient| over "
                             f"{cfg.erf_images} images; TRF = the gradient's support."))
        if "methods" in r:
            sc = self.table_items.get("scenes") or self.table_items.get("wider") or []
            if sc:
                cases = [Case(f"{METHOD_NAMES[m]} − IMP success", self.success_difference((sc, m), (sc, "imp")), ">", 0.0)
                         for m in ("lip_a", "lip_h")]
                cases.append(Case("LIP-H − LP success", self.success_difference((sc, "lip_h"), (sc, "lp")), ">", 0.0))
                where = "WIDER val" if cfg.wider_root else f"{len(sc)} scenes of {cfg.ipi_faces} faces {cfg.ipi_distance:g} px apart"
                out.append(Claim("lip", "Claim 3, LIP: cropping each instance's gradient to its region beats IMP",
                                 "success difference > 0", cases, f"On {where}."))
            cases = []
            for name, items in self.table_items.items():
                for m in ("lp", "lip_a", "lip_h"):
                    cases.append(Case(f"{name}: {METHOD_NAMES[m]} − IMP success",
                                      self.success_difference((items, m), (items, "imp")), ">", 0.0))
            out.append(Claim("datasets", "Claim 4, datasets: LP, LIP-A and LIP-H succeed more often than IMP",
                             "success difference > 0", cases,
                             "Paper (WIDER val, HR): success IMP 50.0/44.1/40.6 %, LP 67.4/61.7/62.1 %, LIP-A "
                             "69.5/64.5/69.5 %, LIP-H 71.3/65.7/65.6 % (Easy/Medium/Hard)."))
        if "objects" in r and self.object_items:
            it = self.object_items
            ar = self._boot({"a": self._object_table(it, "lp"), "b": self._object_table(it, "imp")},
                            lambda t: t["a"]["rec"] / t["a"]["n"] - t["b"]["rec"] / t["b"]["n"])
            out.append(Claim("objects", "Claim 5, object detection: LP lowers average recall more than IMP",
                             "AR(LP) − AR(IMP) < 0", [Case("AR(LP) − AR(IMP)", ar, "<", 0.0)],
                             "Paper: AR 7.9 → 2.2, AP 6.9 → 1.9 (IMP → LP)."))
        return out

    def paper_comparison(self) -> list[dict[str, Any]]:
        cfg, r, rows = self.cfg, self.results, []

        def row(q, paper, iv, note):
            return {"quantity": q, "paper": paper, "ours": None if iv[0] is None else round(100 * iv[0], 1),
                    "interval": [None if v is None else round(100 * v, 1) for v in iv[1:]], "note": note}
        for x in r.get("ipi", []):
            key = (x["n"], int(x["distance"]))
            if key in PAPER["ipi"] and "imp" in x:
                rows.append(row(f"IPI success, {x['n']} faces at {x['distance']:g} px ({x['family']} family) (%)",
                                PAPER["ipi"][key], x["imp"],
                                f"paper: HR, synthetic images; ours: {cfg.victim}, δ={cfg.delta}, "
                                f"{x['clean_detected']} of {x['faces']} faces detected clean, {x['scenes']} scene(s) "
                                f"at scale {cfg.scene_scale}"))
        for name, res in r.get("methods", {}).items():
            for k, m in enumerate(METHODS):
                if name == "wider":
                    for s in ("easy", "medium", "hard"):
                        rows.append(row(f"WIDER {s} success {METHOD_NAMES[m]} (%)", PAPER["wider_success"][s][k],
                                        res[m]["success"], "WIDER val"))
                else:
                    rows.append(row(f"{name}: success {METHOD_NAMES[m]} (%)", PAPER["wider_success"]["easy"][k],
                                    res[m]["success"], f"paper: WIDER val Easy, HR; ours: {name}, {cfg.victim}"))
        if "objects" in r and "imp" in r["objects"]:
            for k, m in enumerate(("imp", "lp")):
                rows.append(row(f"objects: average recall {METHOD_NAMES[m]} (%)", PAPER["objects"]["average recall"][k],
                                r["objects"][m]["average_recall"], f"ours: {cfg.object_detector}, IoU 0.5:0.95 at δ={cfg.object_delta}"))
                rows.append(row(f"objects: AP {METHOD_NAMES[m]} (%)", PAPER["objects"]["average precision"][k],
                                r["objects"][m]["ap"], f"ours: {cfg.object_detector}, AP at IoU 0.5 (WIDER protocol)"))
        return rows

    def differences(self) -> dict[str, str]:
        cfg = self.cfg
        return {
            "model": f"victim {cfg.victim}" + (f" ({cfg.victim_checkpoint})" if cfg.victim_checkpoint else "")
                     + " (paper: HR, Hu & Ramanan's tiny-face detector, not in the zoo); objects: "
                     f"{cfg.object_detector} (paper: an unnamed object detector)",
            "data": ("WIDER FACE val at " + cfg.wider_root if cfg.wider_root else
                     f"synthetic scenes of the bundled face crops (facelab.data.scenes) and the {cfg.max_photos} bundled photos "
                     "with the most faces, "
                     "not WIDER FACE")
                    + ("; objects: COCO val2017" if cfg.coco_root else
                       f"; objects: {cfg.object_images} bundled photos with people, the clean detector's person "
                       "boxes as ground truth (no person annotations are bundled)"),
            "scale": f"scenes at {cfg.scene_scale}× the poster's distances (faces {cfg.face_size * cfg.scene_scale:g} px, "
                     f"{cfg.faces_per_setting} faces per setting), each family on one fixed canvas; I-FGSM ε = "
                     f"{cfg.eps * 255:g}/255, {cfg.steps} steps of {cfg.alpha * 255:g}/255 (the poster gives no budget)",
            "protocol": f"success = faces detected clean at δ = {cfg.delta} and missed after; losses over anchors whose "
                        f"decoded box has IoU ≥ {cfg.iou_assign} with the face; LP / LIP-A / LIP-H as we read them "
                        "(the poster does not define the letters); AP with the WIDER protocol on setting 'all' "
                        "outside WIDER",
        }

    def summary_preamble(self) -> str:
        return (f"Victim {self.cfg.victim} at δ = {self.cfg.delta}; I-FGSM ε = {self.cfg.eps * 255:g}/255, "
                f"{self.cfg.steps} steps. Success counts only faces the clean detector finds.")

    def write_artifacts(self, out: Path) -> None:
        adv = {}
        for key, items in self.ipi_items.items():
            for it in items[:1]:
                adv["/".join(map(str, key))] = {m: a for m, a in it.adv.items()}
        with atomic_write(out / "adversarial.pt", "wb") as f:
            torch.save(adv, f)


def _ap(pred: dict, gt: dict, settings: Sequence[str]) -> dict[str, float]:
    """WIDER AP (:func:`facelab.metrics.widerface.evaluate`) per setting; where the official min-max score
    normalisation is undefined -- no detection at all (AP 0), or every detection with the same score -- every
    detection gets the same normalised score 1, which is what the normalisation would give them."""
    from facelab.metrics.widerface import evaluate

    scores = np.concatenate([np.asarray(p)[:, 4] for ev in pred.values() for p in ev.values() if len(p)] or [np.zeros(0)])
    if not len(scores):
        return {s: 0.0 for s in settings}
    if scores.max() <= scores.min():
        pred = {e: {n: np.c_[np.asarray(p)[:, :4], np.ones(len(p))] for n, p in ev.items()} for e, ev in pred.items()}
        pred.setdefault("__anchor__", {})["__zero__"] = np.array([[0.0, 0.0, 1.0, 1.0, 0.0]])  # sets the range [0, 1]
    return dict(evaluate(pred, gt, settings=settings, missing="empty")["ap"])


def _xywh(b: Tensor) -> np.ndarray:
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).numpy()


def tolerance_floor(card: dict) -> dict[str, float]:
    """One face of the smallest set a number is computed on (the fewest faces detected clean: a success rate moves
    by 1/that when one face flips); 0.02 for ERF ratios and gradient shares."""
    data = card["metrics"].get("data", {})
    faces = [v.get("clean_detected", v.get("faces", v.get("objects", 0))) for v in data.values() if isinstance(v, dict)]
    n = max(min([f for f in faces if f] or [1]), 1)
    return {k: (0.02 if k.startswith(("erf/", "gradients/")) else 1.0 / n) for k in card["measured"]}


def run(cfg: Config, sections: Sequence[str] | None = None, victim: torch.nn.Module | None = None,
        progress: bool = False) -> LipExperiment:
    """Run the chapter without the notebook (tests, scripts, the spread tool) and write the results card."""
    exp = LipExperiment(cfg, victim=victim, progress=progress)
    exp.run_sections(sections)
    exp.write_card()
    return exp
