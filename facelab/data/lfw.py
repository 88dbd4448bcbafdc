"""LFW verification pairs (Huang et al., 2007) in the official layout, read by our own strict parser.

``pairs.txt``: line 1 ``<folds> <n>`` (official: ``10 300``); then for each fold ``n`` matched lines
``name i j`` followed by ``n`` mismatched lines ``name1 i name2 j`` (tab or space separated). The
development files ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` have a single number ``n`` on line 1 and
are read as one fold. Images: ``<images_dir>/<name>/<name>_<NNNN>.jpg`` (4-digit, 1-based).

``LFWPairs(root)[i]`` -> ``(image1, image2, same: bool, fold: int)``; ``.pairs`` holds the parsed
:class:`Pair` records. Errors name the pairs file and line.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from torch.utils.data import Dataset

from facelab.data._text import load_listed_image, parse_int, read_lines, require_image
from facelab.data.errors import DatasetFormatError

__all__ = ["Pair", "LFWPairs", "parse_lfw_pairs", "lfw_image_path"]


@dataclasses.dataclass(frozen=True)
class Pair:
    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    fold: int  # 0-based
    line: int  # 1-based line in the pairs file


def lfw_image_path(images_dir: str | os.PathLike, name: str, index: int) -> Path:
    return Path(images_dir) / name / f"{name}_{index:04d}.jpg"


def parse_lfw_pairs(file: str | os.PathLike) -> tuple[int, int, list[Pair]]:
    """Parse a pairs file -> (folds, pairs per class per fold, pairs in file order)."""
    file = Path(file)
    lines = read_lines(file, "LFW pairs file")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DatasetFormatError(file, 1, "empty pairs file")
    head = lines[0].split()
    if len(head) == 2:
        folds, n = parse_int(head[0], file, 1, "number of folds"), parse_int(head[1], file, 1, "pairs per class")
    elif len(head) == 1:
        folds, n = 1, parse_int(head[0], file, 1, "pairs per class")
    else:
        raise DatasetFormatError(file, 1, f"expected '<folds> <n>' or '<n>', got {lines[0]!r}")
    if folds < 1 or n < 1:
        raise DatasetFormatError(file, 1, f"folds and n must be >= 1, got {folds}, {n}")
    if len(lines) - 1 != folds * 2 * n:
        raise DatasetFormatError(file, len(lines), f"header announces {folds} folds x 2 x {n} = {folds * 2 * n} "
                                                   f"pairs but {len(lines) - 1} lines follow")
    pairs = []
    for k, ln in enumerate(lines[1:]):
        lno = k + 2
        fold, pos = divmod(k, 2 * n)
        same = pos < n
        tok = ln.split()
        if same:
            if len(tok) != 3:
                raise DatasetFormatError(file, lno, f"expected a matched pair 'name i j' (fold {fold + 1}, "
                                                    f"pair {pos + 1} of {n}), got {ln!r}")
            name1 = name2 = tok[0]
            i1, i2 = parse_int(tok[1], file, lno, "image number"), parse_int(tok[2], file, lno, "image number")
        else:
            if len(tok) != 4:
                raise DatasetFormatError(file, lno, f"expected a mismatched pair 'name1 i name2 j' (fold {fold + 1}, "
                                                    f"pair {pos - n + 1} of {n}), got {ln!r}")
            name1, name2 = tok[0], tok[2]
            i1, i2 = parse_int(tok[1], file, lno, "image number"), parse_int(tok[3], file, lno, "image number")
        if i1 < 1 or i2 < 1:
            raise DatasetFormatError(file, lno, "image numbers are 1-based")
        pairs.append(Pair(name1, i1, name2, i2, same, fold, lno))
    return folds, n, pairs


class LFWPairs(Dataset):
    """LFW pairs with folds. ``root`` holds the images (``<name>/<name>_NNNN.jpg``); ``pairs_file``
    defaults to ``root/pairs.txt``. All referenced images must exist (checked at construction)."""

    def __init__(self, root: str | os.PathLike, pairs_file: str | os.PathLike | None = None, *,
                 check_images: bool = True) -> None:
        self.root = Path(root)
        self.pairs_file = Path(pairs_file) if pairs_file is not None else self.root / "pairs.txt"
        self.folds, self.n_per_class, self.pairs = parse_lfw_pairs(self.pairs_file)
        if check_images:
            for p in self.pairs:
                require_image(lfw_image_path(self.root, p.name1, p.index1), self.pairs_file, p.line)
                require_image(lfw_image_path(self.root, p.name2, p.index2), self.pairs_file, p.line)

    def __len__(self) -> int:
        return len(self.pairs)

    def fold_indices(self, fold: int) -> list[int]:
        """Indices of the pairs in ``fold`` (0-based)."""
        return [i for i, p in enumerate(self.pairs) if p.fold == fold]

    def __getitem__(self, idx: int):
        p = self.pairs[idx]
        a = load_listed_image(lfw_image_path(self.root, p.name1, p.index1), self.pairs_file, p.line)
        b = load_listed_image(lfw_image_path(self.root, p.name2, p.index2), self.pairs_file, p.line)
        return a, b, p.same, p.fold
