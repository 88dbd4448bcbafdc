"""Chapter 1 pipelines: universal adversarial patches on face detectors (Yang et al., ECCV 2020).

The notebook ``notebooks/01_universal_patches.ipynb`` fills a :class:`Config` from its papermill
parameters and calls :class:`UniversalPatchesExperiment` section by section:

* :meth:`~UniversalPatchesExperiment.table1` -- baseline and patches with/without Patch-IoU for
  noise, non-face images and face crops (Table 1, Fig. 2 snapshots, §3.2 observations);
* :meth:`~UniversalPatchesExperiment.generality` -- α × location and other detectors (Fig. 5, §3.3);
* :meth:`~UniversalPatchesExperiment.transfer` -- the full source → target matrix incl. OpenCV's Haar
  cascade as a black-box target (Table 2);
* :meth:`~UniversalPatchesExperiment.methods` -- the four sample-set rules (Table 3, Fig. 6) and
  threshold-Fβ curves / AFβ (Fig. 7);
* :meth:`~UniversalPatchesExperiment.partial` -- half and two-thirds of the patch (Appendix A style);
* :meth:`~UniversalPatchesExperiment.write_card` -- ``results.json`` with paper values beside ours.

Default data: the bundled photos (:func:`facelab.data.faces.bundled_faces`) split by photo, one
square crop around every face (other faces inside the crop stay annotated; faces cut by the crop
border are *ignored* in the metrics), tiled ``mosaic``×``mosaic`` into one image per pass (face-api's
SSD resizes every input to 512², so a 5×5 mosaic of 128-px crops costs one forward pass for 25 faces).
``test_views`` (``train_views``) seeded augmented views of every held-out (training) photo
(:meth:`facelab.data.faces.FaceSet.views`: flip, crop, rescale, colour jitter; then a jittered crop
context and position) are added as further *instances* of the same faces -- not independent faces.
Full scale: ``wider_root`` points at the official WIDER FACE layout (train split for training, val for
testing; ``max_images`` caps both, ``max_side`` downscales).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facelab.attacks import UniversalPatchAttack, init_patch, partial_mask, paste_patch, patch_boxes
from facelab.io import Timer, default_device, results_card
from facelab.metrics.detection import area_fbeta, precision_recall_at, threshold_fbeta_curve

__all__ = ["Config", "UniversalPatchesExperiment", "PAPER", "load_detector", "face_crops", "Sample"]

CHAPTER = "01_universal_patches"

#: Paper values, precision/recall (%) on the WIDER FACE validation set, δ = 0.99, column "All"
#: (Easy in brackets where quoted). Table 1 and Table 3 of the document.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "table1": {  # row -> (precision, recall), "All" column
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
    "table2": {  # A -> SLN, "All" column
        "Baseline-SLN": (99.4, 22.5), "Patch-IoU-SLN": (7.3, 1.4), "SSD->SLN": (54.1, 8.6),
        "RetinaNet->SLN": (49.2, 8.5), "Faster R-CNN->SLN": (46.3, 1.2),
    },
    "table3": {  # "All" column
        "Baseline-SLN": (99.4, 22.5), "Patch-Score": (99.0, 6.7), "Patch-Score-Focal": (98.9, 6.1),
        "Patch-Combination": (98.7, 5.4),
    },
}

METHOD_NAMES = {"patch_iou": "Patch-IoU", "patch_score": "Patch-Score", "patch_score_focal": "Patch-Score-Focal",
                "patch_combination": "Patch-Combination"}

#: a test/train item: image [3,H,W], GT boxes [N,4] x1y1x2y2, ignore flags [N] bool
Sample = tuple[Tensor, Tensor, Tensor]


@dataclasses.dataclass
class Config:
    """Parameters of one run (the notebook's papermill parameters map 1:1 onto these)."""

    out_dir: str = "runs/default/01_universal_patches"
    victim: str = "ssd_mobilenetv1"          # zoo name, or "module:callable" (e.g. a trainable SLN)
    victim_checkpoint: str | None = None     # state dict loaded into the victim (trained SLN etc.)
    other_detectors: Sequence[str] = ("tiny_face_detector", "mtcnn")  # gradient detectors (Fig. 5 / Table 2)
    black_box: Sequence[str] = ("haar",)     # transfer-only targets
    wider_root: str | None = None            # WIDER FACE root: full scale (train -> val)
    max_images: int | None = None            # cap on WIDER images per split (None = all)
    max_side: int = 640                      # WIDER images are downscaled to this longest side
    crop: int = 128                          # bundled photos: side of the square crop around each face
    crop_context: float = 2.2                # crop side = crop_context * sqrt(face area)
    test_views: int = 5                      # bundled photos: augmented views of each test photo added to the test set
    train_views: int = 0                     # ... and of each training photo added to the training set
    mosaic: int = 5                          # bundled crops tiled grid×grid per image (0/1: one crop per image)
    device: str = "auto"
    epochs: int = 12                         # paper: 100 epochs over WIDER train
    sweep_epochs: int = 8                    # epochs for the α × location and other-detector sweeps
    batch_size: int = 1
    lr: float = 0.05
    patch_size: int = 128                    # §3.2: 128 (largest SLN anchor)
    alpha: float = 0.5
    location: str = "top"
    iou_threshold: float = 0.5               # Patch-IoU rule = the victim's positive-anchor rule (SLN 0.6, SSD 0.5)
    delta: float = 0.7                       # δ for the victim; see the notebook for the choice
    score_margin_threshold: float = 0.3      # δ − m (paper 0.5 with δ = 0.99)
    detect_threshold: float = 0.05           # detections kept for curves (P/R use δ)
    deltas: dict | None = None               # δ per other detector (default: each detector's own)
    inits: Sequence[str] = ("noise", "coffee", "rocket", "faceA", "faceB", "faceC")
    methods: Sequence[str] = ("patch_iou", "patch_score", "patch_score_focal", "patch_combination")
    scales: Sequence[float] = (0.3, 0.35, 0.4)
    locations: Sequence[str] = ("top", "center", "bottom")
    partial_keep: Sequence[float] = (0.5, 2 / 3)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.score_margin_threshold < 1 or not 0 < self.delta <= 1:
            raise ValueError(f"delta={self.delta}, score_margin_threshold={self.score_margin_threshold}: "
                             "need 0 < δ − m < 1 and 0 < δ <= 1")
        if self.epochs < 0 or self.sweep_epochs < 0:
            raise ValueError("epochs and sweep_epochs must be >= 0")
        if self.test_views < 0 or self.train_views < 0:
            raise ValueError(f"test_views={self.test_views}, train_views={self.train_views}: must be >= 0")


# -- detectors -------------------------------------------------------------------------------

def load_detector(spec: str, device: str = "cpu", checkpoint: str | None = None) -> torch.nn.Module:
    """A detector by zoo name (:data:`facelab.models.MODELS`, incl. ``"haar"``), ``"module:callable"``,
    or a detector trained with ``facelab train-detector``: its ``model.pt``/``last.pt`` as ``checkpoint``
    (``spec`` then names its arch, e.g. ``"sln"``, or ``"trained"``). Any other ``checkpoint`` is a
    state dict (or ``{"model": state_dict}``) loaded into the ``spec`` model. Loads with
    ``weights_only=True``."""
    from facelab import models

    state = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint else None
    if isinstance(state, dict) and "model_config" in state:
        from facelab.models.detection.train import load_trained

        arch = state["model_config"].get("arch")
        if spec not in ("trained", arch):
            raise ValueError(f"{checkpoint}: a trained {arch!r} detector, but victim/detector is {spec!r} "
                             f"(use {arch!r} or 'trained')")
        return load_trained(checkpoint, device).requires_grad_(False)
    if spec in models.MODELS:
        det = models.load(spec, device)
    elif ":" in spec:
        mod, fn = spec.split(":", 1)
        det = getattr(importlib.import_module(mod), fn)()
    else:
        raise KeyError(f"detector {spec!r}: not a zoo model ({', '.join(models.MODELS)}), 'module:callable', "
                       "or an arch name with a facelab train-detector checkpoint")
    if state is not None:
        det.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    return det.eval().requires_grad_(False).to(device)


# -- data --------------------------------------------------------------------------------------

def _crop_resize(image: Tensor, boxes: Tensor, x0: float, y0: float, side: float, out: int,
                 min_visible: float = 0.6) -> Sample:
    """Square crop [x0, x0+side)² (zero padded outside the photo) resized to out×out, boxes moved and
    clipped; faces with less than ``min_visible`` of their area inside are flagged ignored."""
    H, W = image.shape[-2:]
    s = out / side
    theta = torch.tensor([[side / W, 0, (2 * x0 + side) / W - 1], [0, side / H, (2 * y0 + side) / H - 1]],
                         dtype=image.dtype)
    src = image
    if side / out > 1.5:  # antialias: shrink the photo first
        f = out / side
        src = F.interpolate(image[None], scale_factor=f, mode="bilinear", antialias=True, align_corners=False)[0]
    grid = F.affine_grid(theta[None], [1, 3, out, out], align_corners=False)
    crop = F.grid_sample(src[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].clamp(0, 1)
    b = (boxes - torch.tensor([x0, y0, x0, y0])) * s
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = b.clamp(0, out)
    inside = ((c[:, 2] - c[:, 0]).clamp(min=0) * (c[:, 3] - c[:, 1]).clamp(min=0)) / area.clamp(min=1e-6)
    keep = inside > 0.05
    return crop, c[keep], (inside < min_visible)[keep]


def _crops_of(img: Tensor, boxes: Tensor, out: int, context: float, generator: torch.Generator | None = None,
              scale_jitter: float = 0.0, shift_jitter: float = 0.0) -> list[Sample]:
    """One out×out crop per face of one photo, the face centred with a side of ``context``·sqrt(area);
    with ``generator``: context × U(1 ± ``scale_jitter``), centre shifted by U(± ``shift_jitter``)·side."""
    items = []
    for box in boxes:
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        side = context * math.sqrt(w * h)
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        if generator is not None:
            u = torch.rand(3, generator=generator).tolist()
            side *= 1 + scale_jitter * (2 * u[0] - 1)
            cx += shift_jitter * side * (2 * u[1] - 1)
            cy += shift_jitter * side * (2 * u[2] - 1)
        items.append(_crop_resize(img, boxes, cx - side / 2, cy - side / 2, side, out))
    return items


def face_crops(photo_ids: Sequence[str], out: int = 160, context: float = 2.2) -> list[Sample]:
    """One out×out crop per face of the bundled photos ``photo_ids``, the face centred with its side
    ``context``·sqrt(area) of context."""
    from facelab.data.faces import bundled_faces

    fs = bundled_faces()
    items = []
    for pid in photo_ids:
        p = fs.photo(pid)
        items += _crops_of(p.image(), p.boxes, out, context)
    return items


def view_crops(photo_ids: Sequence[str], views_per_photo: int, seed: int, out: int = 160, context: float = 2.2,
               scale_jitter: float = 0.2, shift_jitter: float = 0.1, max_side: int = 640) -> list[Sample]:
    """Face crops of ``views_per_photo`` seeded augmented views of each bundled photo in ``photo_ids``.

    Views come from :meth:`facelab.data.faces.FaceSet.views` (flip, crop keeping every face, rescale,
    colour jitter; photos first downscaled to ``max_side``); each face is then cropped as in
    :func:`face_crops` with a seeded jitter of the context (× U(1 ± ``scale_jitter``): the face's size
    in the crop varies) and of the centre (± ``shift_jitter``·side). Same ``seed`` -> same crops.
    These are new *instances* of the same faces, not new faces.
    """
    from facelab.data.faces import bundled_faces

    if views_per_photo <= 0 or not photo_ids:
        return []
    g = torch.Generator().manual_seed(int(seed) + 7919)
    items = []
    for v in bundled_faces().views(views_per_photo * len(photo_ids), seed, photo_ids=photo_ids, max_side=max_side):
        items += _crops_of(v.image.clamp(0, 1), v.boxes, out, context, g, scale_jitter, shift_jitter)
    return items


def mosaic(items: Sequence[Sample], grid: int = 4, fill_with_repeats: bool = False) -> list[Sample]:
    """Tile equal-size crops into grid×grid mosaics (boxes shifted, ignore flags kept).

    A compute device for the CPU run: face-api's SSD always resizes its input to 512×512, so one pass
    over a 4×4 mosaic of 128-px face crops scores 16 faces for the price of one. Empty tiles are mid-gray,
    or (``fill_with_repeats``, for training) filled by cycling through the crops again.
    """
    if not items:
        return []
    c = items[0][0].shape[-1]
    per = grid * grid
    n_mosaics = math.ceil(len(items) / per)
    out = []
    for m in range(n_mosaics):
        canvas = torch.full((3, grid * c, grid * c), 0.5)
        boxes, ign = [], []
        for t in range(per):
            k = m * per + t
            if k >= len(items):
                if not fill_with_repeats:
                    continue
                k %= len(items)
            im, b, ig = items[k]
            r, q = divmod(t, grid)
            canvas[:, r * c:(r + 1) * c, q * c:(q + 1) * c] = im
            boxes.append(b + torch.tensor([q * c, r * c, q * c, r * c], dtype=b.dtype))
            ign.append(ig)
        out.append((canvas, torch.cat(boxes), torch.cat(ign)))
    return out


def wider_samples(root: str, split: str, max_images: int | None, max_side: int) -> list[Sample]:
    """WIDER FACE items downscaled to ``max_side``; faces flagged invalid are ignored."""
    from facelab.data.wider import WiderFace

    ds = WiderFace(root, split)
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    out = []
    for i in range(n):
        img, boxes, info = ds[i]
        img, boxes = downscale(img, boxes, max_side)
        ign = info["invalid"].bool() | ((boxes[:, 2] - boxes[:, 0]) < 1) | ((boxes[:, 3] - boxes[:, 1]) < 1)
        out.append((img, boxes, ign))
    return out


def downscale(img: Tensor, boxes: Tensor, max_side: int) -> tuple[Tensor, Tensor]:
    """``img`` shrunk (antialiased) so its longest side is at most ``max_side``, boxes scaled alike."""
    s = min(1.0, max_side / max(img.shape[-2:]))
    if s < 1:
        img = F.interpolate(img[None], scale_factor=s, mode="bilinear", antialias=True, align_corners=False)[0]
        boxes = boxes * s
    return img.clamp(0, 1), boxes


def init_images(face_items: Sequence[Sample], size: int = 128) -> dict[str, Tensor]:
    """Patch initialisations: noise; non-face images (scikit-image's coffee cup and rocket, stand-ins for
    the paper's ImageNet parachute/lemon/bottle/banana); three face crops from training faces."""
    import skimage.data

    inits = {"noise": init_patch("noise", size, seed=0)}
    for name in ("coffee", "rocket"):
        arr = getattr(skimage.data, name)()
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255
        h, w = img.shape[-2:]
        m = min(h, w)
        inits[name] = init_patch("image", size, image=img, box=[(w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2])
    faces = [(im, b[k]) for im, b, ign in face_items for k in range(len(b)) if not ign[k]]
    faces.sort(key=lambda t: -float((t[1][2] - t[1][0]) * (t[1][3] - t[1][1])))
    for letter, (im, b) in zip("ABC", faces[:3]):
        inits[f"face{letter}"] = init_patch("image", size, image=im, box=b.tolist())
    return inits


# -- the experiment ----------------------------------------------------------------------------

class UniversalPatchesExperiment:
    """Holds data, detectors, clean-detection cache and trained patches of one run."""

    def __init__(self, cfg: Config, victim: torch.nn.Module | None = None, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.device = default_device(None if cfg.device == "auto" else cfg.device)
        self.timer = Timer()
        torch.manual_seed(cfg.seed)
        with self.timer("data"):
            if cfg.wider_root:
                self.train = wider_samples(cfg.wider_root, "train", cfg.max_images, cfg.max_side)
                self.test = wider_samples(cfg.wider_root, "val", cfg.max_images, cfg.max_side)
            else:
                from facelab.data.faces import bundled_faces

                split = bundled_faces().split()
                self.split = split
                self.train = face_crops(split.train_photos, cfg.crop, cfg.crop_context)
                self.test = face_crops(split.test_photos, cfg.crop, cfg.crop_context)
                self.face_items = self.train  # face inits come from the unaugmented training crops
                self.test_originals = list(self.test)  # the held-out photos' own crops (no views)
                self.train += view_crops(split.train_photos, cfg.train_views, cfg.seed + 2, cfg.crop, cfg.crop_context)
                self.test += view_crops(split.test_photos, cfg.test_views, cfg.seed + 1, cfg.crop, cfg.crop_context)
                self.n_test_crops, self.n_train_crops = len(self.test), len(self.train)
                if cfg.mosaic > 1:
                    self.train = mosaic(self.train, cfg.mosaic, fill_with_repeats=True)
                    self.test = mosaic(self.test, cfg.mosaic)
        self.train_xy = [(im, b) for im, b, _ in self.train]
        self.detectors: dict[str, torch.nn.Module] = {}
        self.load_errors: dict[str, str] = {}
        with self.timer("models"):
            self.detectors[cfg.victim] = victim if victim is not None else load_detector(
                cfg.victim, self.device, cfg.victim_checkpoint)
            for name in list(cfg.other_detectors) + list(cfg.black_box):
                try:
                    self.detectors[name] = load_detector(name, self.device)
                except Exception as e:  # a detector that has not landed / cannot load is reported, not fatal
                    self.load_errors[name] = f"{type(e).__name__}: {e}"
        self.inits = init_images(getattr(self, "face_items", self.train), cfg.patch_size)
        self.patches: dict[tuple, Tensor] = {}
        self.snapshots: dict[tuple, dict[int, Tensor]] = {}
        self.train_time: dict[tuple, float] = {}
        self._clean: dict[str, dict] = {}
        self.results: dict[str, Any] = {}

    # -- basic operations ----------------------------------------------------------------------
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
        det = self.detectors[detector]
        thr = cfg.score_margin_threshold if detector == cfg.victim else self.delta_for(detector) * 0.6
        atk = UniversalPatchAttack(det, method, alpha=alpha, location=location, score_threshold=thr,
                                   iou_threshold=cfg.iou_threshold,
                                   size=cfg.patch_size, init=self.inits[init], lr=cfg.lr, seed=cfg.seed,
                                   device=self.device)
        mid = max(1, epochs // 2)
        t0 = time.perf_counter()
        with self.timer("train"):
            snaps = atk.fit(self.train_xy, epochs=epochs, batch_size=cfg.batch_size,
                            snapshots=(0, mid, epochs), progress=self.progress)
        self.train_time[key] = time.perf_counter() - t0
        self.patches[key] = atk.patch.detach().cpu()
        self.snapshots[key] = snaps
        return self.patches[key]

    def _detect(self, name: str, images: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        det = self.detectors[name]
        out = []
        with torch.no_grad():
            for im in images:
                d = det.detect([im.to(self.device)], score_threshold=self.cfg.detect_threshold
                               if name != "haar" else None)[0]
                out.append((d.boxes.cpu(), d.scores.cpu()))
        return out

    def data_summary(self) -> dict:
        """Sizes of the two sides: images passed to the detector, counted (not ignored) face instances,
        and for the bundled photos the photos, distinct faces, crops and views behind them."""
        def count(items):
            return {"images": len(items), "face_instances": sum(int((~i).sum()) for _, _, i in items)}

        out: dict[str, Any] = {"train": count(self.train), "test": count(self.test)}
        split = getattr(self, "split", None)
        if split is not None:
            out["train"].update(photos=list(split.train_photos), distinct_faces=len(split.train_faces),
                                crops=self.n_train_crops, views_per_photo=self.cfg.train_views)
            out["test"].update(photos=list(split.test_photos), distinct_faces=len(split.test_faces),
                               crops=self.n_test_crops, views_per_photo=self.cfg.test_views)
        return out

    def showcase(self) -> Sample:
        """One test image for figures: the held-out photos' own face crops tiled as in evaluation, cut to
        the occupied tile rows (bundled photos), else the first test image."""
        items = getattr(self, "test_originals", None)
        if not items:
            return self.test[0]
        grid = self.cfg.mosaic if self.cfg.mosaic > 1 else 1
        if grid == 1:
            return items[0]
        im, b, ign = mosaic(items[: grid * grid], grid)[0]
        h = math.ceil(min(len(items), grid * grid) / grid) * items[0][0].shape[-1]
        return im[:, :h].contiguous(), b, ign

    def clean_scores(self, name: str | None = None, split: str = "test", iou: float = 0.5) -> dict:
        """Where the clean scores of detector ``name`` lie on the ``split`` ("train" or "test") side: the
        detections (score ≥ ``detect_threshold``) matching a face box (IoU ≥ ``iou``, ignored faces
        included) vs the rest (background), and P/R at δ. ``separates``: max background < δ ≤ min face."""
        from torchvision.ops import box_iou

        name = name or self.cfg.victim
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        items = self.test if split == "test" else self.train
        if split == "test":
            dets = self.clean(name)["dets"]
        else:
            with self.timer("evaluate"):
                dets = self._detect(name, [im for im, _, _ in items])
        face_s: list[float] = []
        bg_s: list[float] = []
        for (b, sc), (_, g, _) in zip(dets, items):
            if not len(b):
                continue
            m = box_iou(b.float(), g.float()).max(1).values if len(g) else torch.zeros(len(b))
            face_s += sc[m >= iou].tolist()
            bg_s += sc[m < iou].tolist()
        delta = self.delta_for(name)
        pr = precision_recall_at(dets, [g for _, g, _ in items], delta, [i for _, _, i in items])
        min_face = min(face_s, default=float("nan"))
        max_bg = max(bg_s, default=float("nan"))
        return {"split": split, "detector": name, "delta": delta, "n_face": len(face_s), "min_face": min_face,
                "n_background": len(bg_s), "max_background": max_bg,
                "separates": bool((not bg_s or max_bg < delta) and face_s and delta <= min_face),
                "precision": pr["precision"], "recall": pr["recall"], "tp": pr["tp"], "fp": pr["fp"],
                "n_faces": pr["n_faces"]}

    def clean(self, name: str) -> dict:
        """Clean detections of detector ``name`` on the test set (cached) and P/R at its δ."""
        if name not in self._clean:
            with self.timer("evaluate"):
                dets = self._detect(name, [im for im, _, _ in self.test])
            self._clean[name] = self._score(name, dets, None)
        return self._clean[name]

    def _score(self, name: str, dets, pboxes) -> dict:
        gts = [b for _, b, _ in self.test]
        ign = [i for _, _, i in self.test]
        delta = self.delta_for(name)
        pr = precision_recall_at(dets, gts, delta, ign)
        out = {"precision": pr["precision"], "recall": pr["recall"], "tp": pr["tp"], "fp": pr["fp"],
               "n_faces": pr["n_faces"], "delta": delta, "dets": dets}
        if pboxes is not None:
            out["patch_as_face"] = patch_as_face_rate(dets, pboxes, delta)
        return out

    def evaluate(self, patch: Tensor | None, name: str | None = None, alpha: float | None = None,
                 location: str | None = None, mask: Tensor | None = None) -> dict:
        """P/R at δ of detector ``name`` on the test set with ``patch`` pasted on every face (None =
        clean), plus the patch-as-face rate: share of pasted patches found as a face (IoU ≥ 0.5, score ≥ δ)."""
        name = name or self.cfg.victim
        if patch is None:
            return self.clean(name)
        alpha = self.cfg.alpha if alpha is None else alpha
        location = location or self.cfg.location
        with self.timer("evaluate"):
            imgs = [paste_patch(im, patch, b, alpha, location, mask=mask) for im, b, _ in self.test]
            pboxes = [patch_boxes(b, alpha, location) for _, b, _ in self.test]
            dets = self._detect(name, imgs)
        return self._score(name, dets, pboxes)

    # -- sections ------------------------------------------------------------------------------
    def table1(self) -> list[dict]:
        """Baseline, every init without and with Patch-IoU (Table 1)."""
        rows = [_row("Baseline", None, self.clean(self.cfg.victim))]
        for init in self.cfg.inits:
            if init not in self.inits:
                continue
            rows.append(_row(f"{init} w/o Patch-IoU", init, self.evaluate(self.inits[init])))
        for init in self.cfg.inits:
            if init not in self.inits:
                continue
            p = self.train_patch(init=init)
            rows.append(_row(f"{init} w/ Patch-IoU", init, self.evaluate(p)))
        self.results["table1"] = rows
        return rows

    def methods(self) -> list[dict]:
        """The four sample-set rules from noise (Table 3) and their threshold-Fβ curves (Fig. 7)."""
        rows = [_row("Baseline", None, self.clean(self.cfg.victim))]
        curves = {}
        for m in self.cfg.methods:
            ev = self.evaluate(self.train_patch(method=m))
            rows.append(_row(METHOD_NAMES[m], m, ev))
        for r in rows:
            curve = self.fbeta_curve(r["eval"]["dets"])
            curves[r["name"]] = curve
            r["afbeta"] = area_fbeta(curve=curve)
        self.results["table3"], self.results["fbeta_curves"] = rows, curves
        return rows

    def fbeta_curve(self, dets) -> dict:
        th = np.linspace(self.cfg.detect_threshold, 1.0, 200)
        return threshold_fbeta_curve(dets, [b for _, b, _ in self.test], thresholds=th,
                                     ignores=[i for _, _, i in self.test])

    def generality(self) -> list[dict]:
        """Patch-IoU at α × location on the victim (Fig. 5) and on the other gradient detectors."""
        rows = []
        for a in self.cfg.scales:
            for loc in self.cfg.locations:
                p = self.train_patch(alpha=a, location=loc, epochs=self.cfg.sweep_epochs)
                rows.append({"detector": self.cfg.victim, "alpha": a, "location": loc, "patch": p,
                             "clean": self.clean(self.cfg.victim),
                             "eval": self.evaluate(p, alpha=a, location=loc)})
        for name in self.gradient_detectors():
            if name == self.cfg.victim:
                continue
            p = self.train_patch(detector=name, epochs=self.cfg.sweep_epochs)
            rows.append({"detector": name, "alpha": self.cfg.alpha, "location": self.cfg.location, "patch": p,
                         "clean": self.clean(name), "eval": self.evaluate(p, name)})
        self.results["generality"] = rows
        return rows

    def transfer(self) -> dict:
        """Recall/precision matrix: Patch-IoU noise patches trained on each gradient detector (rows),
        pasted on the test faces and detected by every detector incl. black-box ones (columns)."""
        sources = self.gradient_detectors()
        targets = list(self.detectors)
        mat: dict[str, dict[str, dict]] = {}
        for s in sources:
            ep = self.cfg.epochs if s == self.cfg.victim else self.cfg.sweep_epochs
            p = self.train_patch(detector=s, epochs=ep)
            mat[s] = {t: _short(self.evaluate(p, t)) for t in targets}
        noise = self.inits["noise"]
        mat["noise (unoptimised)"] = {t: _short(self.evaluate(noise, t)) for t in targets}
        mat["clean"] = {t: _short(self.clean(t)) for t in targets}
        self.results["transfer"] = mat
        return mat

    def partial(self) -> list[dict]:
        """The noise Patch-IoU patch with only its top half / two thirds pasted (Appendix-A style)."""
        p = self.train_patch()
        rows = [{"keep": 1.0, **_short(self.evaluate(p))}]
        for k in self.cfg.partial_keep:
            rows.append({"keep": float(k), **_short(self.evaluate(p, mask=partial_mask(self.cfg.patch_size, k)))})
        self.results["partial"] = rows
        return rows

    # -- card ------------------------------------------------------------------------------------
    def headline(self) -> dict:
        """Rounded key numbers of the run (what the notebook's checked cells print); NaN -> None."""
        return _finite(self._headline())

    def _headline(self) -> dict:
        r = self.results
        out: dict[str, Any] = {}
        if "table1" in r:
            out["table1"] = {x["name"]: [round(x["precision"], 3), round(x["recall"], 3),
                                         round(x.get("patch_as_face", float("nan")), 3)] for x in r["table1"]}
        if "table3" in r:
            out["table3"] = {x["name"]: [round(x["precision"], 3), round(x["recall"], 3),
                                         round(x.get("patch_as_face", float("nan")), 3)] for x in r["table3"]}
            out["afbeta"] = {x["name"]: {str(b): round(v, 3) for b, v in x["afbeta"].items()} for x in r["table3"]}
        if "transfer" in r:
            out["transfer_recall"] = {s: {t: round(v["recall"], 3) for t, v in row.items()}
                                      for s, row in r["transfer"].items()}
        if "partial" in r:
            out["partial_recall"] = {str(round(x["keep"], 3)): round(x["recall"], 3) for x in r["partial"]}
        if "generality" in r:
            out["generality_recall"] = {f"{x['detector']}/{x['alpha']}/{x['location']}":
                                        [round(x["clean"]["recall"], 3), round(x["eval"]["recall"], 3),
                                         round(x["eval"].get("patch_as_face", float("nan")), 3)]
                                        for x in r["generality"]}
        return out

    def paper_comparison(self) -> list[dict]:
        """One row per quantity with scalar ``paper`` and ``ours`` (%), precision and recall apart."""
        d = self.data_summary()["test"]
        data = (f"{d['face_instances']} face instances in {d['images']} test images"
                + (f" ({d['distinct_faces']} distinct faces of {len(d['photos'])} held-out photos, "
                   f"{d['views_per_photo']} augmented views each)" if "photos" in d else ""))
        note = (f"paper: WIDER FACE val 'All', SLN, δ=0.99; ours: {self.cfg.victim}, δ={self.cfg.delta}, {data}")
        rows = []
        for table, results, key_of in (("Table 1", self.results.get("table1", []), _paper_key),
                                       ("Table 3", self.results.get("table3", []),
                                        lambda n: "Baseline-SLN" if n == "Baseline" else n)):
            paper = PAPER["table1" if table == "Table 1" else "table3"]
            for x in results:
                key = key_of(x["name"])
                if key not in paper:
                    continue
                for j, what in enumerate(("precision", "recall")):
                    rows.append({"quantity": f"{table} {x['name']} {what} (%)", "paper": float(paper[key][j]),
                                 "ours": round(100 * float(x[what]), 1), "note": f"{key}; {note}"})
        return rows

    def summary_markdown(self) -> str:
        """Markdown summary of the run: every number is computed from :attr:`results`, every verdict
        ("replicated", "partly replicated", "not replicated") is decided by the criteria it states."""
        return summary_markdown(self)

    def write_card(self, parameters: dict) -> Path:
        """``results.json`` in ``cfg.out_dir`` (also the trained patches as ``patches.pt``)."""
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics = self.headline()
        metrics["data"] = self.data_summary()
        metrics["train_seconds"] = {"/".join(map(str, k)): round(v, 2) for k, v in self.train_time.items()}
        if self.load_errors:
            metrics["detectors_not_loaded"] = self.load_errors
        tmp = out / ".patches.pt.tmp"
        torch.save({"/".join(map(str, k)): v for k, v in self.patches.items()}, tmp)
        tmp.replace(out / "patches.pt")
        return results_card(out, chapter=CHAPTER, parameters=parameters, seed=self.cfg.seed,
                            timings={k: round(v, 2) for k, v in self.timer.timings.items()}, metrics=metrics,
                            extra={"paper_comparison": self.paper_comparison()})


def _finite(x: Any) -> Any:
    """NaN/inf -> None, recursively (the card is strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def patch_as_face_rate(dets, pboxes, delta: float, iou: float = 0.5) -> float:
    """Share of pasted patches that some detection with score ≥ δ covers with IoU ≥ ``iou``."""
    from torchvision.ops import box_iou

    hit = total = 0
    for (boxes, scores), pb in zip(dets, pboxes):
        total += len(pb)
        b = boxes[scores >= delta]
        if len(b) and len(pb):
            hit += int((box_iou(pb.float(), b.float()).max(dim=1).values >= iou).sum())
    return hit / total if total else float("nan")


def _short(ev: dict) -> dict:
    return {k: ev[k] for k in ("precision", "recall", "tp", "fp", "n_faces", "patch_as_face") if k in ev}


def _row(name: str, key: Any, ev: dict) -> dict:
    return {"name": name, "key": key, "eval": ev, **_short(ev)}


def _paper_key(name: str) -> str:
    if name == "Baseline":
        return "Baseline-SLN"
    init, _, rest = name.partition(" ")
    return f"{init[0].upper() + init[1:]} {rest}"


def run(cfg: Config, sections: Sequence[str] = ("table1", "methods", "generality", "transfer", "partial"),
        victim: torch.nn.Module | None = None, progress: bool = False) -> UniversalPatchesExperiment:
    """Run the chapter end to end without the notebook (tests, scripts) and write the results card."""
    exp = UniversalPatchesExperiment(cfg, victim=victim, progress=progress)
    for s in sections:
        getattr(exp, s)()
    exp.write_card(dataclasses.asdict(cfg))
    return exp


# -- the run's summary, decided by code --------------------------------------------------------

#: Criteria of :func:`summary_markdown` (stated in its output). Recall ratios are patched / clean.
CRITERIA = {
    "collapse": 0.25,         # recall ≤ 25 % of clean: the patch makes faces (nearly) vanish
    "suppress": 0.5,          # recall ≤ 50 % of clean: the patch suppresses faces (Criterion 1)
    "face_like": 0.5,         # patch-as-face rate ≥ 0.5: the patch itself is detected as a face
    "no_false_positive": 0.1,  # patch-as-face rate ≤ 0.1: Criterion 2 holds
    "transfer_margin": 0.1,   # transfer: recall ≥ 0.1 (absolute) below the unoptimised-noise control
}


def _verdict(k: int, n: int) -> str:
    if n == 0:
        return "not measured"
    return "**replicated**" if k == n else ("**partly replicated**" if k else "**not replicated**")


def _pct(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _span(xs: Sequence[float]) -> str:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return "–"
    lo, hi = min(xs), max(xs)
    return _pct(lo) if lo == hi else f"{100 * lo:.1f}–{100 * hi:.1f} %"


def summary_markdown(exp: UniversalPatchesExperiment) -> str:
    """The closing summary of a run as markdown (see :meth:`UniversalPatchesExperiment.summary_markdown`)."""
    cfg, r, C = exp.cfg, exp.results, CRITERIA
    d = exp.data_summary()["test"]
    clean = exp.clean(cfg.victim)
    base = clean["recall"]
    out: list[str] = []
    inst = f"{d['face_instances']} counted face instances"
    if "distinct_faces" in d:
        inst += (f" = {d['distinct_faces']} distinct held-out faces seen in the original photos and in "
                 f"{d['views_per_photo']} augmented views of each photo; views of one face are **not independent** "
                 f"faces, so the effective sample is closer to {d['distinct_faces']} faces than to "
                 f"{d['face_instances']}")
    out += [f"Test side: {inst}; one instance = {100 / max(d['face_instances'], 1):.1f} points of recall. "
            f"Victim {cfg.victim} at δ = {cfg.delta}: clean precision {_pct(clean['precision'])}, "
            f"recall {_pct(base)}.", "",
            "Criteria (ratios are patched recall / clean recall): *collapse* ≤ "
            f"{C['collapse']}, *suppress* ≤ {C['suppress']}; a patch is *face-like* if it is detected as a face "
            f"(IoU ≥ 0.5, score ≥ δ) on ≥ {C['face_like']:.0%} of the faces it is pasted on, and creates *no false "
            f"positive* if that rate is ≤ {C['no_false_positive']:.0%}; a patch *transfers* to a detector if it "
            f"lowers that detector's recall by ≥ {C['transfer_margin']} more than the unoptimised noise patch does. "
            "A claim is replicated when every case meets its criterion, partly when some do.", ""]

    def ratio(x: float, ref: float) -> float:
        return x / ref if ref > 0 else float("nan")

    t1 = {x["name"]: x for x in r.get("table1", [])}
    P1 = {k: (p / 100, q / 100) for k, (p, q) in PAPER["table1"].items()}  # paper values as fractions
    pb = P1["Baseline-SLN"][1]
    pwo = [v[1] for k, v in P1.items() if k.endswith("w/o Patch-IoU")]
    pw = [v[1] for k, v in P1.items() if k.endswith("w/ Patch-IoU")]
    inits = [i for i in cfg.inits if f"{i} w/ Patch-IoU" in t1]
    if inits:
        opt = [t1[f"{i} w/ Patch-IoU"]["recall"] for i in inits]
        unopt = [t1[f"{i} w/o Patch-IoU"]["recall"] for i in inits]
        k = sum(ratio(o, base) <= C["collapse"] < ratio(u, base) for o, u in zip(opt, unopt))
        out.append(f"* **§3.2 obs. 1, optimised vs unoptimised** — {_verdict(k, len(inits))} ({k} of {len(inits)} "
                   f"initialisations: the Patch-IoU patch collapses recall, the same image unoptimised does not). "
                   f"Recall unoptimised {_span(unopt)}, after Patch-IoU {_span(opt)} (clean {_pct(base)}; paper "
                   f"'All': {_pct(pb)} → {_span(pwo)} unoptimised, {_span(pw)} optimised).")
        paf = [t1[f"{i} w/ Patch-IoU"]["patch_as_face"] for i in inits]
        like = [i for i, v in zip(inits, paf) if v >= C["face_like"]]
        out.append(f"* **§3.2 obs. 2, the Patch-IoU patch is detected as a face** — {_verdict(len(like), len(inits))} "
                   f"({len(like)} of {len(inits)} initialisations face-like"
                   + (f": {', '.join(like)}" if like else "") + f"; patch-as-face rates {_span(paf)}, precision "
                   f"{_span([t1[f'{i} w/ Patch-IoU']['precision'] for i in inits])}; paper: precision "
                   f"{_span([v[0] for k, v in P1.items() if k.endswith('w/ Patch-IoU')])}). "
                   f"Training here is {cfg.epochs} epochs over {len(exp.train)} training image(s) "
                   f"(paper: 100 epochs over WIDER FACE train).")
        faces = [i for i in inits if i.startswith("face")]
        others = [i for i in inits if not i.startswith("face")]
        if faces:
            fr = [t1[f"{i} w/o Patch-IoU"]["recall"] for i in faces]
            fp_ = [t1[f"{i} w/o Patch-IoU"]["precision"] for i in faces]
            op_ = [t1[f"{i} w/o Patch-IoU"]["precision"] for i in others]
            kr = sum(ratio(x, base) > C["collapse"] for x in fr)
            prec_more = bool(others) and float(np.mean(fp_)) < float(np.mean(op_))
            out.append(f"* **§3.2 obs. 3, a pasted real face does not hide the face** — "
                       f"{_verdict(kr, len(faces))} ({kr} of {len(faces)} face crops leave recall above the collapse "
                       f"level: {_span(fr)}). The paper's side remark that a face photo 'affects precision more' "
                       f"is {'seen' if prec_more else 'not seen'} here (mean precision {_pct(float(np.mean(fp_)))} "
                       f"with face crops vs {_pct(float(np.mean(op_))) if others else '–'} with the other "
                       f"unoptimised patches).")
    gen = r.get("generality", [])
    vg = [g for g in gen if g["detector"] == cfg.victim]
    og = [g for g in gen if g["detector"] != cfg.victim]
    if gen:
        sup = [g for g in vg if ratio(g["eval"]["recall"], g["clean"]["recall"]) <= C["suppress"]]
        osup = [g for g in og if ratio(g["eval"]["recall"], g["clean"]["recall"]) <= C["suppress"]]
        flike = [g for g in gen if g["eval"]["patch_as_face"] >= C["face_like"]]
        out.append(f"* **§3.3 generality (Fig. 5)** — scales × locations on {cfg.victim}: "
                   f"{_verdict(len(sup), len(vg))} ({len(sup)} of {len(vg)} settings suppress, "
                   + (", ".join(f"α={g['alpha']} {g['location']}" for g in sup) or "none")
                   + f"; {cfg.sweep_epochs} epochs each); other detectors: {_verdict(len(osup), len(og))} ("
                   + ", ".join(f"{g['detector']} {_pct(g['clean']['recall'])} → {_pct(g['eval']['recall'])}" for g in og)
                   + f"). Face-like patches in the sweep: {len(flike)} of {len(gen)} (the paper finds all face-like).")
    mat = r.get("transfer")
    if mat:
        noise = mat["noise (unoptimised)"]
        pairs = [(s_, t) for s_ in mat if s_ in exp.detectors for t in mat[s_] if t != s_]
        ok = [(s_, t) for s_, t in pairs if mat[s_][t]["recall"] <= noise[t]["recall"] - C["transfer_margin"]]
        out.append(f"* **Table 2, transfer** — {_verdict(len(ok), len(pairs))} ({len(ok)} of {len(pairs)} "
                   "source → target pairs beat the unoptimised-noise control"
                   + (": " + ", ".join(f"{s_} → {t} {_pct(mat['clean'][t]['recall'])} → {_pct(mat[s_][t]['recall'])}"
                                       for s_, t in ok) if ok else "")
                   + "; paper, recall on SLN: " + ", ".join(f"{k} {v[1]:.1f} %" for k, v in PAPER["table2"].items()
                                                             if "->" in k or k.startswith("Baseline")) + ").")
    t3 = [x for x in r.get("table3", []) if x["key"] is not None]
    if t3:
        improved = [x for x in t3 if x["key"] != "patch_iou"]
        good = [x for x in improved if ratio(x["recall"], base) <= C["suppress"]
                and x["patch_as_face"] <= C["no_false_positive"]]
        best = min(x["recall"] for x in t3)
        tied = [x["name"] for x in t3 if x["recall"] == best]
        p3 = {k: v for k, v in PAPER["table3"].items() if k != "Baseline-SLN"}
        pbest = min(p3, key=lambda k: p3[k][1])
        out.append(f"* **Table 3, Criteria 1 and 2 for the improved methods** — {_verdict(len(good), len(improved))} "
                   f"({len(good)} of {len(improved)} suppress faces without a false positive on the patch: "
                   + ", ".join(f"{x['name']} R {_pct(x['recall'])}, patch-as-face {_pct(x['patch_as_face'])}"
                               for x in improved)
                   + f"). Lowest recall: {', '.join(tied)} (paper: {pbest}, {p3[pbest][1]:.1f} %); "
                   f"Patch-IoU's patch-as-face rate {_pct(next((x['patch_as_face'] for x in t3 if x['key'] == 'patch_iou'), float('nan')))}.")
        ps = {x["key"]: exp.patches.get((cfg.victim, x["key"], "noise", round(cfg.alpha, 4), cfg.location, cfg.epochs))
              for x in t3}
        if ps.get("patch_score") is not None and ps.get("patch_combination") is not None:
            same = torch.equal(ps["patch_score"], ps["patch_combination"])
            out.append(f"  Patch-Combination's trained patch is {'**identical** to' if same else 'different from'} "
                       "Patch-Score's" + (" (λ1/λ2 excluded no anchor above δ − m during training)." if same else "."))
    part = r.get("partial")
    if part:
        full = part[0]["recall"]
        out.append("* **Part of the patch (Appendix-A style, no paper numbers)** — recall with the full patch "
                   f"{_pct(full)}; " + ", ".join(f"top {x['keep']:.2f} of it {_pct(x['recall'])}" for x in part[1:])
                   + f" (clean {_pct(base)}).")
    out += ["", f"**Deviations from the paper (this run's parameters):** victim {cfg.victim}"
            + (f" (checkpoint {cfg.victim_checkpoint})" if cfg.victim_checkpoint else "")
            + f"; δ = {cfg.delta}, δ − m = {cfg.score_margin_threshold} (paper 0.99 / 0.5); Patch-IoU's IoU rule "
            f"> {cfg.iou_threshold} (paper 0.6); {cfg.epochs} epochs (sweeps {cfg.sweep_epochs}) of Adam, lr {cfg.lr}, "
            f"batch {cfg.batch_size} (paper 100 epochs); "
            + (f"WIDER FACE at {cfg.wider_root}" if cfg.wider_root else
               f"the bundled photos split by photo, {cfg.crop}-px face crops tiled {cfg.mosaic}×{cfg.mosaic}, "
               f"{cfg.test_views} (train {cfg.train_views}) augmented views per photo")
            + "; Eq. 2's S^γ used as a weight; P/R/AFβ on probability scores."]
    return "\n".join(out)
