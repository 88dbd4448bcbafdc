"""CelebA (Liu et al., ICCV 2015) in its official layout, read by our own strict parser.

Files under ``root``::

    list_attr_celeba.txt      line 1: image count N; line 2: the 40 attribute names;
                              then N lines "<file>.jpg v1 ... v40" with v in {-1, 1}
    list_eval_partition.txt   "<file>.jpg p" with p = 0 train, 1 valid, 2 test
    img_align_celeba/<file>.jpg

``CelebA(root, split)[i]`` -> ``(image [3, H, W] float RGB in [0, 1], attrs float32 [A] in {0, 1}, file)``
(+1 -> 1, -1 -> 0; ``attributes=`` selects/reorders columns by name). Every row must be well formed,
every image of the split must exist, and the two files must list the same images; errors name file and line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facelab.data._text import load_listed_image, parse_int, read_lines, require_image
from facelab.data.errors import DatasetFormatError

__all__ = ["CELEBA_ATTRIBUTES", "CELEBA_SPLITS", "CelebA", "parse_celeba_attrs", "parse_celeba_partition"]

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}


def parse_celeba_attrs(file: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray, list[int]]:
    """``list_attr_celeba.txt`` -> (attribute names, file names, values int8 [N, 40] in {-1, 1}, line numbers)."""
    file = Path(file)
    lines = read_lines(file, "CelebA attribute file")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise DatasetFormatError(file, len(lines) or 1, "expected a count line and an attribute-name line")
    n = parse_int(lines[0].strip(), file, 1, "image count")
    names = lines[1].split()
    if len(names) != 40 or len(set(names)) != 40:
        raise DatasetFormatError(file, 2, f"expected 40 distinct attribute names, got {len(names)}")
    unknown = [a for a in names if a not in CELEBA_ATTRIBUTES]
    if unknown:
        raise DatasetFormatError(file, 2, f"unknown attribute name(s) {unknown}; CelebA's are {' '.join(CELEBA_ATTRIBUTES)}")
    if len(lines) - 2 != n:
        raise DatasetFormatError(file, len(lines), f"line 1 announces {n} images but {len(lines) - 2} rows follow")
    files, rows, line_no = [], np.empty((n, 40), dtype=np.int8), []
    seen: set[str] = set()
    for k, ln in enumerate(lines[2:]):
        lno = k + 3
        tok = ln.split()
        if len(tok) != 41:
            raise DatasetFormatError(file, lno, f"expected a file name and 40 values, got {len(tok)} fields")
        try:
            vals = [int(t) for t in tok[1:]]
        except ValueError:
            raise DatasetFormatError(file, lno, f"non-integer attribute value in {ln!r}") from None
        bad = [names[j] for j, v in enumerate(vals) if v not in (-1, 1)]
        if bad:
            raise DatasetFormatError(file, lno, f"attribute values must be -1 or 1 (bad: {', '.join(bad)})")
        if tok[0] in seen:
            raise DatasetFormatError(file, lno, f"duplicate image {tok[0]!r}")
        seen.add(tok[0])
        files.append(tok[0])
        rows[k] = vals
        line_no.append(lno)
    return names, files, rows, line_no


def parse_celeba_partition(file: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``list_eval_partition.txt`` -> ``{file: (partition 0/1/2, line)}``."""
    file = Path(file)
    out: dict[str, tuple[int, int]] = {}
    for k, ln in enumerate(read_lines(file, "CelebA partition file")):
        if not ln.strip():
            continue  # blank lines carry no record (trailing newline)
        tok = ln.split()
        if len(tok) != 2:
            raise DatasetFormatError(file, k + 1, f"expected '<file> <partition>', got {ln!r}")
        p = parse_int(tok[1], file, k + 1, "partition")
        if p not in (0, 1, 2):
            raise DatasetFormatError(file, k + 1, f"partition must be 0, 1 or 2, got {p}")
        if tok[0] in out:
            raise DatasetFormatError(file, k + 1, f"duplicate image {tok[0]!r}")
        out[tok[0]] = (p, k + 1)
    return out


class CelebA(Dataset):
    """CelebA aligned images with the 40 binary attributes (see module docstring)."""

    def __init__(self, root: str | os.PathLike, split: str = "test", *, attributes: list[str] | None = None,
                 check_images: bool = True) -> None:
        if split not in (*CELEBA_SPLITS, "all"):
            raise ValueError(f"CelebA: split must be one of {[*CELEBA_SPLITS, 'all']}, got {split!r}")
        self.root = Path(root)
        self.attr_file = self.root / "list_attr_celeba.txt"
        self.partition_file = self.root / "list_eval_partition.txt"
        self.image_dir = self.root / "img_align_celeba"
        names, files, values, lines = parse_celeba_attrs(self.attr_file)
        part = parse_celeba_partition(self.partition_file)
        for f, lno in zip(files, lines):
            if f not in part:
                raise DatasetFormatError(self.attr_file, lno, f"image {f!r} is not in {self.partition_file.name}")
        if len(part) != len(files):
            extra = next(f for f in part if f not in set(files))
            raise DatasetFormatError(self.partition_file, part[extra][1], f"image {extra!r} is not in {self.attr_file.name}")
        wanted = attributes if attributes is not None else names
        unknown = [a for a in wanted if a not in names]
        if unknown:
            raise DatasetFormatError(self.attr_file, 2, f"attributes=: unknown attribute(s) {unknown}; known: {names}")
        cols = [names.index(a) for a in wanted]
        self.attributes = list(wanted)
        keep = [i for i, f in enumerate(files) if split == "all" or part[f][0] == CELEBA_SPLITS[split]]
        self.files = [files[i] for i in keep]
        self.lines = [lines[i] for i in keep]
        self.targets = torch.from_numpy((values[keep][:, cols] > 0).astype(np.float32))
        if check_images:
            for f, lno in zip(self.files, self.lines):
                require_image(self.image_dir / f, self.attr_file, lno)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int):
        img = load_listed_image(self.image_dir / self.files[idx], self.attr_file, self.lines[idx])
        return img, self.targets[idx], self.files[idx]
