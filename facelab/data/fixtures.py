"""Paper-format data folders written from the bundled faces, so the full-scale loaders run anywhere (CI).

Each writer makes a tiny copy of an official layout from :func:`facelab.data.faces.all_faces` (40 faces,
37 identities, 17 photos), read back by the same loader as the real data set:

* :func:`write_celeba` -- ``img_align_celeba/`` (178x218, aligned by the 5 landmarks onto CelebA-like eye,
  nose and mouth positions), ``list_attr_celeba.txt`` (40 columns, +1/-1), ``list_eval_partition.txt``
  (identity-disjoint 0/1/2) -> :class:`facelab.data.celeba.CelebA`. CelebA's format has no "unknown": a label
  that is unsure (``null``) or not annotated is written as -1, and :func:`celeba_label_mask` says which.
* :func:`write_pubfig` -- ``<root>/<Person Name>/<n>.jpg`` identity folders of :func:`identity_set` views
  -> :class:`facelab.data.pubfig.IdentityFolders`.
* :func:`write_lfw` -- ``<root>/<Name>/<Name>_<NNNN>.jpg`` (250x250, LFW-like framing) and ``pairs.txt``
  (``<folds> <n>``, per fold n matched then n mismatched pairs) -> :class:`facelab.data.lfw.LFWPairs`.
  Genuine pairs use two different photos wherever the person has them (Obama, Einstein); for the others
  the person's further images are seeded augmentations, so their genuine pairs are photo-vs-augmentation.
* :func:`facelab.data.scenes.write_coco` -- synthetic multi-face scenes as a COCO detection json.

Numbers measured on these folders test code paths, not the papers' claims.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch

from facelab.data.celeba import CELEBA_ATTRIBUTES
from facelab.data.faces import ARCFACE_TEMPLATE_112, FaceSet, _similarity, all_faces
from facelab.data.identities import augment_face, identity_set, seeded_generator
from facelab.data.images import save_image
from facelab.io import atomic_write

__all__ = ["CELEBA_TEMPLATE_178x218", "write_celeba", "celeba_label_mask", "write_pubfig", "write_lfw",
           "lfw_name"]

#: Approximate mean positions of the 5 landmarks in CelebA's aligned 178x218 images (left eye, right eye,
#: nose, left and right mouth corner), read off list_landmarks_align_celeba.txt's typical rows.
CELEBA_TEMPLATE_178x218 = np.array([[69.0, 111.0], [108.0, 111.0], [88.5, 135.0], [72.0, 153.0], [106.0, 153.0]])


def _warp(image: torch.Tensor, M: np.ndarray, w: int, h: int, border: int = cv2.BORDER_REFLECT101) -> torch.Tensor:
    s = math.sqrt(abs(np.linalg.det(M[:, :2])))
    # only the source window that the output sees (plus the blur's reach): cheaper on large photos
    Minv = cv2.invertAffineTransform(M)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ Minv.T
    reach = 3 * (0.5 / s) + 2
    H0, W0 = image.shape[1:]
    x0, y0 = max(0, math.floor(corners[:, 0].min() - reach)), max(0, math.floor(corners[:, 1].min() - reach))
    x1, y1 = min(W0, math.ceil(corners[:, 0].max() + reach)), min(H0, math.ceil(corners[:, 1].max() + reach))
    if x0 < x1 and y0 < y1 and border == cv2.BORDER_CONSTANT:
        image = image[:, y0:y1, x0:x1]
        M = M.copy()
        M[:, 2] += M[:, :2] @ np.array([x0, y0], dtype=np.float64)
    hwc = image.detach().float().cpu().permute(1, 2, 0).contiguous().numpy()
    if s < 0.5:  # strong downscale: blur first (warpAffine does not antialias)
        hwc = cv2.GaussianBlur(hwc, (0, 0), sigmaX=0.5 / s)
    out = cv2.warpAffine(hwc, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).clamp(0, 1)


def _write_text(path: Path, lines: list[str]) -> None:
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _photo_images(fs: FaceSet):
    cache: dict[str, torch.Tensor] = {}

    def get(face_id: str) -> torch.Tensor:
        pid = fs.face(face_id).photo_id
        if pid not in cache:
            cache.clear()
            cache[pid] = fs.photo(pid).image()
        return cache[pid]
    return get


def _partition_by_identity(fs: FaceSet, seed: int, fractions=(0.6, 0.2, 0.2)) -> dict[str, int]:
    names = list(fs.identities)
    random.Random(f"{seed}/celeba-partition").shuffle(names)
    n_valid, n_test = round(len(names) * fractions[1]), round(len(names) * fractions[2])
    part = {}
    for i, n in enumerate(names):
        part[n] = 2 if i < n_test else 1 if i < n_test + n_valid else 0
    return part


def write_celeba(root: str | os.PathLike, *, faces: FaceSet | None = None, seed: int = 0) -> Path:
    """A CelebA folder with one aligned image per bundled face (``000001.jpg`` ...); returns ``root``.

    Partitions are identity-disjoint (all of a person's images in one partition), about 60/20/20 %.
    """
    root = Path(root)
    fs = faces if faces is not None else all_faces()
    part = _partition_by_identity(fs, seed)
    image = _photo_images(fs)
    attr_lines = [str(len(fs.faces)), " ".join(CELEBA_ATTRIBUTES)]
    part_lines = []
    for i, f in enumerate(fs.faces):
        name = f"{i + 1:06d}.jpg"
        M = _similarity(f.landmarks5, CELEBA_TEMPLATE_178x218)
        save_image(root / "img_align_celeba" / name, _warp(image(f.face_id), M, 178, 218), quality=95)
        vals = ["1" if f.labels.get(a) is True else "-1" for a in CELEBA_ATTRIBUTES]
        attr_lines.append(f"{name} " + " ".join(f"{v:>2}" for v in vals))
        part_lines.append(f"{name} {part[f.identity or f.face_id]}")
    _write_text(root / "list_attr_celeba.txt", attr_lines)
    _write_text(root / "list_eval_partition.txt", part_lines)
    return root


def celeba_label_mask(faces: FaceSet | None = None) -> torch.Tensor:
    """``[N, 40]`` bool, rows in :func:`write_celeba`'s image order: True where the written +1/-1 is a real
    label (judged true/false), False where it stands for unsure or unlabelled."""
    fs = faces if faces is not None else all_faces()
    return torch.tensor([[f.labels.get(a) is not None for a in CELEBA_ATTRIBUTES] for f in fs.faces])


def write_pubfig(root: str | os.PathLike, k: int | None = None, *, views: int = 6, seed: int = 0,
                 size: int = 112, faces: FaceSet | None = None) -> Path:
    """PubFig-style identity folders ``<root>/<Person Name>/<n>.jpg`` (n = 1..views) of ``k`` identities.

    The views are those of :func:`facelab.data.identities.identity_set` (train views, then test views), so a
    person with several photos has them as different files; ``IdentityFolders`` makes its own split.
    """
    root = Path(root)
    s = identity_set(k, train_views=max(1, views - max(1, views // 3)), test_views=max(1, views // 3), size=size,
                     seed=seed, faces=faces)
    for name in s.classes:
        vs = [v for v in s.train + s.test if v.identity == name]
        for n, v in enumerate(vs, 1):
            save_image(root / name.replace("_", " ") / f"{n}.jpg", v.image, quality=95)
    return root


def lfw_name(identity: str) -> str:
    """LFW folder/file name of an identity (spaces -> underscores; bundled ids like ``sample1-0`` kept)."""
    return identity.replace(" ", "_")


def _lfw_crop(image: torch.Tensor, box, size: int = 250, expand: float = 2.2) -> torch.Tensor:
    """LFW-like framing: a square of ``expand`` x the box's larger side around the box centre, to size x size."""
    x1, y1, x2, y2 = box
    side = expand * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = size / side
    M = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
    return _warp(image, M, size, size, cv2.BORDER_CONSTANT)  # outside the photo: black


def write_lfw(root: str | os.PathLike, *, folds: int = 2, pairs_per_fold: int | None = None, images_per_person: int = 3,
              seed: int = 0, faces: FaceSet | None = None) -> Path:
    """An LFW folder (images + ``pairs.txt``) from the bundled faces; returns the pairs file.

    Each person gets ``images_per_person`` images (or more, one per photo): their different photos first,
    then seeded augmentations (an LFW crop with jittered centre and scale, then the blur / lighting / JPEG of
    :func:`augment_face`). Identities are split over the folds (identity-disjoint, as LFW's folds); each
    fold has ``pairs_per_fold`` matched pairs (two images of one person, two different *photos* wherever the
    person has them) and as many mismatched pairs (two people of that fold). Default ``pairs_per_fold``:
    as many as the fold's people allow, at most 50.
    """
    root = Path(root)
    fs = faces if faces is not None else all_faces()
    if folds < 1 or images_per_person < 2:
        raise ValueError(f"write_lfw: need folds >= 1 and images_per_person >= 2, got {folds}, {images_per_person}")
    groups = fs.identities
    image = _photo_images(fs)
    photos_of: dict[str, dict[int, bool]] = {}  # name -> {image index: is a different photo}
    for ident, fids in groups.items():
        name = lfw_name(ident)
        by_photo: dict[str, str] = {}
        for f in fids:
            by_photo.setdefault(fs.face(f).photo_id, f)
        srcs = list(by_photo.values())
        n_img = max(images_per_person, len(srcs))
        photos_of[name] = {}
        for j in range(n_img):
            fid = srcs[j % len(srcs)]
            rec = fs.face(fid)
            if j < len(srcs):
                img = _lfw_crop(image(fid), rec.box)
            else:
                g = seeded_generator(seed, "lfw", name, j)
                x1, y1, x2, y2 = rec.box
                w, h = x2 - x1, y2 - y1
                dx, dy = (float(torch.rand((), generator=g)) - 0.5) * 0.1 * w, (float(torch.rand((), generator=g)) - 0.5) * 0.1 * h
                k = 0.9 + 0.2 * float(torch.rand((), generator=g))
                box = (x1 + dx - (k - 1) * w / 2, y1 + dy - (k - 1) * h / 2, x2 + dx + (k - 1) * w / 2, y2 + dy + (k - 1) * h / 2)
                img = _lfw_crop(image(fid), box)
                img = _relight(img, g)
            save_image(root / name / f"{name}_{j + 1:04d}.jpg", img, quality=92)
            photos_of[name][j + 1] = j < len(srcs)
    names = list(photos_of)
    rng = random.Random(f"{seed}/lfw-pairs")
    rng.shuffle(names)
    fold_names = [names[i::folds] for i in range(folds)]
    if any(len(fn) < 2 for fn in fold_names):
        raise ValueError(f"write_lfw: {len(names)} people cannot fill {folds} folds with >= 2 people each")
    cap = min(min(len(fn) for fn in fold_names), 50)
    n = pairs_per_fold if pairs_per_fold is not None else cap
    if not 1 <= n:
        raise ValueError(f"write_lfw: pairs_per_fold must be >= 1, got {n}")
    lines = [f"{folds}\t{n}"]
    for fn in fold_names:
        matched = []
        for i in range(n):
            name = fn[i % len(fn)]
            idx = sorted(photos_of[name])
            real = [j for j in idx if photos_of[name][j]]
            if len(real) >= 2:  # two different photos
                a, b = rng.sample(real, 2)
            else:
                a = real[0] if real else idx[0]
                b = rng.choice([j for j in idx if j != a])
            a, b = sorted((a, b))
            matched.append(f"{name}\t{a}\t{b}")
        combos = [(p, q) for i, p in enumerate(fn) for q in fn[i + 1:]]
        rng.shuffle(combos)  # distinct pairs of people first; repeats only when n exceeds them
        mismatched = []
        for i in range(n):
            p, q = combos[i % len(combos)]
            mismatched.append(f"{p}\t{rng.choice(sorted(photos_of[p]))}\t{q}\t{rng.choice(sorted(photos_of[q]))}")
        lines += matched + mismatched
    pairs = root / "pairs.txt"
    _write_text(pairs, lines)
    return pairs


def _relight(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The photometric part of :func:`augment_face` (blur, lighting, JPEG) without its geometry: the ArcFace
    template given as landmarks and zero geometric jitter make the warp the identity."""
    size = img.shape[-1]
    return augment_face(img, ARCFACE_TEMPLATE_112 * (size / 112.0), g, size, rotate=0.0, scale=(1.0, 1.0), shift=0.0,
                        yaw=0.0, pitch=0.0)
