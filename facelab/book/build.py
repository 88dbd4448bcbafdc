"""``facelab book``: the HTML book (Jupyter Book 1.x) of the project root's sources.

The project root is ``--root``, else ``$FACELAB_ROOT``, else the nearest folder at or above the current
one holding ``_config.yml`` and ``notebooks/`` (:func:`facelab.book.project.find_root`).
``facelab book`` never builds the root in place: it stages a copy of the sources into
``<out>/_build/src`` where it (1) swaps in the executed notebooks of ``--runs DIR`` when given,
(2) generates ``book/status.md`` from the results cards (:mod:`facelab.book.status`), (3) writes a
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

from facelab.book.project import ProjectRootError, chapters, find_root

_SUFFIXES = (".md", ".ipynb", ".rst", ".myst")
MATHJAX_ASSET = "mathjax/tex-svg-full.js"  # facelab.assets name; also its path below the HTML's _static/


class BookError(RuntimeError):
    """The book's sources are inconsistent (toc, notebooks); raised before Sphinx runs."""


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
    from facelab.book import status

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
    statuses = status.collect(search, notebooks=root / "notebooks")
    (src / "book" / "status.md").write_text(status.render(statuses, root), encoding="utf-8")
    toc, dropped = stage_toc(root / "_toc.yml", src, list(staged))
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if dropped:
        log.append(f"not yet landed (left out of the toc): {', '.join(dropped)}")
    return log


def build(root: Path, out: Path | None = None, runs: Path | None = None, quiet: bool = False) -> int:
    """Stage the sources of the project ``root`` and build ``<out>/_build/html`` (``out`` default: ``root``);
    0 on success, Sphinx's exit code otherwise."""
    out = Path(out if out is not None else root).resolve()
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


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=None,
                   help="render the executed notebooks and results cards of this run folder (e.g. runs/main) "
                        "instead of the committed notebooks")
    p.add_argument("--out", default=None, help="folder that receives _build/html (default: the project root)")
    p.add_argument("--root", default=None,
                   help="project root holding _config.yml and notebooks/ (default: $FACELAB_ROOT, else searched "
                        "upward from the current folder)")
    p.add_argument("-q", "--quiet", action="store_true", help="less Sphinx output")


def main(args: argparse.Namespace) -> int:
    try:
        root = find_root(args.root)
        return build(root, Path(args.out) if args.out else root, Path(args.runs) if args.runs else None,
                     quiet=args.quiet)
    except (BookError, ProjectRootError) as e:
        print(f"facelab book: error: {e}", file=sys.stderr)
        return 2
