"""Identity sets for face classification (chapter 3): K people, several views each, a leak-free split.

Built from the bundled faces (:func:`facelab.data.faces.all_faces`: 40 faces of 37 people, 17 photos).
Counts: ``Barack_Obama`` has 3 different photos, ``Albert_Einstein`` 2, every other person (35) exactly one.

How a view is made (:func:`identity_set`):

* A person with several photos: the photos are split first (seeded; ``test_photos`` of them to test,
  at least one left for train), and a view is one of *that side's* photos: the plain aligned crop of each
  photo comes first, further views of that side are seeded augmentations of its photos.
* A person with one photo: every view is a seeded augmentation (:func:`augment_face`) of that photo: a pose
  warp from the landmarks (similarity alignment with jittered rotation/scale/shift, then a small yaw/pitch
  homography), blur, JPEG re-encoding and lighting (brightness, contrast, gamma, a directional gradient).
  Train and test views are different draws (different seeds), never the same view.

What it can show: that a classifier (and an attack on it) runs end to end on K real identities with
aligned 112x112 crops, deterministic per seed; for Obama and Einstein, recognition across different photos.
What it cannot show: generalisation to new photos for the 35 single-photo people -- their test views are
augmentations of the same photo as their training views, so accuracy there measures robustness to the
augmentations, not face recognition; and with 37 people (26 of them young women from stock photos) no
number from it says anything about a population. Use a PubFig/LFW-scale folder
(:class:`facelab.data.pubfig.IdentityFolders`) for real numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from facelab.data.errors import DatasetFormatError
from facelab.data.faces import ARCFACE_TEMPLATE_112, FaceSet, _similarity, align_face, all_faces
from facelab.data.images import image_from_pil, to_uint8

__all__ = ["IdentityView", "IdentitySet", "identity_set", "augment_face", "seeded_generator"]


def seeded_generator(*parts: object) -> torch.Generator:
    """A ``torch.Generator`` seeded from a stable hash of ``parts`` (same parts -> same stream everywhere)."""
    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def augment_face(image: torch.Tensor, landmarks5: np.ndarray, generator: torch.Generator, size: int = 112, *,
                 rotate: float = 10.0, scale: tuple[float, float] = (0.9, 1.1), shift: float = 0.04,
                 yaw: float = 0.25, pitch: float = 0.15, blur_p: float = 0.5, blur_sigma: tuple[float, float] = (0.3, 1.5),
                 jpeg_p: float = 0.5, jpeg_quality: tuple[int, int] = (30, 90), brightness: float = 0.25,
                 contrast: float = 0.25, gamma: float = 0.25, gradient: float = 0.3) -> torch.Tensor:
    """One seeded augmented aligned crop ``[3, size, size]`` of the face with ``landmarks5`` in ``image``.

    Steps, all randomness from ``generator`` in this fixed order: pose warp (the ArcFace template is rotated
    by up to ``rotate`` degrees, scaled by a factor in ``scale`` and shifted by up to ``shift`` x size; the
    face plane is then turned by a yaw/pitch homography of up to ``yaw``/``pitch`` radians), Gaussian blur
    (prob. ``blur_p``), lighting (brightness/contrast factors ``1 +- value``, gamma ``exp(+-gamma)``, a linear
    gradient of up to ``+-gradient`` across a random direction), JPEG re-encoding (prob. ``jpeg_p``).
    """
    g = generator
    ang = math.radians(_u(g, -rotate, rotate))
    sc = _u(g, *scale)
    tx, ty = _u(g, -shift, shift) * size, _u(g, -shift, shift) * size
    c = size / 2.0
    tmpl = ARCFACE_TEMPLATE_112 * (size / 112.0)
    R = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * sc
    dst = (tmpl - c) @ R.T + c + np.array([tx, ty])
    A = np.vstack([_similarity(np.asarray(landmarks5, dtype=np.float64).reshape(5, 2), dst), [0, 0, 1]])
    a, b = _u(g, -yaw, yaw), _u(g, -pitch, pitch)
    f = 1.5 * size  # focal length of the virtual camera: a plane turned by (a, b) about the crop centre
    K = np.array([[f, 0, c], [0, f, c], [0, 0, 1.0]])
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    H = K @ (Ry @ Rx) @ np.linalg.inv(K)
    M = H @ A
    hwc = image.detach().float().cpu().permute(1, 2, 0).contiguous().numpy()
    out = cv2.warpPerspective(hwc, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    if float(torch.rand((), generator=g)) < blur_p:
        s = _u(g, *blur_sigma)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT101)
    else:
        _u(g, 0, 1)  # keep the stream aligned whatever the branch
    x = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).clamp(0, 1)
    x = (x * _u(g, 1 - brightness, 1 + brightness)).clamp(0, 1)
    m = x.mean()
    x = ((x - m) * _u(g, 1 - contrast, 1 + contrast) + m).clamp(0, 1)
    x = x.clamp_min(1e-6) ** math.exp(_u(g, -gamma, gamma))
    th = _u(g, 0, 2 * math.pi)
    amp = _u(g, -gradient, gradient)
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, size), torch.linspace(-0.5, 0.5, size), indexing="ij")
    x = (x * (1 + amp * (math.cos(th) * xx + math.sin(th) * yy))).clamp(0, 1)
    q = int(round(_u(g, *jpeg_quality)))
    if float(torch.rand((), generator=g)) < jpeg_p:
        buf = io.BytesIO()
        Image.fromarray(to_uint8(x)).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        x = image_from_pil(Image.open(buf), exif_transpose=False)
    return x.float().contiguous()


@dataclasses.dataclass
class IdentityView:
    """One view: an aligned crop of a person, where it came from, and whether it was augmented."""

    identity: str
    label: int  # index into IdentitySet.classes
    face_id: str  # the annotated face it was cut from (its photo is face_id's photo)
    image: torch.Tensor  # [3, size, size]
    augmented: bool
    split: str  # "train" or "test"


@dataclasses.dataclass
class IdentitySet:
    """``classes`` (identity names, label order) and the ``train`` / ``test`` views."""

    classes: list[str]
    train: list[IdentityView]
    test: list[IdentityView]
    size: int
    seed: int

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N, 3, S, S], labels [N] int64)`` of ``"train"`` or ``"test"``."""
        views = {"train": self.train, "test": self.test}[split]
        return torch.stack([v.image for v in views]), torch.tensor([v.label for v in views], dtype=torch.int64)

    def photos_per_identity(self) -> dict[str, int]:
        return {c: len({v.face_id for v in self.train + self.test if v.identity == c}) for c in self.classes}

    def __repr__(self) -> str:
        return (f"IdentitySet({len(self.classes)} identities, {len(self.train)} train / {len(self.test)} test views, "
                f"{self.size}px, seed {self.seed})")


def identity_set(k: int | None = None, *, train_views: int = 4, test_views: int = 2, size: int = 112, seed: int = 0,
                 faces: FaceSet | None = None, identities: Sequence[str] | None = None, test_photos: int = 1,
                 min_photos: int = 1, **augment_kwargs) -> IdentitySet:
    """``k`` identities (default all) with ``train_views`` + ``test_views`` aligned views each (see module doc).

    Identities are taken in order of decreasing photo count, then file order (``identities=`` names them
    instead). ``min_photos``: require that many different photos per identity; an identity with fewer raises
    :class:`DatasetFormatError` naming the annotation file and the line of its first face. Deterministic
    for ``seed``; no view (and, for a person with several photos, no photo) is in both train and test.
    """
    fs = faces if faces is not None else all_faces()
    if train_views < 1 or test_views < 1:
        raise ValueError(f"identity_set: train_views and test_views must be >= 1, got {train_views}, {test_views}")
    groups = fs.identities
    n_photos = {name: len({fs.face(f).photo_id for f in ids}) for name, ids in groups.items()}
    if identities is not None:
        unknown = [n for n in identities if n not in groups]
        if unknown:
            raise KeyError(f"identity_set: unknown identities {unknown}; known: {', '.join(groups)}")
        names = list(identities)
    else:
        order = list(groups)
        names = sorted(order, key=lambda n: (-n_photos[n], order.index(n)))
    if k is not None:
        if not 1 <= k <= len(names):
            raise ValueError(f"identity_set: k must be in 1..{len(names)}, got {k}")
        names = names[:k]
    for n in names:
        if n_photos[n] < min_photos:
            file, line = fs.where[groups[n][0]]
            raise DatasetFormatError(file, line, f"identity {n!r} has {n_photos[n]} photo(s), the split needs "
                                                 f"at least {min_photos} (min_photos)")
    train: list[IdentityView] = []
    test: list[IdentityView] = []
    images: dict[str, torch.Tensor] = {}

    def photo_image(fid: str) -> torch.Tensor:
        pid = fs.face(fid).photo_id
        if pid not in images:
            images.clear()  # one photo at a time: the large ones are ~50 MB as float tensors
            images[pid] = fs.photo(pid).image()
        return images[pid]

    for label, name in enumerate(names):
        fids = groups[name]
        by_photo: dict[str, str] = {}
        for f in fids:  # one face per photo (a person appears once in a photo)
            by_photo.setdefault(fs.face(f).photo_id, f)
        sources = list(by_photo.values())
        if len(sources) >= 2:
            perm = torch.randperm(len(sources), generator=seeded_generator(seed, "photos", name)).tolist()
            n_test = min(len(sources) - 1, max(1, test_photos))
            side = {"test": [sources[i] for i in perm[:n_test]], "train": [sources[i] for i in perm[n_test:]]}
        else:
            side = {"train": sources, "test": sources}
        for split, count, out in (("train", train_views, train), ("test", test_views, test)):
            src = side[split]
            for j in range(count):
                fid = src[j % len(src)]
                rec = fs.face(fid)
                plain = len(sources) >= 2 and j < len(src)
                if plain:
                    img = align_face(photo_image(fid), landmarks=rec.landmarks5, size=size)
                else:
                    g = seeded_generator(seed, "view", name, split, j)
                    img = augment_face(photo_image(fid), rec.landmarks5, g, size, **augment_kwargs)
                out.append(IdentityView(name, label, fid, img, not plain, split))
    return IdentitySet(names, train, test, size, seed)
