"""facelab run: the project root, parameter validation before anything runs, papermill execution into a
run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from facelab import cli
from facelab.book.project import ENV_VAR, ProjectRootError, find_root
from facelab.book.runner import ParameterError, declared_parameters, validate

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


def make_root(root: Path) -> Path:
    """A project root: ``_config.yml`` and ``notebooks/``."""
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "_config.yml").write_text("title: tiny\n")
    return root


@pytest.fixture
def chapter(tmp_path, monkeypatch):
    """A project root with one chapter, found from the current folder (the root itself)."""
    make_root(tmp_path)
    nb = make_notebook(tmp_path / "notebooks" / "01_tiny.ipynb")
    monkeypatch.delenv(ENV_VAR, raising=False)
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


def test_cli_no_chapters_is_not_an_error(tmp_path, capsys):
    root = make_root(tmp_path / "empty")
    assert cli.main(["run", "all", "--root", str(root), "--out", str(tmp_path / "runs")]) == 0
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
    root = make_root(tmp_path / "project")
    make_notebook(root / "notebooks" / "02_broken.ipynb", params="out_dir = 'x'\n", body="raise RuntimeError('boom')\n")
    monkeypatch.setenv(ENV_VAR, str(root))
    assert cli.main(["run", "2", "--out", str(tmp_path / "runs")]) == 1
    assert "boom" in capsys.readouterr().err
    run = tmp_path / "runs" / "02_broken"
    assert (run / "02_broken.ipynb").is_file()
    assert json.loads((run / "parameters.json").read_text())["status"].startswith("failed")


# ---------------------------------------------------------------------------------- project root

def test_find_root_order_root_option_env_then_upward_search(tmp_path, monkeypatch):
    a, b = make_root(tmp_path / "a"), make_root(tmp_path / "b")
    deep = a / "notebooks" / "sub" / "dir"
    deep.mkdir(parents=True)
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(deep)
    assert find_root() == a.resolve()  # upward from the current folder
    monkeypatch.setenv(ENV_VAR, str(b))
    assert find_root() == b.resolve()  # the environment wins over the search
    assert find_root(a) == a.resolve()  # --root wins over both
    with pytest.raises(ProjectRootError, match=rf"--root {tmp_path}: .* is not a facelab project root "
                                               r"\(a folder holding _config.yml and notebooks/ was looked for\)"):
        find_root(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ProjectRootError, match=f"{ENV_VAR}=.*nowhere.*_config.yml and notebooks/"):
        find_root()


def test_cli_without_a_project_root_names_what_it_looked_for(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()  # notebooks/ alone (no _config.yml) is not a root
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    if any((p / "_config.yml").is_file() and (p / "notebooks").is_dir() for p in tmp_path.parents):
        pytest.skip("the temporary folder lies inside a project root")
    assert cli.main(["run", "1", "--list-parameters"]) == 2
    err = capsys.readouterr().err
    assert "no facelab project root found" in err and "_config.yml and notebooks/" in err
    assert f"--root DIR or set {ENV_VAR}=DIR" in err
    assert cli.main(["book", "--root", str(tmp_path)]) == 2
    assert "is not a facelab project root" in capsys.readouterr().err


def test_installed_cli_runs_from_another_folder_with_the_env_var(chapter, tmp_path):
    """``python -m facelab run`` started elsewhere (as from an installed package) finds the root via
    FACELAB_ROOT, and via --root."""
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, ENV_VAR: str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "facelab", "run", "1", "--list-parameters"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "01_tiny.ipynb:" in r.stdout and "number of steps" in r.stdout
    env.pop(ENV_VAR)
    r = subprocess.run([sys.executable, "-m", "facelab", "run", "1", "--root", str(tmp_path), "--list-parameters"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "01_tiny.ipynb:" in r.stdout, r.stderr


# ---------------------------------------------------------------------------------- comments

TRICKY = '''out_dir = "../runs/default/02_tricky"
iou_threshold = 0.5  # the victim's rule = SSD's (0.5); "quoted" too
epochs: int = 12     # paper: 100 = one epoch per step
name = "it's # not a comment"  # a string holding # and '
sizes = [16,   # first line of a list
         32]   # the list's help
seed = 0
'''


def test_parameters_with_apostrophes_and_equals_in_comments(tmp_path):
    nb = make_notebook(tmp_path / "notebooks" / "02_tricky.ipynb", params=TRICKY, body="print(iou_threshold)\n")
    d = declared_parameters(nb)
    assert list(d) == ["out_dir", "iou_threshold", "epochs", "name", "sizes", "seed"]
    assert (d["iou_threshold"].type, d["iou_threshold"].default) == ("float", "0.5")
    assert d["iou_threshold"].help == "the victim's rule = SSD's (0.5); \"quoted\" too"
    assert (d["epochs"].type, d["epochs"].help) == ("int", "paper: 100 = one epoch per step")
    assert d["name"].default == '"it\'s # not a comment"' and d["name"].help == "a string holding # and '"
    assert d["sizes"].help == "the list's help" and d["seed"].help == ""
    assert d["sizes"].default == "[16, 32]" and d["sizes"].type == "list"
    assert validate(nb, {"iou_threshold": "0.6", "epochs": "3"}) == {"iou_threshold": 0.6, "epochs": 3}


def test_cli_list_parameters_prints_every_parameter_with_type_default_and_help(tmp_path, capsys):
    root = make_root(tmp_path)
    make_notebook(root / "notebooks" / "02_tricky.ipynb", params=TRICKY, body="print(iou_threshold)\n")
    assert cli.main(["run", "2", "--root", str(root), "--list-parameters"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert list(lines) == ["out_dir", "iou_threshold", "epochs", "name", "sizes", "seed"]
    assert lines["iou_threshold"].split()[1:4] == ["float", "default", "0.5"]
    assert lines["iou_threshold"].endswith("# the victim's rule = SSD's (0.5); \"quoted\" too")
    assert lines["epochs"].split()[1:4] == ["int", "default", "12"]
    assert "set by the runner from --out" in lines["out_dir"]


def test_run_never_calls_papermills_parameter_parser(tmp_path, monkeypatch):
    """papermill's PythonTranslator.inspect misreads such comments; the run must not depend on it."""
    from papermill.translators import PythonTranslator

    def refuse(cls, cell):
        raise AssertionError("papermill's parameter parser was called")

    monkeypatch.setattr(PythonTranslator, "inspect", classmethod(refuse))
    root = make_root(tmp_path)
    make_notebook(root / "notebooks" / "02_tricky.ipynb", params=TRICKY,
                  body="print(iou_threshold, epochs, name, sizes)\n")
    monkeypatch.chdir(root)
    assert cli.main(["run", "2", "-p", "iou_threshold", "0.6", "-p", "epochs", "3", "--out", "runs/t"]) == 0
    executed = nbformat.read(str(root / "runs" / "t" / "02_tricky" / "02_tricky.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and executed.cells.index(injected[0]) == 2  # right after the parameters cell
    outs = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert "0.6 3 it's # not a comment [16, 32]" in "".join(outs)
    assert executed.metadata.papermill["parameters"]["epochs"] == 3
    assert executed.metadata.papermill["input_path"] == str((root / "notebooks" / "02_tricky.ipynb").resolve())


def test_chapter_config_built_from_defaults_and_overrides_before_any_kernel(tmp_path):
    """A registered chapter's Config is built from its defaults plus the -p values (lists -> tuples where the
    default is a tuple, out_dir from --out); its range checks raise ParameterError naming the parameter."""
    from facelab.book.runner import chapter_config, check_out_dir

    repo = Path(__file__).resolve().parents[1]
    nb = repo / "notebooks" / "01_universal_patches.ipynb"
    got = validate(nb, {"other_detectors": "[mtcnn]", "epochs": "3"})
    cfg = chapter_config(nb, got, tmp_path / "run")
    assert cfg.other_detectors == ("mtcnn",) and cfg.epochs == 3 and cfg.out_dir == str(tmp_path / "run")
    with pytest.raises(ParameterError, match="sweep_epochs=-1"):
        chapter_config(nb, {"sweep_epochs": -1})
    assert chapter_config(tmp_path / "notebooks" / "99_not_registered.ipynb", {"n": 1}) is None
    assert check_out_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    assert not (tmp_path / "a").exists() and not (tmp_path / "run").exists()  # checking writes nothing
