"""Run a chapter notebook headless with papermill, parameters validated before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


class ParameterError(ValueError):
    """An unknown parameter name or a value of the wrong type for a chapter notebook."""


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The notebook's ``parameters`` cell: name -> {inferred_type_name, default, help}."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list,), "dict": (dict,)}


def validate(notebook: Path, overrides: dict[str, str]) -> dict[str, Any]:
    """Parse each override as YAML and check it against the declared parameter's type."""
    declared = declared_parameters(notebook)
    parsed: dict[str, Any] = {}
    for name, raw in overrides.items():
        if name not in declared:
            raise ParameterError(f"{notebook.name}: unknown parameter {name!r}; it declares {', '.join(declared)}")
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        tname = declared[name].get("inferred_type_name") or "None"
        default = declared[name].get("default")
        ok = _TYPES.get(tname)
        if tname == "None" and default not in (None, "None"):
            ok = None
        if ok is not None and not isinstance(value, ok) or (tname in ("int", "float") and isinstance(value, bool)):
            raise ParameterError(f"{notebook.name}: parameter {name!r} expects {tname} (default {default}), got {raw!r}")
        if tname == "str" and not isinstance(value, str):
            value = str(raw)
        parsed[name] = value
    return parsed


def run_chapter(notebook: Path, out_dir: Path, overrides: dict[str, str], kernel: str = "facelab") -> Path:
    """Execute ``notebook`` into ``out_dir/<name>`` with ``out_dir`` passed as parameter ``out_dir``."""
    import papermill

    params = validate(notebook, overrides)
    if "out_dir" in declared_parameters(notebook):
        params.setdefault("out_dir", str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / notebook.name
    papermill.execute_notebook(str(notebook), str(out_nb), parameters=params, kernel_name=kernel,
                               cwd=str(notebook.parent), progress_bar=True)
    (out_dir / "parameters.json").write_text(json.dumps(params, indent=2) + "\n")
    return out_nb
