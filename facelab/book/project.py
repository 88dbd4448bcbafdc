"""Where the book's project lives: its root folder and its chapter notebooks.

The project root is the folder holding ``_config.yml`` and ``notebooks/`` (the repository checkout, not
the installed package). It is taken from, in this order: an explicit ``--root``, the environment
variable ``FACELAB_ROOT``, or the first folder holding both, searching upward from the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "ProjectRootError", "is_project_root", "find_root", "chapters", "resolve"]

ENV_VAR = "FACELAB_ROOT"
_LOOKED_FOR = "a folder holding _config.yml and notebooks/"


class ProjectRootError(LookupError):
    """No facelab project root (``_config.yml`` + ``notebooks/``) where it was looked for."""


def is_project_root(path: Path) -> bool:
    """``path`` holds ``_config.yml`` and ``notebooks/``."""
    return (path / "_config.yml").is_file() and (path / "notebooks").is_dir()


def _checked(path: str | os.PathLike, origin: str) -> Path:
    p = Path(path).expanduser().resolve()
    if not is_project_root(p):
        raise ProjectRootError(f"{origin}: {p} is not a facelab project root ({_LOOKED_FOR} was looked for)")
    return p


def find_root(root: str | os.PathLike | None = None, start: str | os.PathLike | None = None) -> Path:
    """The project root: ``root`` if given, else ``$FACELAB_ROOT``, else the nearest folder at or above
    ``start`` (default: the current folder) that holds ``_config.yml`` and ``notebooks/``.

    Raises :class:`ProjectRootError` naming what was looked for and where.
    """
    if root is not None and str(root) != "":
        return _checked(root, f"--root {root}")
    env = os.environ.get(ENV_VAR, "")
    if env:
        return _checked(env, f"{ENV_VAR}={env}")
    here = Path.cwd() if start is None else Path(start)
    here = here.resolve()
    for folder in (here, *here.parents):
        if is_project_root(folder):
            return folder
    raise ProjectRootError(f"no facelab project root found: looked for {_LOOKED_FOR} in {here} and every folder "
                           f"above it; run from inside the project, pass --root DIR or set {ENV_VAR}=DIR")


def chapters(notebooks: Path) -> dict[str, Path]:
    """Chapter notebooks ``NN_*.ipynb`` of the folder ``notebooks`` by stem, in book order."""
    return {p.stem: p for p in sorted(Path(notebooks).glob("[0-9][0-9]_*.ipynb"))}


def resolve(chapter: str, notebooks: Path) -> list[Path]:
    """``all`` | ``1`` | ``01`` | ``01_universal_patches`` | ``01_universal_patches.ipynb`` -> notebooks."""
    found = chapters(notebooks)
    if chapter == "all":
        return list(found.values())
    for stem, path in found.items():
        if chapter in (stem, stem[:2], stem[:2].lstrip("0"), path.name):
            return [path]
    raise LookupError(f"unknown chapter {chapter!r}; choose 'all' or one of {', '.join(found) or '(none landed yet)'}")
