import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_environment_yml_matches_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = {}
    for spec in pip_section:
        name, version = spec.split("==")
        conda[name.lower().replace("_", "-")] = version
    assert conda == _lock()
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_lock_pins_the_torch_pair_and_key_packages():
    lock = _lock()
    assert lock["torch"] == "2.15.0" and lock["torchvision"] == "0.29.2"
    assert lock["facenet-pytorch"] == "2.5.3"
    assert int(lock["opencv-python-headless"].split(".")[0]) < 5
    assert lock["jupyter-book"].startswith("1.")


def test_installed_versions_match_lock():
    import importlib.metadata as md

    lock = _lock()
    for pkg in ("torch", "torchvision", "numpy", "jupyter-book", "papermill", "nbval", "opencv-python-headless"):
        assert md.version(pkg) == lock[pkg], pkg


def test_torchvision_ops_nms_runs_against_torch():
    import torchvision
    from torchvision.ops import box_iou, nms

    assert torch.__version__.startswith("2.15.0") and torchvision.__version__.startswith("0.29.2")
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert box_iou(boxes[:1], boxes[1:2]).item() == torch.tensor(81 / 119).item()


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "facelab", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("assets", "run", "book"):
        assert re.search(rf"^\s+{cmd}\s", out.stdout, re.M), out.stdout
    entry = Path(sys.executable).with_name("facelab")
    out2 = subprocess.run([str(entry), "assets", "--help"], capture_output=True, text=True)
    assert out2.returncode == 0 and "fetch" in out2.stdout and "verify" in out2.stdout


def test_cli_unknown_command_fails():
    out = subprocess.run([sys.executable, "-m", "facelab", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_project_kernel_is_inside_the_venv():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("facelab")
    assert Path(spec.resource_dir).is_relative_to(Path(sys.prefix))
    assert Path(spec.argv[0]) == Path(sys.executable)
