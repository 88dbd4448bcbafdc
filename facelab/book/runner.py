"""Run a chapter notebook headless with papermill, parameters validated before anything runs.

A chapter's parameters are the assignments of its cell tagged ``parameters`` (papermill's convention).
Each parameter's type comes from its annotation (``epochs: int = 100``) or else from its default value
(``epochs = 100`` -> int, ``lr = 0.01`` -> float, ``root = None`` -> anything). An override given on
the command line (``-p epochs 3``) is parsed as YAML and must fit that type; an unknown name or a
wrong type raises :class:`ParameterError` before any file is written or any kernel started.

The parameters cell is read with Python's own parser (``ast`` and ``tokenize``), never with papermill's
line-by-line regex (``PythonTranslator.inspect``), which drops a parameter whose comment holds an ``=``
(``iou_threshold = 0.5  # the victim's rule = SSD's``) and cuts a string default at a ``#`` inside it.
For the same reason :func:`run_chapter` injects the parameters and executes the notebook with
papermill's pieces rather than ``papermill.execute_notebook``, which runs that inspection whenever
parameters are given (and warns about every name it dropped).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facelab.io import atomic_write

__all__ = ["ParameterError", "Parameter", "declared_parameters", "parse_parameters", "validate", "chapter_config",
           "check_out_dir", "run_chapter", "RESERVED"]

#: parameters the runner sets itself (``--out`` decides where a chapter writes).
RESERVED = ("out_dir",)


class ParameterError(ValueError):
    """An unknown parameter name or a value of the wrong type for a chapter notebook."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # int | float | bool | str | list | dict | any
    default: str  # source text of the default (normalised to one line when it spans several)
    optional: bool  # None is accepted
    help: str = ""


_SIMPLE = {"int", "float", "bool", "str", "list", "dict", "tuple"}


def _type_of_annotation(annotation: str) -> tuple[str, bool]:
    """``'int'`` -> (int, False); ``'str | None'`` / ``'Optional[str]'`` -> (str, True); else (any, True)."""
    ann = annotation.replace(" ", "").replace("typing.", "")
    optional = "None" in ann or ann.startswith("Optional[")
    if ann.startswith("Optional[") and ann.endswith("]"):
        ann = ann[len("Optional["):-1]
    parts = [p for p in ann.split("|") if p != "None"]
    base = parts[0].split("[")[0].lower() if len(parts) == 1 else "any"
    if base == "tuple":
        base = "list"
    return (base, optional) if base in _SIMPLE else ("any", True)


def _type_of_default(default: str) -> tuple[str, bool]:
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return "any", True  # an expression (Path(...), os.environ...): the notebook checks it itself
    if value is None:
        return "any", True
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                       ("dict", dict)):
        if isinstance(value, kind):
            return name, False
    return "any", True


def _comments(source: str) -> dict[int, str]:
    """Line number -> text of the ``#`` comment on that line (tokens, so ``#`` or quotes in strings and
    apostrophes in comments are read right)."""
    import io
    import tokenize

    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def parse_parameters(source: str, where: str = "parameters cell") -> dict[str, Parameter]:
    """Top-level ``name = value`` / ``name: type = value`` assignments of a parameters cell's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ParameterError(f"{where}: line {e.lineno}: not valid Python: {e.msg}") from None
    comments = _comments(source)
    out: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value = node.targets[0].id, None, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, annotation, value = node.target.id, ast.unparse(node.annotation), node.value
        else:
            continue  # imports, expressions: not parameters
        segment = ast.get_source_segment(source, value)  # as written; a multi-line value on one line
        default = segment if segment and "\n" not in segment else ast.unparse(value)
        tname, optional = _type_of_annotation(annotation) if annotation else _type_of_default(default)
        # help: the comment at the end of the assignment, else on its first line (a multi-line value)
        help_text = comments.get(node.end_lineno) or comments.get(node.lineno, "")
        out[name] = Parameter(name, tname, default, optional, help_text)
    return out


def declared_parameters(notebook: str | Path) -> dict[str, Parameter]:
    """The notebook's cell tagged ``parameters`` as name -> :class:`Parameter` (empty when it has none)."""
    import nbformat

    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: no such notebook")
    nb = nbformat.read(str(notebook), as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return parse_parameters(cell.source, f"{notebook.name}: cell {i} (parameters)")
    return {}


def _coerce(p: Parameter, raw: Any, where: str) -> Any:
    value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    if value is None and (p.optional or p.type == "any"):
        return None
    bad = ParameterError(f"{where}: parameter {p.name!r} expects {p.type}{' or None' if p.optional else ''} "
                         f"(default {p.default}), got {raw!r}")
    if p.type == "any":
        return value
    if p.type == "str":
        return raw if isinstance(raw, str) else str(value)  # "-p name 3" keeps the text "3"
    if p.type == "bool":
        if isinstance(value, bool):
            return value
        raise bad
    if p.type == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if p.type == "float":
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if p.type == "list" and isinstance(value, (list, tuple)):
        return list(value)
    if p.type == "dict" and isinstance(value, dict):
        return value
    raise bad


def validate(notebook: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Check ``overrides`` (name -> YAML text or value) against the notebook's parameters; return parsed values."""
    notebook = Path(notebook)
    declared = declared_parameters(notebook)
    parsed: dict[str, Any] = {}
    for name, raw in overrides.items():
        if name in RESERVED:
            raise ParameterError(f"{notebook.name}: parameter {name!r} is set by the runner; use --out instead")
        if name not in declared:
            known = ", ".join(n for n in declared if n not in RESERVED) or "(no parameters)"
            raise ParameterError(f"{notebook.name}: unknown parameter {name!r}; it declares {known}")
        parsed[name] = _coerce(declared[name], raw, notebook.name)
    return parsed


def detector_names() -> list[str]:
    """Zoo names whose builder returns a :class:`~facelab.models.base.FaceDetector` (read from the builders'
    return annotations: no weights are loaded)."""
    import inspect

    from facelab.models import MODELS
    from facelab.models.base import FaceDetector

    out = []
    for name, target in MODELS.items():
        module_name, fn_name = target.split(":")
        module = importlib.import_module(module_name)
        ret = inspect.signature(getattr(module, fn_name)).return_annotation
        ret = getattr(module, ret, None) if isinstance(ret, str) else ret
        if isinstance(ret, type) and issubclass(ret, FaceDetector):
            out.append(name)
    return out


def _check_model_names(cfg: Any, where: str) -> None:
    """A chapter's detector parameters (``victim``, ``other_detectors``, ``black_box``) name detectors that
    exist: a zoo detector, ``module:callable``, or for ``victim`` a trained arch with ``victim_checkpoint``."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    wanted = [n for n in ("victim", "other_detectors", "black_box") if n in fields]
    if not wanted:
        return
    zoo = detector_names()
    from facelab.models.detection import ARCHS

    for field in wanted:
        value = getattr(cfg, field)
        for name in ([value] if isinstance(value, str) else list(value or ())):
            if not isinstance(name, str) or name in zoo or ":" in name:
                continue
            if field == "victim" and name in (*ARCHS, "trained") and getattr(cfg, "victim_checkpoint", None):
                continue
            hint = (f"; a trained {name!r} detector needs -p victim_checkpoint runs/NAME/model.pt"
                    if field == "victim" and name in (*ARCHS, "trained") else "")
            raise ParameterError(f"{where}: parameter {field!r}: {name!r} is not a face detector; choose from "
                                 f"{', '.join(zoo)}, or give 'module:callable'{hint}")


def chapter_config(notebook: str | Path, params: dict[str, Any], out_dir: str | Path | None = None) -> Any:
    """The chapter's ``Config`` built from its defaults plus ``params`` (from :func:`validate`), ``out_dir`` from
    ``--out``: its ``__post_init__`` checks the ranges (``epochs >= 0``, ``0 < delta <= 1``, ...) and the
    detector names are checked against the zoo, all before a kernel starts or a folder is written. Raises
    :class:`ParameterError` naming the parameter; None for a notebook that is not a registered chapter."""
    from facelab.experiments import CHAPTERS

    notebook = Path(notebook)
    module = CHAPTERS.get(notebook.stem)
    if module is None:
        return None
    config_class = importlib.import_module(module).Config
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values: dict[str, Any] = {}
    for name, value in params.items():
        f = fields.get(name)
        if f is None:
            raise ParameterError(f"{notebook.name}: parameter {name!r} is not a field of {config_class.__name__}")
        default = f.default if f.default is not dataclasses.MISSING else None
        values[name] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    if out_dir is not None and "out_dir" in fields:
        values["out_dir"] = str(out_dir)
    try:
        cfg = config_class(**values)
    except (ValueError, TypeError) as e:
        raise ParameterError(f"{notebook.name}: {e}") from None
    _check_model_names(cfg, notebook.name)
    return cfg


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` (absolute) after checking that it is, or can become, a writable folder; raises
    :class:`ParameterError` naming ``--out`` otherwise. Writes nothing."""
    out_dir = Path(out_dir).resolve()
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ParameterError(f"--out {out_dir}: {probe} is a file, not a folder; give a folder for the run")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ParameterError(f"--out {out_dir}: {probe} is not writable; give a folder you can write to")
    return out_dir


def _absolute_if_path(value: Any) -> Any:
    """A relative path that exists from the caller's folder, made absolute (the kernel runs in notebooks/)."""
    if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _execute(notebook: Path, out_nb: Path, params: dict[str, Any], kernel: str, progress_bar: bool) -> None:
    """``papermill.execute_notebook`` minus its parameter inspection (see the module docstring): inject
    ``params`` after the cell tagged ``parameters``, run in the notebook's folder, save into ``out_nb``
    (also after every cell), raise ``PapermillExecutionError`` on a failing cell."""
    from papermill.engines import papermill_engines
    from papermill.execute import prepare_notebook_metadata, raise_for_execution_errors, remove_error_markers
    from papermill.iorw import load_notebook_node, write_ipynb
    from papermill.parameterize import parameterize_notebook
    from papermill.utils import chdir

    nb = load_notebook_node(str(notebook))
    if params:
        nb = parameterize_notebook(nb, params, kernel_name=kernel, language="python")
    nb = remove_error_markers(prepare_notebook_metadata(nb, str(notebook), str(out_nb)))
    with chdir(str(notebook.parent)):
        nb = papermill_engines.execute_notebook_with_engine(
            None, nb, kernel_name=kernel, input_path=str(notebook), output_path=str(out_nb),
            progress_bar=progress_bar, log_output=False, start_timeout=60, stdout_file=None, stderr_file=None)
    raise_for_execution_errors(nb, str(out_nb))
    write_ipynb(nb, str(out_nb))


def run_chapter(notebook: str | Path, out_dir: str | Path, overrides: dict[str, Any], kernel: str = "facelab",
                progress_bar: bool = True) -> Path:
    """Execute ``notebook`` into ``out_dir/<notebook name>``; ``out_dir`` is passed as parameter ``out_dir``.

    String parameters naming an existing file or folder relative to the current folder (``-p wider_root
    data/WIDER``) are made absolute, since the kernel runs in ``notebooks/``.

    The run folder receives the executed notebook, ``parameters.json`` (what was overridden, plus the
    runner's record) and whatever the notebook writes there (its ``results.json`` card). Raises
    :class:`ParameterError` before anything is written (a bad name, type or range, an unknown detector, an
    ``out_dir`` that is a file or not writable); papermill's ``PapermillExecutionError`` when a
    cell fails (the executed notebook, with the error, is still saved for inspection).
    """
    notebook = Path(notebook).resolve()
    params = validate(notebook, overrides)
    out_dir = check_out_dir(out_dir)  # absolute: papermill runs in notebooks/, a relative path would land there
    params = {k: _absolute_if_path(v) for k, v in params.items()}
    chapter_config(notebook, params, out_dir)  # the chapter's own range checks, before any kernel starts
    if "out_dir" in declared_parameters(notebook):
        params["out_dir"] = str(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ParameterError(f"--out {out_dir}: cannot create the run folder ({e.strerror or e}); give a folder "
                             "you can write to") from None
    out_nb = out_dir / notebook.name
    record = {"notebook": notebook.name, "kernel": kernel, "overrides": params,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.perf_counter()
    try:
        _execute(notebook, out_nb, params, kernel, progress_bar)
        record["status"] = "ok"
    except Exception as e:
        record["status"] = f"failed: {type(e).__name__}"
        raise
    finally:
        record["wall_s"] = round(time.perf_counter() - t0, 2)
        with atomic_write(out_dir / "parameters.json") as f:
            f.write(json.dumps(record, indent=2) + "\n")
    return out_nb
