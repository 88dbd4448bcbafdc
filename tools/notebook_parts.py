"""What every chapter notebook generator (tools/make_chapterN_notebook.py) shares: the tagged parameters and
results-card cells, the reproduction-check cell and the notebook's kernel metadata (book/contributing.md, § 2)."""

from __future__ import annotations

from pathlib import Path

import nbformat

from facelab.experiments.base import parameters_cell

CHECK = r"""# NBVAL_CHECK_OUTPUT
print(exp.check_reproduction())"""


def parameters(config_class: type, out_dir: str) -> nbformat.NotebookNode:
    """The first code cell, tagged ``parameters`` (papermill), generated from the chapter's ``Config``."""
    cell = nbformat.v4.new_code_cell(parameters_cell(config_class, out_dir=out_dir))
    cell.metadata["tags"] = ["parameters"]
    return cell


def results_card(source: str) -> nbformat.NotebookNode:
    """The cell that writes the results card, tagged for the status page and hidden in the book."""
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["results-card", "hide-output"]
    return cell


def write_notebook(cells: list, path: Path) -> None:
    """Write ``cells`` as a notebook on the ``facelab`` kernel, without outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python (facelab)", "language": "python", "name": "facelab"},
                   "language_info": {"name": "python"}}
    nb.cells = cells
    nbformat.write(nb, path)
    print(f"wrote {path} ({len(nb.cells)} cells, no outputs)")
