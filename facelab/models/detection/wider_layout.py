"""WIDER FACE folder layout helpers used by the detector training: a writer of small synthetic
datasets in the official layout (tests, benchmarks) and a minimal reader used only when
``facelab.data.wider`` is not available.

Layout: ``<root>/WIDER_<split>/images/<event>/<file>.jpg`` and
``<root>/wider_face_split/wider_face_<split>_bbx_gt.txt`` with, per image, a path line, a count line,
then ``x1 y1 w h blur expression illumination invalid occlusion pose`` lines (a face-less image has
count 0 and one all-zero line).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["write_synthetic_wider", "MinimalWider", "open_wider"]


def _draw_face(img: np.ndarray, x: int, y: int, s: int, rng: np.random.Generator) -> None:
    """A face-like blob in the square (x, y, s): skin ellipse, two dark eyes, a mouth."""
    skin = tuple(int(v) for v in rng.integers([150, 100, 70], [255, 200, 160]))  # RGB
    cx, cy = x + s // 2, y + s // 2
    cv2.ellipse(img, (cx, cy), (max(1, int(s * 0.45)), max(1, int(s * 0.5))), 0, 0, 360, skin, -1)
    er = max(1, s // 10)
    for dx in (-s // 5, s // 5):
        cv2.circle(img, (cx + dx, cy - s // 8), er, (20, 20, 20), -1)
    cv2.ellipse(img, (cx, cy + s // 5), (max(1, s // 6), max(1, s // 14)), 0, 0, 360, (120, 20, 30), -1)


def write_synthetic_wider(root: str | os.PathLike, split: str = "train", n_images: int = 4,
                          size: tuple[int, int] = (128, 128), faces: tuple[int, int] = (1, 2),
                          face_sizes: tuple[int, int] = (24, 56), seed: int = 0) -> Path:
    """Write ``n_images`` noisy-background images with non-overlapping face-like blobs; return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    lines = []
    for i in range(n_images):
        img = (rng.random((h, w, 3)) * 80 + rng.integers(0, 120, 3)).astype(np.uint8)
        img = np.ascontiguousarray(img)
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(faces[0], faces[1] + 1))):
            for _try in range(50):
                s = min(int(rng.integers(face_sizes[0], face_sizes[1] + 1)), min(h, w) - 1)
                x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                if all(x + s <= bx or bx + bs <= x or y + s <= by or by + bs <= y for bx, by, bs, _ in boxes):
                    boxes.append((x, y, s, s))
                    _draw_face(img, x, y, s, rng)
                    break
        rel = f"0--Synthetic/0_Synthetic_{i:04d}.jpg"
        path = root / f"WIDER_{split}" / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines += [rel, str(len(boxes))]
        lines += [f"{x} {y} {bw} {bh} 0 0 0 0 0 0" for x, y, bw, bh in boxes] or ["0 0 0 0 0 0 0 0 0 0"]
    ann = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text("\n".join(lines) + "\n")
    return root


class MinimalWider(torch.utils.data.Dataset):
    """Minimal WIDER FACE reader: items (image [3,H,W] float RGB in [0,1], boxes [N,4] x1y1x2y2, info).

    Faces flagged invalid or with a non-positive width/height are dropped.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = Path(root)
        ann = self.root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        if not ann.is_file():
            raise FileNotFoundError(f"WIDER FACE annotations not found: {ann}")
        self.image_dir = self.root / f"WIDER_{split}" / "images"
        self.items: list[tuple[str, Tensor]] = []
        tokens = ann.read_text().splitlines()
        i = 0
        while i < len(tokens):
            rel = tokens[i].strip()
            if not rel:
                i += 1
                continue
            try:
                n = int(tokens[i + 1])
            except (IndexError, ValueError) as e:
                raise ValueError(f"{ann}:{i + 2}: expected a face count after {rel!r}") from e
            rows = [list(map(float, tokens[i + 2 + k].split()[:10])) for k in range(max(n, 1))]
            i += 2 + max(n, 1)
            b = torch.tensor([r[:4] for r in rows[:n] if r[7] == 0 and r[2] > 0 and r[3] > 0],
                             dtype=torch.float32).reshape(-1, 4)
            b[:, 2:] += b[:, :2]
            self.items.append((rel, b))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, dict]:
        rel, boxes = self.items[i]
        bgr = cv2.imread(str(self.image_dir / rel), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {self.image_dir / rel}")
        img = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255
        return img, boxes.clone(), {"path": rel, "event": rel.split("/")[0]}


def open_wider(root: str | os.PathLike, split: str = "train") -> torch.utils.data.Dataset:
    """``facelab.data.wider.WiderFace(root, split)`` when that module exists, else :class:`MinimalWider`."""
    try:
        from facelab.data.wider import WiderFace  # type: ignore[import-not-found]
    except ImportError:
        return MinimalWider(root, split)
    return WiderFace(root, split)
