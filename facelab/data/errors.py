"""The one error type of facelab.data: a data file that is malformed, missing or unreadable."""

from __future__ import annotations

import os

__all__ = ["DatasetFormatError"]


class DatasetFormatError(ValueError):
    """A data file is malformed, missing or unreadable; the message names the file and (when known) the line.

    ``file`` and ``line`` (1-based, or ``None``) are kept as attributes for programs.
    """

    def __init__(self, file: str | os.PathLike, line: int | None, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.reason = message
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {message}")
