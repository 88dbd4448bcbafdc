"""``facelab train-patch``: WIDER-layout fixture, a tiny SLN victim from a train-detector-style checkpoint,
one epoch, resume, frozen victim, and two gloo processes under torchrun (gradient averaging)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facelab.attacks import init_patch, state_fingerprint
from facelab.experiments import train_patch as tp
from facelab import models
from test_attacks_patch import TinyDetector
from test_experiment_universal_patches import write_sln_checkpoint, write_wider_fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A WIDER-layout fixture (2 train images, 2 faces each) and a small SLN checkpoint as facelab
    train-detector writes it (random weights: the plumbing is under test, not the detector)."""
    tmp = tmp_path_factory.mktemp("train_patch")
    root = write_wider_fixture(tmp / "WIDER")
    ckpt = write_sln_checkpoint(tmp / "sln.pt")
    return tmp, root, ckpt


def _args(root, ckpt, out, epochs, *extra) -> list[str]:
    return ["train-patch", "--data-root", str(root), "--victim", "sln", "--victim-checkpoint", str(ckpt),
            "--epochs", str(epochs), "--max-images", "2", "--device", "cpu", "--out", str(out),
            "--delta", "0.5", "--score-margin-threshold", "0.3", "--lr", "0.1", *extra]


def _run(argv: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = (launcher or [sys.executable]) + ["-m", "facelab", *argv]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def _state(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


def test_cli_trains_writes_and_resumes(setup):
    tmp, root, ckpt = setup
    out = tmp / "run"
    ckpt_bytes = ckpt.read_bytes()
    r = _run(_args(root, ckpt, out, 1))
    assert r.returncode == 0, r.stderr[-3000:]
    patch = torch.load(out / "patch.pt", map_location="cpu", weights_only=True)
    assert isinstance(patch, torch.Tensor) and patch.shape == (3, 128, 128)
    assert 0 <= float(patch.min()) and float(patch.max()) <= 1
    assert not torch.equal(patch, init_patch("noise", 128, seed=0))  # it was optimised
    from facelab.data.images import load_image

    assert load_image(out / "patch.png").shape == (3, 128, 128)
    s1 = _state(out)
    assert s1["epoch"] == 1 and [h["epoch"] for h in s1["history"]] == [1]
    # the run state is one file (state.pt, the commit point); patch.pt/png and state.json are its exports
    committed = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    assert json.loads(committed["state"]) == s1 and torch.equal(committed["patch"], patch)
    assert committed["optimizer"]["state"] and not (out / "optimizer.pt").exists()
    assert s1["history"][0]["steps"] == 2 and s1["history"][0]["n_adversarial"] > 0
    # the victim is unchanged: its fingerprint before/after training (checked by the command) equals
    # that of the checkpoint loaded afresh here, and the checkpoint file is untouched
    assert s1["settings"]["victim_fingerprint"] == state_fingerprint(models.load("sln", "cpu", checkpoint=str(ckpt)))
    assert ckpt.read_bytes() == ckpt_bytes

    # a second invocation with --epochs 2 resumes at epoch 2 (epoch 1 is not redone)
    r = _run(_args(root, ckpt, out, 2, "--no-progress"))
    assert r.returncode == 0, r.stderr[-3000:]
    s2 = _state(out)
    assert s2["epoch"] == 2 and [h["epoch"] for h in s2["history"]] == [1, 2]
    assert s2["history"][0] == s1["history"][0]
    patch2 = torch.load(out / "patch.pt", map_location="cpu", weights_only=True)
    assert not torch.equal(patch2, patch) and 0 <= float(patch2.min()) and float(patch2.max()) <= 1
    # nothing left to do: the state stays, the patch is not touched
    r = _run(_args(root, ckpt, out, 2, "--no-progress"))
    assert r.returncode == 0 and torch.equal(torch.load(out / "patch.pt", weights_only=True), patch2)
    # resuming with other settings is refused with a clear message
    r = _run(_args(root, ckpt, out, 3, "--method", "patch_score", "--no-progress"))
    assert r.returncode == 2 and "method: 'patch_iou' there, 'patch_score' now" in r.stderr
    assert _state(out)["epoch"] == 2


def test_in_process_victim_unchanged_and_bad_input(setup, tmp_path):
    from facelab.cli import build_parser

    _, root, ckpt = setup
    victim = TinyDetector()
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    args = build_parser("train-patch").parse_args(
        _args(root, ckpt, tmp_path / "a", 1, "--method", "patch_score_focal", "--init", "faceA", "--no-progress"))
    state = tp.train_patch(args, victim=victim)
    assert state["epoch"] == 1
    for k, v in victim.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.load(tmp_path / "a" / "patch.pt", weights_only=True).shape == (3, 128, 128)
    bad = build_parser("train-patch").parse_args(_args(root, ckpt, tmp_path / "b", 1, "--init", "no/such.png"))
    with pytest.raises(ValueError, match="--init 'no/such.png'"):
        tp.train_patch(bad, victim=TinyDetector())
    bad = build_parser("train-patch").parse_args(_args(root, ckpt, tmp_path / "c", 1, "--delta", "0.2"))
    with pytest.raises(ValueError, match="below --delta"):
        tp.train_patch(bad, victim=TinyDetector())


def test_torchrun_two_gloo_processes_average_gradients(setup):
    """2 processes × batch 1 (one image each, gradients averaged by all_reduce) = 1 process × batch 2:
    every image here has the same adversarial-sample count, so both take the same Adam steps."""
    tmp, root, ckpt = setup
    ddp, single = tmp / "ddp", tmp / "single"
    r = _run(_args(root, ckpt, ddp, 2, "--no-progress"),
             launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(_args(root, ckpt, single, 2, "--no-progress", "--batch-size", "2"))
    assert r.returncode == 0, r.stderr[-3000:]
    sd, ss = _state(ddp), _state(single)
    assert sd["settings"]["world_size"] == 2 and sd["epoch"] == 2
    assert [h["steps"] for h in sd["history"]] == [2, 2]  # one step on each of the two processes
    assert [h["n_adversarial"] for h in sd["history"]] == [h["n_adversarial"] for h in ss["history"]]
    a = torch.load(ddp / "patch.pt", weights_only=True)
    b = torch.load(single / "patch.pt", weights_only=True)
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    assert not torch.allclose(a, init_patch("noise", 128, seed=0), atol=1e-2)


def test_the_attack_gets_delta_minus_m_and_the_iou_threshold(setup, tmp_path, monkeypatch):
    """Issue 19 survivor: train-patch must hand the attack δ − m (--score-margin-threshold), not δ."""
    from facelab.attacks import UniversalPatchAttack
    from facelab.cli import build_parser

    _, root, ckpt = setup
    seen = []
    init = UniversalPatchAttack.__init__

    def spy(self, model, method="patch_iou", **kw):
        seen.append((method, kw["score_threshold"], kw["iou_threshold"]))
        init(self, model, method, **kw)

    monkeypatch.setattr(UniversalPatchAttack, "__init__", spy)
    args = build_parser("train-patch").parse_args(
        _args(root, ckpt, tmp_path / "a", 1, "--method", "patch_score", "--iou-threshold", "0.45", "--no-progress"))
    tp.train_patch(args, victim=TinyDetector())
    assert seen == [("patch_score", 0.3, 0.45)]  # _args: --delta 0.5 --score-margin-threshold 0.3
