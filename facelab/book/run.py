"""``facelab run CHAPTER``: run chapter notebooks headless (papermill) into a run folder.

The chapters are the ``notebooks/NN_*.ipynb`` of the project root (:func:`facelab.book.project.find_root`:
``--root``, ``$FACELAB_ROOT`` or the nearest folder above the current one holding ``_config.yml`` and
``notebooks/``). Every chapter's ``-p`` overrides are checked before the first one runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelab.book.project import ProjectRootError, find_root, resolve

KERNEL = "facelab"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("chapter", help="chapter number (1), notebook stem (01_universal_patches) or 'all'")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a notebook parameter (repeatable); VALUE is parsed as YAML (1, 0.5, true, text)")
    p.add_argument("--out", default="runs/latest", help="run folder; each chapter writes <out>/<stem>/ (default: runs/latest)")
    p.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (default: the project's own, 'facelab')")
    p.add_argument("--list-parameters", action="store_true", help="print the chapter's parameters and exit")
    p.add_argument("--root", default=None,
                   help="project root holding _config.yml and notebooks/ (default: $FACELAB_ROOT, else searched "
                        "upward from the current folder)")


def _print_parameters(notebooks: list[Path]) -> None:
    from facelab.book.runner import RESERVED, declared_parameters

    for nb in notebooks:
        print(f"{nb.name}:")
        for prm in declared_parameters(nb).values():
            kind = prm.type + (" | None" if prm.optional and prm.type != "any" else "")
            note = "set by the runner from --out" if prm.name in RESERVED else prm.help
            print(f"  {prm.name:<24} {kind:<14} default {prm.default}{'   # ' + note if note else ''}")


def main(args: argparse.Namespace) -> int:
    from facelab.book.runner import (
        ParameterError, _absolute_if_path, chapter_config, check_out_dir, run_chapter, validate,
    )

    try:
        notebooks = resolve(args.chapter, find_root(args.root) / "notebooks")
    except (LookupError, ProjectRootError) as e:
        print(f"facelab run: error: {e}", file=sys.stderr)
        return 2
    if not notebooks:
        print("facelab run: no chapter notebook has landed yet (notebooks/NN_*.ipynb); nothing to run")
        return 0
    if args.list_parameters:
        try:
            _print_parameters(notebooks)
        except ParameterError as e:
            print(f"facelab run: error: {e}", file=sys.stderr)
            return 2
        return 0
    overrides: dict[str, str] = {}
    for name, value in args.parameter:
        if name in overrides:
            print(f"facelab run: error: parameter {name!r} given twice", file=sys.stderr)
            return 2
        overrides[name] = value
    try:  # every chapter's parameters (types, ranges, detector names) and --out are checked before the first runs
        for nb in notebooks:
            out = check_out_dir(Path(args.out) / nb.stem)
            chapter_config(nb, {k: _absolute_if_path(v) for k, v in validate(nb, overrides).items()}, out)
    except ParameterError as e:
        print(f"facelab run: error: {e}", file=sys.stderr)
        return 2
    failed = []
    for nb in notebooks:
        out = Path(args.out) / nb.stem
        print(f"facelab run: {nb.name} -> {out}/", flush=True)
        try:
            run_chapter(nb, out, overrides, kernel=args.kernel)
        except ParameterError as e:  # e.g. the run folder could not be created
            print(f"facelab run: error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # papermill's execution error names the failing cell
            kept = (out / nb.name).is_file()
            where = f"executed notebook kept in {out}/" if kept else "no executed notebook was written"
            print(f"facelab run: {nb.name} failed ({type(e).__name__}); {where}\n{e}", file=sys.stderr)
            failed.append(nb.stem)
    if failed:
        print(f"facelab run: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
