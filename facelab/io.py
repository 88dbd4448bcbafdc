"""Small I/O helpers shared by every layer: atomic writes, results cards, device choice."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "remove_stale_temps", "write_json", "finite", "results_card", "machine", "default_device", "Timer"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write` of ``names`` left in ``folder``
    (``.last.pt.XXXX`` after a kill during a checkpoint write); returns what was removed."""
    gone = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                gone.append(tmp)
    return gone


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def finite(x: Any) -> Any:
    """NaN/inf -> None, recursively (a results card is strict JSON)."""
    import math

    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (tensors and arrays become lists)."""
    with atomic_write(path) as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
        f.write("\n")
    return Path(path)


def versions() -> dict[str, str]:
    """Versions of the interpreter and the packages a result depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("facelab", "torch", "torchvision", "numpy", "opencv-python-headless", "scikit-image", "facenet-pytorch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    """What computed a result: CPU model, the kernels torch picked, threads and the variables that steer
    the math libraries (float kernels differ across CPUs: see book/contributing.md)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR", "ATEN_CPU_CAPABILITY",
                                           "ONEDNN_MAX_CPU_ISA", "CUBLAS_WORKSPACE_CONFIG") if k in os.environ},
    }
    if torch.cuda.is_available():
        out["cuda"] = {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version()}
    return out


def results_card(out_dir: str | os.PathLike, *, chapter: str, parameters: dict, seed: int | None,
                 timings: dict[str, float], metrics: dict, device: str, extra: dict | None = None) -> Path:
    """Write ``results.json`` (parameters, versions, machine, the device used, seed, timings, metrics)
    into ``out_dir``; NaN/inf become null."""
    card = {
        "chapter": chapter,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": parameters,
        "seed": seed,
        "device": str(device),
        "machine": machine(),
        "versions": versions(),
        "timings_s": timings,
        "metrics": metrics,
    }
    if extra:
        card.update(extra)
    return write_json(Path(out_dir) / "results.json", finite(card))


def default_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when a GPU is present, else ``"cpu"``."""
    if device not in (None, "", "auto"):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Timer:
    """Collects named wall-clock timings: ``with timer("attack"): ...``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
