"""The book's "Replication status" page, generated from the chapters' results cards (never typed by hand).

A chapter's results card is the ``results.json`` its notebook writes with :func:`facelab.io.results_card`
into its run folder ``<runs>/<notebook stem>/``; the committed notebook (its default run) also prints
its card, as JSON, in the code cell tagged ``results-card``, which is read when no run folder has a card.
The comparison with the paper is the card's
``"paper_comparison"`` list of ``{"quantity", "paper", "ours", "note"}``; this module turns every card it
finds into one markdown table (paper value, ours, difference, the run it came from).

``python -m facelab.book.status [--root DIR] [RUNS ...]`` prints the page of the project root
(:func:`facelab.book.project.find_root`).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: (chapter number, title, source document) in book order; the notebook is ``notebooks/NN_*.ipynb``.
CHAPTERS: list[tuple[int, str, str]] = [
    (1, "Universal adversarial patches in face detection", "Yang, Wei, Zhang, Zhu (ECCV 2020)"),
    (2, "Localized instance perturbations (LIP) against single-stage face detectors", "Yang, Wiliem, Chen, Lovell"),
    (3, "Adversarial eyeglasses and the saliency-mask defense", "blog article on Sharif et al. and Hayes"),
    (4, "Facial attributes: accuracy and adversarial robustness", "Rozsa, Günther, Rudd, Boult"),
    (5, "Cleaning adversarial perturbations with a residual generative network", "Su, Sun, Fan, Lu, Liu (ICASSP 2019)"),
]


@dataclass
class ChapterStatus:
    number: int
    title: str
    notebook: Path | None = None
    card_path: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def comparison(self) -> list[dict[str, Any]]:
        rows = self.card.get("paper_comparison") or []
        return [r for r in rows if isinstance(r, dict)]


def chapter_notebook(number: int, notebooks: Path) -> Path | None:
    found = sorted(notebooks.glob(f"{number:02d}_*.ipynb"))
    return found[0] if found else None


def card_from_notebook(notebook: Path) -> dict[str, Any] | None:
    """The results card printed (as JSON on stdout) by the code cell tagged ``results-card``, if any."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "results-card" not in cell.get("metadata", {}).get("tags", []):
            continue
        text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                       if o.get("output_type") == "stream" and o.get("name") == "stdout")
        start = text.find("{")
        if start < 0:
            raise ValueError(f"{notebook}: the results-card cell printed no JSON (run the notebook first)")
        card, _ = json.JSONDecoder().raw_decode(text[start:])
        if not isinstance(card, dict):
            raise ValueError(f"{notebook}: the results-card cell printed JSON that is not an object")
        return card
    return None


def collect(search: list[Path], notebooks: Path) -> list[ChapterStatus]:
    """Each chapter's notebook and its results card: the first ``<dir>/<stem>/results.json`` of
    ``search``, else the card printed by the committed notebook's ``results-card`` cell."""
    out = []
    for number, title, _doc in CHAPTERS:
        st = ChapterStatus(number, title, chapter_notebook(number, notebooks))
        if st.notebook is not None:
            for d in search:
                card = Path(d) / st.notebook.stem / "results.json"
                if card.is_file():
                    st.card_path = card
                    try:
                        st.card = json.loads(card.read_text())
                        if not isinstance(st.card, dict):
                            raise ValueError("not a JSON object")
                    except (ValueError, OSError) as e:
                        st.card, st.error = {}, f"unreadable results card {card}: {e}"
                    break
            if st.card_path is None:
                try:
                    card = card_from_notebook(st.notebook)
                except ValueError as e:
                    card, st.error = None, str(e)
                if card is not None:
                    st.card, st.card_path = card, st.notebook
        out.append(st)
    return out


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def fmt(x: Any) -> str:
    """Numbers with up to 4 significant decimals; text as given, ``|`` escaped for the table."""
    if x is None or x == "":
        return "—"
    v = _num(x)
    if v is not None:
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def difference(paper: Any, ours: Any) -> str:
    p, o = _num(paper), _num(ours)
    return "—" if p is None or o is None else f"{o - p:+.4g}"


def _rel(path: Path, root: Path | None) -> str:
    """``path`` relative to the project ``root`` when it lies inside it, else as given."""
    if root is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _common_suffix(notes: list[str], min_len: int = 24) -> str:
    """The longest text every note ends with, cut at a separator (``;``), when long enough to factor out."""
    if len(notes) < 2:
        return ""
    tail = notes[0]
    for n in notes[1:]:
        k = 0
        while k < min(len(tail), len(n)) and tail[-1 - k] == n[-1 - k]:
            k += 1
        tail = tail[len(tail) - k:] if k else ""
    cut = tail.find(";")
    tail = tail[cut:] if cut >= 0 else (tail if all(n == tail for n in notes) else "")
    return tail if len(tail.strip(" ;,")) >= min_len else ""


def _interval(row: dict[str, Any]) -> str:
    iv = row.get("interval")
    if not (isinstance(iv, list) and len(iv) == 2 and all(_num(x) is not None for x in iv)):
        return ""
    return f" [{fmt(iv[0])}, {fmt(iv[1])}]"


def render(statuses: list[ChapterStatus], root: Path | None = None) -> str:
    """The markdown page: one table of every paper comparison, then notes on chapters without one.

    Paths inside the project ``root`` are shown relative to it."""
    lines = [
        "# Replication status",
        "",
        "This page is generated by `facelab book` (module `facelab.book.status`) from the results cards",
        "(`results.json`) that the chapter notebooks write into their run folders; nothing in it is typed by",
        "hand. *Paper* is the value quoted from the source document, *ours* the value of the run named above",
        "each table, *difference* is ours minus paper. Runs at the default (small, CPU) parameters are",
        "demonstrations of the method, not paper-scale replications: see [How to run at paper scale](paper_scale.md).",
        "",
    ]
    reported = [s for s in statuses if s.comparison]
    if not reported:
        lines += ["```{note}", "No chapter has reported yet.", "```", ""]
    for s in reported:
        lines += [f"## Chapter {s.number}: {s.title}", ""]
        if s.card_path is None:
            run = "—"
        elif s.card_path.suffix == ".ipynb":
            run = f"`{_rel(s.card_path, root)}` (committed default run)"
        else:
            run = f"`{_rel(s.card_path.parent, root)}`"
        extra = ", ".join(str(v) for v in (s.card.get("created"), s.card.get("device")) if v)
        lines += [f"Run: {run}" + (f" ({extra})" if extra else "") + ".", ""]
        notes = [str(r.get("note") or "") for r in s.comparison]
        common = _common_suffix(notes)
        if common:
            lines += [f"Common to every row: {fmt(common.strip(' ;,'))}.", ""]
        claims = s.card.get("claims") or {}
        if claims:
            lines += ["Claims (verdicts decided on the run's intervals): "
                      + "; ".join(f"{fmt(c.get('title'))}: **{fmt(c.get('verdict'))}**" for c in claims.values()) + ".", ""]
        lines += ["| quantity | paper | ours [interval] | difference | note |", "|---|---|---|---|---|"]
        for r, note in zip(s.comparison, notes):
            note = note[: len(note) - len(common)].strip(" ;,") if common else note
            lines.append(f"| {fmt(r.get('quantity'))} | {fmt(r.get('paper'))} | {fmt(r.get('ours'))}{_interval(r)} "
                         f"| {difference(r.get('paper'), r.get('ours'))} | {fmt(note)} |")
        lines.append("")
    lines += ["## Chapters", ""]
    for s in statuses:
        if s.notebook is None:
            state = "not yet landed"
        elif s.error:
            state = f"landed; {s.error}"
        elif s.card_path is None:
            state = (f"landed (`notebooks/{s.notebook.name}`); no results card found "
                     f"(run `facelab run {s.number}`)")
        elif not s.comparison:
            state = f"landed; results card `{_rel(s.card_path, root)}` has no paper comparison"
        else:
            state = f"landed; {len(s.comparison)} quantities compared, card `{_rel(s.card_path, root)}`"
        lines.append(f"- Chapter {s.number}, *{s.title}*: {state}.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from facelab.book.project import ProjectRootError, find_root

    parser = argparse.ArgumentParser(prog="python -m facelab.book.status", description="print the status page")
    parser.add_argument("runs", nargs="*", help="run folders to read results cards from (first match wins)")
    parser.add_argument("--root", default=None, help="project root (default: $FACELAB_ROOT or searched upward)")
    args = parser.parse_args(argv)
    try:
        root = find_root(args.root)
    except ProjectRootError as e:
        parser.error(str(e))
    print(render(collect([Path(a) for a in args.runs], notebooks=root / "notebooks"), root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
