"""Shared fixtures. Tests never need ../shared; the asset cache is the user's ($FACELAB_HOME)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """An empty FACELAB_HOME for tests that must not touch the real cache."""
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
