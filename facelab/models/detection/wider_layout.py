"""A writer of small synthetic WIDER FACE datasets in the official layout (tests, benchmarks); the
reader is :class:`facelab.data.wider.WiderFace`.

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

__all__ = ["write_synthetic_wider"]


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
