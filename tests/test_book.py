"""facelab book: staging (toc, status page, notebook checks), the generated status page, the nbval
configuration, and real Jupyter Book builds of small books in tmp dirs (one that passes, one that fails)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from facelab.book import build as book_build
from facelab.book import project
from facelab.book import status as book_status

ROOT = Path(__file__).resolve().parents[1]
# a 1x1 red PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000"
    "00030101001825b4ee0000000049454e44ae426082")).decode()


def tiny_chapter(path: Path, *, error: bool = False, tag_error: bool = False, card: dict | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('out_dir = "../runs/default/01_universal_patches"', execution_count=1)
    params.metadata["tags"] = ["parameters"]
    fig = nbformat.v4.new_code_cell("show()", execution_count=2, outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})])
    res = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(0.5)", execution_count=3,
                                    outputs=[nbformat.v4.new_output("stream", name="stdout", text="0.5\n")])
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny patches chapter\n\nText {cite:p}`yang2020patches`."),
                params, fig, res]
    if card is not None:
        cc = nbformat.v4.new_code_cell("print(json.dumps(card))", execution_count=5, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="results card:\n" + json.dumps(card) + "\n")])
        cc.metadata["tags"] = ["results-card"]
        nb.cells.append(cc)
    if error:
        bad = nbformat.v4.new_code_cell("1/0", execution_count=4, outputs=[nbformat.v4.new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])
        if tag_error:
            bad.metadata["tags"] = ["raises-exception"]
        nb.cells.append(bad)
    nb.metadata["kernelspec"] = {"name": "facelab", "display_name": "Python (facelab)", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def copy_sources(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for item in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy2(ROOT / item, dst / item)
    shutil.copytree(ROOT / "book", dst / "book")
    (dst / "notebooks").mkdir()
    return dst


# ---------------------------------------------------------------------------------- staging

def test_toc_drops_missing_entries_and_empty_parts(tmp_path):
    (tmp_path / "book").mkdir()
    for f in ("intro.md", "a.md"):
        (tmp_path / "book" / f).write_text("# x\n")
    toc_path = tmp_path / "_toc.yml"
    toc_path.write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "A", "chapters": [{"file": "book/a"}, {"file": "notebooks/01_x"}]},
        {"caption": "B", "chapters": [{"file": "book/missing"}]}]}))
    toc, dropped = book_build.stage_toc(toc_path, tmp_path, [])
    assert dropped == ["notebooks/01_x", "book/missing"]
    assert toc["parts"] == [{"caption": "A", "chapters": [{"file": "book/a"}]}]
    with pytest.raises(book_build.BookError, match="02_y not in the table of contents"):
        book_build.stage_toc(toc_path, tmp_path, ["02_y"])


def test_repo_toc_lists_every_page_and_committed_notebook():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = book_build._toc_files(toc)
    pages = {f"book/{p.stem}" for p in (ROOT / "book").glob("*.md")} | {"book/status"}
    assert pages <= set(files) | {toc["root"]}, "a page in book/ is missing from _toc.yml"
    for stem in project.chapters(ROOT / "notebooks"):
        assert f"notebooks/{stem}" in files


def test_check_notebook_refuses_saved_errors(tmp_path):
    book_build.check_notebook(tiny_chapter(tmp_path / "ok.ipynb"))
    book_build.check_notebook(tiny_chapter(tmp_path / "tagged.ipynb", error=True, tag_error=True))
    with pytest.raises(book_build.BookError, match="code cell 4 has a saved error output.*ZeroDivisionError"):
        book_build.check_notebook(tiny_chapter(tmp_path / "bad.ipynb", error=True))
    (tmp_path / "junk.ipynb").write_text("{not json")
    with pytest.raises(book_build.BookError, match="junk.ipynb: not a valid notebook"):
        book_build.check_notebook(tmp_path / "junk.ipynb")


def test_stage_uses_executed_notebooks_of_a_run(tmp_path):
    root = copy_sources(tmp_path / "root")
    tiny_chapter(root / "notebooks" / "01_universal_patches.ipynb")
    runs = tmp_path / "runs"
    executed = tiny_chapter(runs / "01_universal_patches" / "01_universal_patches.ipynb")
    nb = nbformat.read(str(executed), as_version=4)
    nb.cells[0].source = "# Executed version"
    nbformat.write(nb, str(executed))
    (runs / "01_universal_patches" / "results.json").write_text(json.dumps({"created": "now", "paper_comparison": [
        {"quantity": "recall", "paper": 0.2, "ours": 0.25, "note": "Table 1"}]}))
    src = tmp_path / "src"
    log = book_build.stage(root, src, runs)
    assert any("rendering the executed notebook" in line for line in log)
    assert "# Executed version" in (src / "notebooks" / "01_universal_patches.ipynb").read_text()
    status = (src / "book" / "status.md").read_text()
    assert "## Chapter 1:" in status and "| recall | 0.2 | 0.25 | +0.05 | Table 1 |" in status
    toc = yaml.safe_load((src / "_toc.yml").read_text())
    assert "notebooks/01_universal_patches" in book_build._toc_files(toc)
    assert "book/part2" in book_build._toc_files(toc)


# ---------------------------------------------------------------------------------- status page

def test_status_page_without_reports():
    page = book_status.render([book_status.ChapterStatus(n, t) for n, t, _ in book_status.CHAPTERS])
    assert "No chapter has reported yet." in page
    assert page.count("not yet landed") == 5
    assert "| chapter |" not in page


def test_status_page_from_cards(tmp_path):
    nbdir = tmp_path / "notebooks"
    tiny_chapter(nbdir / "01_universal_patches.ipynb")
    tiny_chapter(nbdir / "04_attrs.ipynb")
    run = tmp_path / "runs" / "01_universal_patches"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"created": "2026-01-01T00:00:00Z", "device": "cpu",
                                                  "paper_comparison": [
        {"quantity": "recall, Easy | Patch-IoU", "paper": 2.7, "ours": 10.0, "note": "Table 1"},
        {"quantity": "looks like a face", "paper": "yes", "ours": "yes", "note": ""}]}))
    statuses = book_status.collect([tmp_path / "runs"], notebooks=nbdir)
    page = book_status.render(statuses)
    assert "| recall, Easy \\| Patch-IoU | 2.7 | 10 | +7.3 | Table 1 |" in page
    assert "| looks like a face | yes | yes | — |" in page
    assert "2026-01-01T00:00:00Z, cpu" in page
    assert "Chapter 4, *Facial attributes: accuracy and adversarial robustness*: landed" in page
    assert "no results card found (run `facelab run 4`)" in page
    assert page.count("not yet landed") == 3
    (run / "results.json").write_text("{broken")
    assert "unreadable results card" in book_status.render(book_status.collect([tmp_path / "runs"], notebooks=nbdir))


# ---------------------------------------------------------------------------------- nbval wiring

def test_pytest_config_runs_nbval_on_notebooks():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in cfg["testpaths"] and "tests" in cfg["testpaths"]
    opts = cfg["addopts"].split()
    assert "--nbval-lax" in opts and "--nbval-kernel-name=facelab" in opts
    assert "--nbval-sanitize-with=tests/nbval_sanitize.cfg" in opts


def test_sanitize_file_masks_volatile_text_only():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(patterns) >= 6

    def clean(s):
        for regex, repl in patterns:
            s = re.sub(regex, repl, s)
        return s

    assert clean("100%|██████████| 10/10 [00:03<00:00,  2.9it/s]") == clean(" 50%|█████     | 5/10 [00:01<00:01,  3.1it/s]").strip()
    assert clean("took 3.2 s") == clean("took 41 s")
    assert clean("<Foo at 0x7f3a2b1c9d80>") == clean("<Foo at 0x55aa2b1c0000>")
    assert clean("created 2026-01-02T03:04:05Z") == clean("created 2027-11-12T13:14:15Z")
    assert clean("saved /work/main/runs/a/x.json") == clean("saved /home/u/facelab/runs/b/x.json")
    for key in ("recall 0.734 precision 0.990", "P/R 99.0/73.4/12.1", "AFβ 0.123 at β=0.5"):
        assert clean(key) == key, key
    assert clean("recall 0.734") != clean("recall 0.735")


def test_committed_notebooks_follow_the_conventions():
    for path in project.chapters(ROOT / "notebooks").values():
        nb = nbformat.read(str(path), as_version=4)
        assert nb.metadata.get("kernelspec", {}).get("name") == "facelab", path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell not tagged parameters"
        assert "out_dir" in code[0].source
        assert any(c.get("outputs") for c in code), \
            f"{path.name}: committed without outputs; commit it executed at its defaults (book/contributing.md)"
        assert any(c.source.lstrip().startswith("# NBVAL_CHECK_OUTPUT") for c in code), \
            f"{path.name}: no key-result cell marked # NBVAL_CHECK_OUTPUT"
        book_build.check_notebook(path)


# ---------------------------------------------------------------------------------- real builds

def test_book_builds_with_a_chapter_status_and_bibliography(tmp_path):
    root = copy_sources(tmp_path / "root")
    tiny_chapter(root / "notebooks" / "01_universal_patches.ipynb")
    card_dir = root / "runs" / "default" / "01_universal_patches"
    card_dir.mkdir(parents=True)
    (card_dir / "results.json").write_text(json.dumps({"created": "2026-01-01T00:00:00Z", "paper_comparison": [
        {"quantity": "recall (Easy), Patch-IoU", "paper": 2.7, "ours": 3.1, "note": "Table 1"}]}))
    out = tmp_path / "out"
    assert book_build.build(root, out, runs=root / "runs" / "default", quiet=True) == 0
    html = out / "_build" / "html"
    chapter = (html / "notebooks" / "01_universal_patches.html").read_text()
    assert "Tiny patches chapter" in chapter and "<img" in chapter
    status = (html / "book" / "status.html").read_text()
    assert "recall (Easy), Patch-IoU" in status and "+0.4" in status
    refs = (html / "book" / "references.html").read_text()
    assert "WIDER FACE: a face detection benchmark" in refs and "accessorize to a crime" in refs.lower()
    # a part page whose notebook is absent from this root still builds (the toc drops only the notebook)
    assert "LIP" in (html / "book" / "part2.html").read_text()
    assert not (html / "notebooks" / "02_lip.html").exists()
    assert json.loads((out / "_build" / "book-build.json").read_text())["seconds"] > 0


def test_status_factors_out_the_note_common_to_every_row():
    st = book_status.ChapterStatus(1, "T", Path("notebooks/01_x.ipynb"), Path("runs/01_x/results.json"), {
        "paper_comparison": [
            {"quantity": "P", "paper": 99.4, "ours": 97.6, "note": "Baseline; ours: ssd, δ=0.7, 48 instances"},
            {"quantity": "R", "paper": 22.5, "ours": 83.3, "note": "Noise; ours: ssd, δ=0.7, 48 instances"}]})
    page = book_status.render([st])
    assert "Common to every row: ours: ssd, δ=0.7, 48 instances." in page
    assert "| P | 99.4 | 97.6 | -1.8 | Baseline |" in page and "| R | 22.5 | 83.3 | +60.8 | Noise |" in page
    # nothing long in common: notes stay whole
    st.card["paper_comparison"][1]["note"] = "Table 3"
    page = book_status.render([st])
    assert "Common to every row" not in page and "| Baseline; ours: ssd, δ=0.7, 48 instances |" in page


def test_status_shows_intervals_and_claim_verdicts():
    st = book_status.ChapterStatus(1, "T", Path("notebooks/01_x.ipynb"), Path("runs/01_x/results.json"), {
        "claims": {"obs1": {"title": "obs. 1", "verdict": "partly replicated"},
                   "table3": {"title": "Table 3", "verdict": "replicated"}},
        "paper_comparison": [
            {"quantity": "R", "paper": 22.5, "ours": 18.8, "interval": [7.3, 31.2], "note": "a"},
            {"quantity": "P", "paper": 99.4, "ours": 100.0, "interval": [None, None], "note": "b"}]})
    page = book_status.render([st])
    assert "| R | 22.5 | 18.8 [7.3, 31.2] | -3.7 | a |" in page and "| P | 99.4 | 100 | +0.6 | b |" in page
    assert "obs. 1: **partly replicated**; Table 3: **replicated**." in page


def test_status_reads_the_card_printed_by_the_committed_notebook(tmp_path):
    card = {"created": "2026-01-02T00:00:00Z", "device": "cpu", "paper_comparison": [
        {"quantity": "recall (All), noise w/ Patch-IoU", "paper": 1.4, "ours": 2.0, "note": "Table 1"}]}
    nbs = tmp_path / "notebooks"
    tiny_chapter(nbs / "01_universal_patches.ipynb", card=card)
    statuses = book_status.collect([], notebooks=nbs)
    assert statuses[0].card == card and statuses[0].card_path.suffix == ".ipynb"
    page = book_status.render(statuses)
    assert "noise w/ Patch-IoU" in page and "+0.6" in page and "committed default run" in page
    # a run folder's card wins over the committed one
    run = tmp_path / "runs" / "01_universal_patches"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"paper_comparison": [{"quantity": "q", "paper": 1, "ours": 1}]}))
    assert book_status.collect([tmp_path / "runs"], notebooks=nbs)[0].card_path == run / "results.json"
    # a tagged cell that printed no JSON is reported, not ignored
    tiny_chapter(nbs / "01_universal_patches.ipynb", card={})
    nb = json.loads((nbs / "01_universal_patches.ipynb").read_text())
    nb["cells"][-1]["outputs"] = []
    (nbs / "01_universal_patches.ipynb").write_text(json.dumps(nb))
    assert "printed no JSON" in book_status.collect([], notebooks=nbs)[0].error


def test_missing_reference_or_broken_notebook_fails_the_build(tmp_path, monkeypatch, capsys):
    from facelab import cli

    root = tmp_path / "root"
    (root / "book").mkdir(parents=True)
    for item in ("_config.yml", "references.bib"):
        shutil.copy2(ROOT / item, root / item)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (root / "book" / "intro.md").write_text("# Intro\n\nSee {cite:p}`no_such_key_2099`.\n")
    (root / "notebooks").mkdir()
    out = tmp_path / "out"
    assert cli.main(["book", "--root", str(root), "--out", str(out), "-q"]) != 0  # Sphinx warning -> error (-W)
    assert "FAILED" in capsys.readouterr().err
    # a saved error output is refused before Sphinx runs: exit code 2, naming the notebook and cell;
    # the root is found from the environment this time
    (root / "book" / "intro.md").write_text("# Intro\n")
    tiny_chapter(root / "notebooks" / "01_universal_patches.ipynb", error=True)
    monkeypatch.setenv(project.ENV_VAR, str(root))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["book", "--out", str(out), "-q"]) == 2
    assert "01_universal_patches.ipynb: code cell 4 has a saved error output" in capsys.readouterr().err


def test_nbval_config_fails_on_a_changed_key_result(tmp_path):
    """pytest with the project's configuration (nbval lax, sanitize file, facelab kernel) on two notebooks:
    one whose saved outputs match (up to sanitized text), one with a changed key result."""
    def cell(src, saved):
        return nbformat.v4.new_code_cell(src, execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text=saved)])

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "facelab", "display_name": "Python (facelab)", "language": "python"}
    nb.cells = [cell("# NBVAL_CHECK_OUTPUT\nprint(f'recall {0.25 + 0.5:.3f}')", "recall 0.750\n"),
                cell("# NBVAL_CHECK_OUTPUT\nprint('took 3.2 s at 0x7f3a2b1c9d80')", "took 41 s at 0x55aa2b1c0000\n"),
                cell("print('volatile', 12345)", "whatever was saved\n")]  # unmarked: not compared
    nbformat.write(nb, str(tmp_path / "a_same.ipynb"))
    nb.cells[0].outputs[0]["text"] = "recall 0.751\n"  # a changed key result
    nbformat.write(nb, str(tmp_path / "b_changed.ipynb"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-c",
                        str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout
    assert r.returncode == 1 and "1 failed, 5 passed" in out, out[-3000:] + r.stderr[-2000:]
    assert re.search(r"FAILED .*b_changed.ipynb::Cell 0", out), out[-3000:]
