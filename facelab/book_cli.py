"""``facelab run CHAPTER`` (papermill) and ``facelab book`` (Jupyter Book 1.x HTML)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "facelab"


def chapters() -> dict[str, Path]:
    """Chapter notebooks by stem (``01_universal_patches``), in book order."""
    return {p.stem: p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


def resolve(chapter: str) -> list[Path]:
    found = chapters()
    if chapter == "all":
        return list(found.values())
    for stem, path in found.items():
        if chapter in (stem, stem[:2], stem[:2].lstrip("0"), path.name):
            return [path]
    raise SystemExit(f"error: unknown chapter {chapter!r}; choose 'all' or one of {', '.join(found) or '(none yet)'}")


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("chapter", help="chapter number (1), notebook stem (01_universal_patches) or 'all'")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a notebook parameter (repeatable); VALUE is parsed as YAML (1, 0.5, true, text)")
    p.add_argument("--out", default="runs/latest", help="run folder; each chapter writes <out>/<stem>/")
    p.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (default: the project's own)")


def run_main(args: argparse.Namespace) -> int:
    from facelab.runner import run_chapter

    for nb in resolve(args.chapter):
        run_chapter(nb, Path(args.out) / nb.stem, dict(args.parameter), kernel=args.kernel)
    return 0


def configure_book(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=None, help="render the executed notebooks of this run folder instead of the committed ones")
    p.add_argument("--out", default=str(ROOT), help="folder that receives _build/html (default: the repository)")


def book_main(args: argparse.Namespace) -> int:
    src = ROOT
    if args.runs:
        src = Path(args.out) / "_build" / "src"
        if src.exists():
            shutil.rmtree(src)
        for item in ("_config.yml", "_toc.yml", "book", "notebooks"):
            s = ROOT / item
            (shutil.copytree if s.is_dir() else shutil.copy2)(s, src / item)
        for stem in chapters():
            executed = Path(args.runs) / stem / f"{stem}.ipynb"
            if executed.exists():
                shutil.copy2(executed, src / "notebooks" / f"{stem}.ipynb")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(src), "--path-output", str(args.out), "-W", "-n", "--keep-going"]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc == 0:
        print(f"book: {Path(args.out) / '_build' / 'html' / 'index.html'}")
    return rc
