"""facelab run: parameter validation before anything runs, papermill execution into a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from facelab import book_cli, cli
from facelab.runner import ParameterError, declared_parameters, validate

PARAMS = '''n = 3  # number of steps
lr = 0.5
name = "abc"
flag = True
root = None
sizes = [16, 32]
opts: dict = {"a": 1}
maybe: str | None = None
out_dir = "../runs/default/01_tiny"
'''

BODY = '''import json, os
from facelab.io import atomic_write
os.makedirs(out_dir, exist_ok=True)
with atomic_write(os.path.join(out_dir, "results.json")) as f:
    json.dump({"chapter": "01_tiny", "n": n, "lr": lr, "name": name, "root": root, "cwd": os.getcwd(),
               "paper_comparison": [{"quantity": "q", "paper": 1.0, "ours": n * lr, "note": ""}]}, f)
# NBVAL_CHECK_OUTPUT
print(n * 2)
'''


def make_notebook(path: Path, params: str = PARAMS, body: str = BODY) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny chapter"), cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "facelab", "display_name": "Python (facelab)", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def chapter(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nb = make_notebook(nbdir / "01_tiny.ipynb")
    monkeypatch.setattr(book_cli, "NOTEBOOKS", nbdir)
    monkeypatch.chdir(tmp_path)
    return nb


def test_declared_types_from_defaults_and_annotations(chapter):
    d = declared_parameters(chapter)
    assert {k: v.type for k, v in d.items()} == {
        "n": "int", "lr": "float", "name": "str", "flag": "bool", "root": "any", "sizes": "list",
        "opts": "dict", "maybe": "str", "out_dir": "str"}
    assert d["maybe"].optional and not d["n"].optional
    assert d["n"].help == "number of steps"


def test_validate_parses_and_coerces(chapter):
    got = validate(chapter, {"n": "7", "lr": "1e-3", "name": "3", "flag": "false", "root": "/data/x",
                             "sizes": "[8, 16, 64]", "opts": "{b: 2}", "maybe": "null"})
    assert got == {"n": 7, "lr": 0.001, "name": "3", "flag": False, "root": "/data/x", "sizes": [8, 16, 64],
                   "opts": {"b": 2}, "maybe": None}
    assert isinstance(validate(chapter, {"lr": "2"})["lr"], float)


@pytest.mark.parametrize("name,value,match", [
    ("epochs", "3", "unknown parameter 'epochs'"),
    ("n", "abc", "expects int"),
    ("n", "2.5", "expects int"),
    ("n", "true", "expects int"),
    ("lr", "fast", "expects float"),
    ("flag", "3", "expects bool"),
    ("sizes", "5", "expects list"),
    ("opts", "[1]", "expects dict"),
    ("out_dir", "/tmp/x", "set by the runner"),
])
def test_validate_rejects(chapter, name, value, match):
    with pytest.raises(ParameterError, match=match):
        validate(chapter, {name: value})


def test_cli_bad_parameter_exits_2_and_writes_nothing(chapter, tmp_path, capsys):
    assert cli.main(["run", "1", "-p", "n", "lots", "--out", "runs/x"]) == 2
    assert "01_tiny.ipynb: parameter 'n' expects int" in capsys.readouterr().err
    assert cli.main(["run", "1", "-p", "nope", "1", "--out", "runs/x"]) == 2
    assert cli.main(["run", "9", "--out", "runs/x"]) == 2
    assert "unknown chapter '9'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_list_parameters(chapter, capsys):
    assert cli.main(["run", "01_tiny", "--list-parameters"]) == 0
    out = capsys.readouterr().out
    assert "n " in out and "int" in out and "number of steps" in out


def test_cli_no_chapters_is_not_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(book_cli, "NOTEBOOKS", tmp_path / "empty")
    assert cli.main(["run", "all", "--out", str(tmp_path / "runs")]) == 0
    assert "no chapter notebook has landed" in capsys.readouterr().out


def test_cli_runs_notebook_into_run_folder(chapter, tmp_path):
    # a relative --out must resolve against the caller's cwd, not papermill's cwd (notebooks/)
    assert cli.main(["run", "1", "-p", "n", "5", "-p", "lr", "2", "--out", "runs/x"]) == 0
    run = tmp_path / "runs" / "x" / "01_tiny"
    card = json.loads((run / "results.json").read_text())
    assert card["n"] == 5 and card["lr"] == 2.0 and card["name"] == "abc"
    assert Path(card["cwd"]).resolve() == chapter.parent.resolve()
    executed = nbformat.read(str(run / "01_tiny.ipynb"), as_version=4)
    outs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("text", "").strip() == "10" for o in outs)
    rec = json.loads((run / "parameters.json").read_text())
    assert rec["status"] == "ok" and rec["overrides"]["n"] == 5
    assert rec["overrides"]["out_dir"] == str(run.resolve())
    assert not (tmp_path / "notebooks" / "runs").exists()


def test_cli_relative_data_paths_resolve_against_the_callers_folder(chapter, tmp_path):
    (tmp_path / "data" / "WIDER").mkdir(parents=True)
    assert cli.main(["run", "1", "-p", "root", "data/WIDER", "-p", "name", "not/a/path", "--out", "runs/y"]) == 0
    card = json.loads((tmp_path / "runs" / "y" / "01_tiny" / "results.json").read_text())
    assert card["root"] == str((tmp_path / "data" / "WIDER").resolve())
    assert card["name"] == "not/a/path"  # text that names no existing path is left alone


def test_cli_failing_notebook_exits_1_and_keeps_output(tmp_path, monkeypatch, capsys):
    nbdir = tmp_path / "notebooks"
    make_notebook(nbdir / "02_broken.ipynb", params="out_dir = 'x'\n", body="raise RuntimeError('boom')\n")
    monkeypatch.setattr(book_cli, "NOTEBOOKS", nbdir)
    assert cli.main(["run", "2", "--out", str(tmp_path / "runs")]) == 1
    assert "boom" in capsys.readouterr().err
    run = tmp_path / "runs" / "02_broken"
    assert (run / "02_broken.ipynb").is_file()
    assert json.loads((run / "parameters.json").read_text())["status"].startswith("failed")
