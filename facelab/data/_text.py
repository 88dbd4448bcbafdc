"""Strict reading of the text annotation files of the official data sets."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from facelab.data.errors import DatasetFormatError
from facelab.data.images import ImageReadError, load_image


def read_lines(file: str | os.PathLike, what: str = "annotation file") -> list[str]:
    """All lines of a text file (newline removed; line ``i`` of the list is line ``i + 1`` of the file)."""
    p = Path(file)
    if not p.is_file():
        raise DatasetFormatError(p, None, f"{what} not found")
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise DatasetFormatError(p, line, f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DatasetFormatError(p, None, f"cannot read {what} ({e})") from None


def parse_int(token: str, file: Path, line: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DatasetFormatError(file, line, f"{what}: expected an integer, got {token!r}") from None


def require_image(path: Path, file: Path, line: int) -> None:
    if not path.is_file():
        raise DatasetFormatError(file, line, f"image not found: {path}")


def load_listed_image(path: Path, file: Path, line: int) -> torch.Tensor:
    """Load an image named on ``file:line``; errors name both."""
    try:
        return load_image(path)
    except ImageReadError as e:
        raise DatasetFormatError(file, line, f"image {path}: {e.reason}") from e
