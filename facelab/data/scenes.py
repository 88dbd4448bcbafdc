"""Synthetic multi-face scenes (chapter 2): N real face crops at a set centre distance and face size.

:func:`make_scene` pastes crops of the bundled faces (:func:`facelab.data.faces.all_faces`, or a given
:class:`~facelab.data.faces.FaceSet` / list of face ids) onto a plain or noise background:

* ``layout="grid"``: ``ceil(sqrt(N))`` columns, centres ``distance`` pixels apart (1, 9, 64 faces at 40, 160,
  240 px, ...);
* ``layout="random"``: centres drawn uniformly in the canvas, each at least ``min_distance`` from the others
  and no pasted crop overlapping another (rejection sampling; an error when the canvas cannot hold them).

Each face is scaled so that its annotated box is ``face_size`` pixels high (width follows the box's aspect),
and pasted with a context margin around the box that never reaches a neighbour's box. The ground-truth
box of each pasted face is computed from the exact mapping used for the paste (float pixel coordinates, the
convention of :func:`torch.nn.functional.interpolate` with ``align_corners=False``: pixel edges map onto
pixel edges), so it is exact, not re-detected. Everything is deterministic for ``seed``.

:func:`write_coco` writes scenes as a COCO detection folder (``images/``, ``annotations.json``, category 1
"face", ``bbox`` = x, y, w, h); :func:`read_coco` reads such a file back strictly (errors name file and line).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from facelab.data.errors import DatasetFormatError
from facelab.data.faces import FaceSet, all_faces
from facelab.data.identities import seeded_generator
from facelab.data.images import save_image
from facelab.io import write_json

__all__ = ["Scene", "make_scene", "write_coco", "read_coco"]


@dataclasses.dataclass
class Scene:
    """One synthetic image: ``image [3, H, W]``, exact ``boxes [N, 4]`` (x1 y1 x2 y2), the source face ids."""

    image: torch.Tensor
    boxes: torch.Tensor
    face_ids: list[str]
    centres: torch.Tensor  # [N, 2] (x, y) slot centres
    params: dict


def _grid_centres(n: int, distance: float, pad: float) -> tuple[list[tuple[float, float]], int, int]:
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cs = [(pad + (i % cols) * distance, pad + (i // cols) * distance) for i in range(n)]
    return cs, math.ceil(2 * pad + (cols - 1) * distance), math.ceil(2 * pad + (rows - 1) * distance)


def _random_centres(n: int, min_distance: float, width: int, height: int, half: tuple[float, float],
                    g: torch.Generator, tries: int = 20000) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    hx, hy = half
    if width < 2 * hx or height < 2 * hy:
        raise ValueError(f"make_scene: canvas {width}x{height} cannot hold a face of half-size {hx:.0f}x{hy:.0f}")
    for _ in range(tries):
        if len(out) == n:
            break
        x = hx + float(torch.rand((), generator=g)) * (width - 2 * hx)
        y = hy + float(torch.rand((), generator=g)) * (height - 2 * hy)
        # centre distance, and no overlap of the pasted tiles (box + margin), so no face covers another
        if all(math.hypot(x - a, y - b) >= min_distance and (abs(x - a) >= 2 * hx or abs(y - b) >= 2 * hy)
               for a, b in out):
            out.append((x, y))
    if len(out) < n:
        raise ValueError(f"make_scene: placed only {len(out)} of {n} faces at min_distance={min_distance} in a "
                         f"{width}x{height} canvas after {tries} tries; enlarge the canvas or lower min_distance")
    return out


def make_scene(n_faces: int, distance: float = 160, face_size: float = 64, seed: int = 0, *,
               faces: FaceSet | None = None, face_ids: Sequence[str] | None = None, layout: str = "grid",
               min_distance: float | None = None, canvas: tuple[int, int] | None = None,
               background: str = "gray", context: float = 0.25) -> Scene:
    """A scene of ``n_faces`` faces (see module doc). ``face_ids`` restricts the crops (e.g. test faces only);
    faces are drawn in a seeded order, cycling when ``n_faces`` exceeds them. ``context``: margin around
    each box, as a fraction of ``face_size`` (limited so that margins never cover a neighbour's box)."""
    if n_faces < 1:
        raise ValueError(f"make_scene: n_faces must be >= 1, got {n_faces}")
    if face_size < 4:
        raise ValueError(f"make_scene: face_size must be >= 4 pixels, got {face_size}")
    if layout not in ("grid", "random"):
        raise ValueError(f"make_scene: layout must be 'grid' or 'random', got {layout!r}")
    if background not in ("gray", "noise"):
        raise ValueError(f"make_scene: background must be 'gray' or 'noise', got {background!r}")
    fs = faces if faces is not None else all_faces()
    ids = list(face_ids) if face_ids is not None else [f.face_id for f in fs.faces]
    if not ids:
        raise ValueError("make_scene: no faces to draw from")
    recs = [fs.face(i) for i in ids]
    g = seeded_generator(seed, "scene", n_faces, distance, face_size, layout)
    chosen = []
    while len(chosen) < n_faces:
        chosen += [recs[j] for j in torch.randperm(len(recs), generator=g).tolist()]
    chosen = chosen[:n_faces]
    # box sizes in the scene: height face_size, width by aspect
    sizes = [(face_size * (r.box[2] - r.box[0]) / (r.box[3] - r.box[1]), float(face_size)) for r in chosen]
    max_w = max(w for w, _ in sizes)
    extent = max(max_w, face_size)
    spacing = distance if layout == "grid" else (min_distance if min_distance is not None else distance)
    if spacing < extent:
        raise ValueError(f"make_scene: centre distance {spacing} is smaller than the face extent {extent:.1f}; "
                         "faces would overlap")
    margin = max(0.0, min(context * face_size, (spacing - extent) / 2))
    pad = extent / 2 + margin + face_size * 0.25
    if layout == "grid":
        centres, W, H = _grid_centres(n_faces, distance, pad)
        if canvas is not None:
            if canvas[0] < W or canvas[1] < H:
                raise ValueError(f"make_scene: canvas {canvas} is smaller than the grid ({W}x{H})")
            ox, oy = (canvas[0] - W) / 2, (canvas[1] - H) / 2
            centres = [(x + ox, y + oy) for x, y in centres]
            W, H = canvas
    else:
        if canvas is None:
            _, W, H = _grid_centres(n_faces, spacing * 1.5, pad)
        else:
            W, H = canvas
        centres = _random_centres(n_faces, spacing, W, H, (extent / 2 + margin, face_size / 2 + margin), g)
    if background == "gray":
        image = torch.full((3, H, W), 0.5)
    else:
        low = torch.rand(3, max(2, H // 32), max(2, W // 32), generator=g)
        image = F.interpolate(low[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    boxes = []
    photo_cache: dict[str, torch.Tensor] = {}
    for r, (cx, cy), (bw, bh) in zip(chosen, centres, sizes):
        if r.photo_id not in photo_cache:
            photo_cache.clear()
            photo_cache[r.photo_id] = fs.photo(r.photo_id).image()
        photo = photo_cache[r.photo_id]
        PH, PW = photo.shape[1:]
        x1, y1, x2, y2 = r.box
        s = face_size / (y2 - y1)  # photo px -> scene px
        m = margin / s  # margin in photo px
        # integer source window around the box (clipped to the photo) and integer target window
        sx1, sy1 = max(0, math.floor(x1 - m)), max(0, math.floor(y1 - m))
        sx2, sy2 = min(PW, math.ceil(x2 + m)), min(PH, math.ceil(y2 + m))
        tw, th = max(1, round((sx2 - sx1) * s)), max(1, round((sy2 - sy1) * s))
        kx, ky = tw / (sx2 - sx1), th / (sy2 - sy1)  # exact scale of this paste
        bx = (x1 + x2) / 2 - sx1
        by = (y1 + y2) / 2 - sy1
        tx, ty = round(cx - bx * kx), round(cy - by * ky)  # integer top-left of the target window
        crop = photo[:, sy1:sy2, sx1:sx2]
        tile = F.interpolate(crop[None], size=(th, tw), mode="bilinear", antialias=kx < 1 or ky < 1,
                             align_corners=False)[0].clamp(0, 1)
        # paste, clipped to the canvas
        ax1, ay1, ax2, ay2 = max(0, tx), max(0, ty), min(W, tx + tw), min(H, ty + th)
        if ax1 < ax2 and ay1 < ay2:
            image[:, ay1:ay2, ax1:ax2] = tile[:, ay1 - ty:ay2 - ty, ax1 - tx:ax2 - tx]
        boxes.append([tx + (x1 - sx1) * kx, ty + (y1 - sy1) * ky, tx + (x2 - sx1) * kx, ty + (y2 - sy1) * ky])
    params = dict(n_faces=n_faces, distance=distance, face_size=face_size, seed=seed, layout=layout,
                  min_distance=min_distance, background=background, context=context)
    return Scene(image.contiguous(), torch.tensor(boxes, dtype=torch.float32), [r.face_id for r in chosen],
                 torch.tensor(centres, dtype=torch.float32), params)


def write_coco(root: str | os.PathLike, scenes: Sequence[Scene], *, prefix: str = "scene") -> Path:
    """Write ``root/images/<prefix>_<i>.png`` and ``root/annotations.json`` (COCO detection format)."""
    root = Path(root)
    images, anns = [], []
    for i, sc in enumerate(scenes):
        name = f"{prefix}_{i:05d}.png"
        save_image(root / "images" / name, sc.image)
        H, W = sc.image.shape[1:]
        images.append({"id": i + 1, "file_name": name, "width": int(W), "height": int(H), "params": sc.params})
        for b, fid in zip(sc.boxes.tolist(), sc.face_ids):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": 0, "face_id": fid})
    return write_json(root / "annotations.json", {
        "info": {"description": "facelab synthetic multi-face scenes (facelab.data.scenes)"},
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "face", "supercategory": "face"}]})


def read_coco(file: str | os.PathLike, images_dir: str | os.PathLike | None = None
              ) -> list[tuple[Path, torch.Tensor]]:
    """A COCO detection json -> ``[(image path, boxes [N, 4] x1 y1 x2 y2)]`` in image order, checked strictly:
    unique ids, every annotation's image known, bbox 4 numbers with positive size inside the image, every
    image file present (``images_dir`` default: ``images/`` beside the json). Errors name file and line."""
    file = Path(file)
    try:
        text = file.read_text()
        data = json.loads(text)
    except FileNotFoundError:
        raise DatasetFormatError(file, None, "COCO annotation file not found") from None
    except json.JSONDecodeError as e:
        raise DatasetFormatError(file, e.lineno, f"invalid JSON: {e.msg}") from None
    img_dir = Path(images_dir) if images_dir is not None else file.parent / "images"
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetFormatError(file, 1, "expected an object with 'images', 'annotations' and 'categories'")
    # line of each record: the n-th '"file_name"' is image n, the n-th '"bbox"' annotation n
    def lines(key: str) -> list[int]:
        return [text.count("\n", 0, m.start()) + 1 for m in re.finditer(rf'"{key}"\s*:', text)]
    img_lines, ann_lines = lines("file_name"), lines("bbox")

    def at(ls: list[int], i: int) -> int | None:
        return ls[i] if i < len(ls) else None

    sizes: dict[int, tuple[Path, int, int]] = {}
    for i, im in enumerate(data["images"]):
        try:
            iid, name, w, h = int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetFormatError(file, at(img_lines, i), f"images[{i}]: missing or bad field ({e})") from None
        if iid in sizes:
            raise DatasetFormatError(file, at(img_lines, i), f"images[{i}]: duplicate image id {iid}")
        path = img_dir / name
        if not path.is_file():
            raise DatasetFormatError(file, at(img_lines, i), f"images[{i}]: image not found: {path}")
        sizes[iid] = (path, w, h)
    cats = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    boxes: dict[int, list[list[float]]] = {k: [] for k in sizes}
    seen: set[int] = set()
    for i, a in enumerate(data["annotations"]):
        lno = at(ann_lines, i)
        try:
            aid, iid, cat = int(a["id"]), int(a["image_id"]), a["category_id"]
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetFormatError(file, lno, f"annotations[{i}]: missing or bad field ({e})") from None
        if aid in seen:
            raise DatasetFormatError(file, lno, f"annotations[{i}]: duplicate annotation id {aid}")
        seen.add(aid)
        if iid not in sizes:
            raise DatasetFormatError(file, lno, f"annotations[{i}]: unknown image_id {iid}")
        if cat not in cats:
            raise DatasetFormatError(file, lno, f"annotations[{i}]: unknown category_id {cat}")
        _, W, H = sizes[iid]
        if not (w > 0 and h > 0 and x >= -1e-3 and y >= -1e-3 and x + w <= W + 1e-3 and y + h <= H + 1e-3):
            raise DatasetFormatError(file, lno, f"annotations[{i}]: bbox {[x, y, w, h]} is empty or outside the "
                                                f"{W}x{H} image")
        boxes[iid].append([x, y, x + w, y + h])
    return [(sizes[k][0], torch.tensor(boxes[k], dtype=torch.float32).reshape(-1, 4)) for k in sizes]
