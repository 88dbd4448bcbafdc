"""PubFig-style identity folders: ``<root>/<Person Name>/<n>.jpg``, read strictly.

Every entry under ``root`` must be a folder named after a person; every entry of a person folder must be
an image file ``<n>.jpg`` (also ``.jpeg``/``.png``) with an integer ``n``. Anything else (a stray file, an
empty folder, a hidden file) is an error naming it; nothing is skipped silently.

Split (deterministic per identity): the identity's files sorted by ``n`` are shuffled with
``random.Random(f"{seed}/{name}")`` and the first ``min(k - 1, max(1, round(k * test_fraction)))`` go to test; an
identity with a single image goes wholly to train, unless ``min_per_identity`` asks for more: then a person
folder with fewer images is an error naming it. Labels are indices into ``classes`` (sorted names).
``IdentityFolders(root, split)[i]`` -> ``(image [3, H, W], label: int, path)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from torch.utils.data import Dataset

from facelab.data.errors import DatasetFormatError
from facelab.data.images import load_image

__all__ = ["IdentityFolders", "scan_identity_folders"]

_EXTS = (".jpg", ".jpeg", ".png")


def scan_identity_folders(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{person name: [image paths sorted by n]}`` after checking the layout."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(root, None, "identity-folder root not found")
    out: dict[str, list[Path]] = {}
    for person in sorted(root.iterdir(), key=lambda p: p.name):
        if not person.is_dir():
            raise DatasetFormatError(person, None, "expected only person folders '<Person Name>/' under the root")
        files = []
        for f in person.iterdir():
            if not (f.is_file() and f.suffix.lower() in _EXTS and f.stem.isascii() and f.stem.isdigit()):
                raise DatasetFormatError(f, None, "expected an image file '<n>.jpg' (n in ASCII digits 0-9) in a person folder; rename or remove it")
            files.append(f)
        if not files:
            raise DatasetFormatError(person, None, "person folder holds no images")
        out[person.name] = sorted(files, key=lambda f: (int(f.stem), f.name))
    if not out:
        raise DatasetFormatError(root, None, "no person folders found")
    return out


class IdentityFolders(Dataset):
    """Face images grouped by identity, with a deterministic per-identity train/test split."""

    def __init__(self, root: str | os.PathLike, split: str = "all", *, test_fraction: float = 0.3,
                 seed: int = 0, min_per_identity: int = 1) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"IdentityFolders: split must be 'train', 'test' or 'all', got {split!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"IdentityFolders: test_fraction must be in [0, 1), got {test_fraction}")
        self.root = Path(root)
        folders = scan_identity_folders(self.root)
        for name, files in folders.items():
            if len(files) < min_per_identity:
                raise DatasetFormatError(self.root / name, None, f"person folder holds {len(files)} image(s); the split "
                                                                 f"needs at least {min_per_identity} (min_per_identity)")
        self.classes = list(folders)
        self.samples: list[tuple[Path, int]] = []
        for label, (name, files) in enumerate(folders.items()):
            order = list(files)
            random.Random(f"{seed}/{name}").shuffle(order)
            n_test = 0 if len(files) < 2 or test_fraction == 0 else min(len(files) - 1, max(1, round(len(files) * test_fraction)))
            test = set(order[:n_test])
            for f in files:
                if split == "all" or (split == "test") == (f in test):
                    self.samples.append((f, label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int):
        path, label = self.samples[idx]
        return load_image(path), label, str(path)
