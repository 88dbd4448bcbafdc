"""``facelab run CHAPTER`` (papermill) and ``facelab book`` (Jupyter Book 1.x HTML).

``facelab book`` never builds the repository in place: it stages a copy of the sources into
``<out>/_build/src`` where it (1) swaps in the executed notebooks of ``--runs DIR`` when given,
(2) generates ``book/status.md`` from the results cards (:mod:`facelab.book_status`), (3) writes a
``_toc.yml`` without the entries whose file does not exist yet (chapters not landed) and refuses a
chapter notebook that the toc does not list, (4) refuses a notebook with a saved error output,
(5) copies the pinned MathJax (asset ``mathjax/tex-svg-full.js``) to where ``_config.yml`` loads it
from, so maths renders offline, then runs ``jupyter-book build --all -W -n --keep-going`` so that
any warning (a broken notebook, a missing reference or citation) fails the build. Notebooks are
never executed by the book.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "facelab"
_SUFFIXES = (".md", ".ipynb", ".rst", ".myst")
MATHJAX_ASSET = "mathjax/tex-svg-full.js"  # facelab.assets name; also its path below the HTML's _static/


class BookError(RuntimeError):
    """The book's sources are inconsistent (toc, notebooks); raised before Sphinx runs."""


# --------------------------------------------------------------------------------------- run

def chapters(notebooks: Path | None = None) -> dict[str, Path]:
    """Chapter notebooks by stem (``01_universal_patches``), in book order."""
    return {p.stem: p for p in sorted(Path(notebooks or NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))}


def resolve(chapter: str, notebooks: Path | None = None) -> list[Path]:
    """``all`` | ``1`` | ``01`` | ``01_universal_patches`` | ``01_universal_patches.ipynb`` -> notebooks."""
    found = chapters(notebooks)
    if chapter == "all":
        return list(found.values())
    for stem, path in found.items():
        if chapter in (stem, stem[:2], stem[:2].lstrip("0"), path.name):
            return [path]
    raise LookupError(f"unknown chapter {chapter!r}; choose 'all' or one of {', '.join(found) or '(none landed yet)'}")


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("chapter", help="chapter number (1), notebook stem (01_universal_patches) or 'all'")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a notebook parameter (repeatable); VALUE is parsed as YAML (1, 0.5, true, text)")
    p.add_argument("--out", default="runs/latest", help="run folder; each chapter writes <out>/<stem>/ (default: runs/latest)")
    p.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (default: the project's own, 'facelab')")
    p.add_argument("--list-parameters", action="store_true", help="print the chapter's parameters and exit")


def run_main(args: argparse.Namespace) -> int:
    from facelab.runner import ParameterError, declared_parameters, run_chapter, validate

    try:
        notebooks = resolve(args.chapter)
    except LookupError as e:
        print(f"facelab run: error: {e}", file=sys.stderr)
        return 2
    if not notebooks:
        print("facelab run: no chapter notebook has landed yet (notebooks/NN_*.ipynb); nothing to run")
        return 0
    if args.list_parameters:
        for nb in notebooks:
            print(f"{nb.name}:")
            for prm in declared_parameters(nb).values():
                print(f"  {prm.name:<24} {prm.type + (' | None' if prm.optional and prm.type != 'any' else ''):<14} "
                      f"default {prm.default}{'   # ' + prm.help if prm.help else ''}")
        return 0
    overrides: dict[str, str] = {}
    for name, value in args.parameter:
        if name in overrides:
            print(f"facelab run: error: parameter {name!r} given twice", file=sys.stderr)
            return 2
        overrides[name] = value
    try:  # every chapter's parameters are checked before the first one runs
        for nb in notebooks:
            validate(nb, overrides)
    except ParameterError as e:
        print(f"facelab run: error: {e}", file=sys.stderr)
        return 2
    failed = []
    for nb in notebooks:
        out = Path(args.out) / nb.stem
        print(f"facelab run: {nb.name} -> {out}/", flush=True)
        try:
            run_chapter(nb, out, overrides, kernel=args.kernel)
        except Exception as e:  # papermill's execution error names the failing cell
            print(f"facelab run: {nb.name} failed ({type(e).__name__}); executed notebook kept in {out}/\n{e}",
                  file=sys.stderr)
            failed.append(nb.stem)
    if failed:
        print(f"facelab run: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------- book

def _toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(str(node["file"]))
        for v in node.values():
            out += _toc_files(v)
    elif isinstance(node, list):
        for v in node:
            out += _toc_files(v)
    return out


def _exists(src: Path, file: str) -> bool:
    p = src / file
    return p.is_file() or any(p.with_name(p.name + s).is_file() for s in _SUFFIXES)


def _prune(node, src: Path, dropped: list[str]):
    """Copy of the toc tree without entries whose file is missing (and parts left empty)."""
    if isinstance(node, list):
        kept = [_prune(v, src, dropped) for v in node]
        return [v for v in kept if v is not None]
    if isinstance(node, dict):
        if "file" in node and not _exists(src, str(node["file"])):
            dropped.append(str(node["file"]))
            return None
        new = {k: _prune(v, src, dropped) if isinstance(v, (list, dict)) else v for k, v in node.items()}
        for key in ("chapters", "sections", "parts"):
            if key in new and not new[key]:
                if key == "chapters" and "caption" in new:
                    return None  # an empty part
                del new[key]
        return new
    return node


def stage_toc(toc_path: Path, src: Path, notebooks: list[str]) -> tuple[dict, list[str]]:
    """The toc for the staged sources ``src``; ``notebooks`` are the staged chapter stems that must appear."""
    if not toc_path.is_file():
        raise BookError(f"{toc_path}: missing table of contents")
    toc = yaml.safe_load(toc_path.read_text())
    if not isinstance(toc, dict) or "root" not in toc:
        raise BookError(f"{toc_path}: not a Jupyter Book toc (needs 'format' and 'root')")
    listed = {Path(f).with_suffix("").as_posix() if Path(f).suffix in _SUFFIXES else f for f in _toc_files(toc)}
    missing = [s for s in notebooks if f"notebooks/{s}" not in listed]
    if missing:
        raise BookError(f"{toc_path}: chapter notebook(s) {', '.join(missing)} not in the table of contents; "
                        f"add '- file: notebooks/<stem>' under its part")
    if not _exists(src, str(toc["root"])):
        raise BookError(f"{toc_path}: root page {toc['root']!r} does not exist")
    dropped: list[str] = []
    pruned = _prune(toc, src, dropped)
    return pruned, dropped


def check_notebook(path: Path) -> None:
    """A staged notebook must be valid nbformat and hold no saved error output (unless tagged raises-exception)."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as e:
        raise BookError(f"{path.name}: not a valid notebook: {e}") from None
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code" or "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise BookError(f"{path.name}: code cell {i} has a saved error output "
                                f"({out.get('ename')}: {out.get('evalue')}); re-run the notebook")


def stage_mathjax(src: Path) -> list[str]:
    """Copy the pinned, verified MathJax into the staged static folder that ``_config.yml`` names.

    ``sphinx.config.mathjax_path`` is relative to the HTML's ``_static/`` when it is not a URL; it must
    then be the asset :data:`MATHJAX_ASSET`, copied to ``<src>/<html_static_path[0]>/<mathjax_path>``.
    A URL (a CDN) is left alone: such a book needs the network to show its maths.
    """
    from facelab import assets

    config = (yaml.safe_load((src / "_config.yml").read_text()) or {}).get("sphinx", {}).get("config", {}) or {}
    mj_path = config.get("mathjax_path")
    if not mj_path or "://" in str(mj_path) or str(mj_path).startswith("//"):
        return [f"MathJax is loaded from {mj_path or 'the Sphinx default URL'} (needs the network)"]
    if mj_path != MATHJAX_ASSET:
        raise BookError(f"_config.yml: sphinx.config.mathjax_path {mj_path!r} is a local path but not the pinned "
                        f"asset {MATHJAX_ASSET!r}; use that or a URL")
    static = config.get("html_static_path") or []
    if not static or Path(str(static[0])).is_absolute():
        raise BookError(f"_config.yml: sphinx.config.mathjax_path {mj_path!r} needs a relative "
                        "sphinx.config.html_static_path folder to copy MathJax into (e.g. [\"_mathjax\"])")
    try:
        file = assets.path(MATHJAX_ASSET)
    except assets.AssetError as e:
        raise BookError(f"MathJax for the offline book: {e}") from None
    dest = src / str(static[0]) / mj_path
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, dest)
    if assets.sha256_of(dest) != assets.REGISTRY[MATHJAX_ASSET].sha256:  # changed while copying
        raise BookError(f"{dest}: copied MathJax does not match its pinned sha256")
    return [f"MathJax {assets.REGISTRY[MATHJAX_ASSET].version} (offline, verified) -> _static/{mj_path}"]


def stage(root: Path, src: Path, runs: Path | None = None) -> list[str]:
    """Copy the book sources of ``root`` into ``src`` and prepare them; returns log lines."""
    from facelab import book_status

    log = []
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for item in ("_config.yml", "references.bib"):
        if not (root / item).is_file():
            raise BookError(f"{root / item}: missing")
        shutil.copy2(root / item, src / item)
    log += stage_mathjax(src)
    shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("status.md", ".ipynb_checkpoints"))
    nb_src = root / "notebooks"
    if nb_src.is_dir():
        shutil.copytree(nb_src, src / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    else:
        (src / "notebooks").mkdir()
    staged = chapters(src / "notebooks")
    if runs is not None:
        for stem in staged:
            executed = Path(runs) / stem / f"{stem}.ipynb"
            if executed.is_file():
                shutil.copy2(executed, src / "notebooks" / f"{stem}.ipynb")
                log.append(f"{stem}: rendering the executed notebook of {executed.parent}")
            else:
                log.append(f"{stem}: no executed notebook in {runs}; rendering the committed one")
    for path in staged.values():
        check_notebook(path)
    search = [Path(runs)] if runs is not None else []
    statuses = book_status.collect(search, notebooks=root / "notebooks")
    (src / "book" / "status.md").write_text(book_status.render(statuses), encoding="utf-8")
    toc, dropped = stage_toc(root / "_toc.yml", src, list(staged))
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if dropped:
        log.append(f"not yet landed (left out of the toc): {', '.join(dropped)}")
    return log


def build(root: Path = ROOT, out: Path = ROOT, runs: Path | None = None, quiet: bool = False) -> int:
    """Stage and build ``<out>/_build/html``; 0 on success, Sphinx's exit code otherwise."""
    out = Path(out).resolve()
    src = out / "_build" / "src"
    t0 = time.perf_counter()
    for line in stage(Path(root).resolve(), src, Path(runs).resolve() if runs else None):
        print(f"book: {line}")
    exe = Path(sys.executable).with_name("jupyter-book")
    exe = str(exe) if exe.exists() else (shutil.which("jupyter-book") or "jupyter-book")
    cmd = [exe, "build", str(src), "--path-output", str(out), "--all", "-W", "-n", "--keep-going"]
    if quiet:
        cmd.append("-q")
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=src)
    html = out / "_build" / "html" / "index.html"
    took = time.perf_counter() - t0
    if rc == 0 and html.is_file():
        print(f"book: {html} ({took:.1f} s)")
        (out / "_build" / "book-build.json").write_text(json.dumps({"seconds": round(took, 2), "html": str(html)}) + "\n")
        return 0
    print(f"book: build FAILED after {took:.1f} s (exit {rc}); every warning is an error (-W -n)", file=sys.stderr)
    return rc or 1


def configure_book(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=None,
                   help="render the executed notebooks and results cards of this run folder (e.g. runs/main) "
                        "instead of the committed notebooks")
    p.add_argument("--out", default=str(ROOT), help="folder that receives _build/html (default: the repository)")
    p.add_argument("-q", "--quiet", action="store_true", help="less Sphinx output")


def book_main(args: argparse.Namespace) -> int:
    try:
        return build(ROOT, Path(args.out), Path(args.runs) if args.runs else None, quiet=args.quiet)
    except BookError as e:
        print(f"facelab book: error: {e}", file=sys.stderr)
        return 2
