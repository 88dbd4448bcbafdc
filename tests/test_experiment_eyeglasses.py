"""Chapter 3: the FRS head (incl. the VGG16 / VGG-Face full-scale path), a tiny end-to-end run, the PubFig
entry point, the notebook's parameters, and a broken result failing the reproduction check."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from facelab.experiments import base
from facelab.experiments import eyeglasses as eg
from facelab.models.identity_head import IdentityClassifier, VGG16Features, accuracy, load_backbone, train_head

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_eyeglasses.ipynb"


class Flat(nn.Module):
    """A 'backbone': mean colour of 4 quadrants (12 features), with a ReLU module for the guided rule."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        h, w = x.shape[-2:]
        q = [x[..., :h // 2, :w // 2], x[..., :h // 2, w // 2:], x[..., h // 2:, :w // 2], x[..., h // 2:, w // 2:]]
        return self.act(torch.cat([t.mean((2, 3)) for t in q], 1) * self.scale)


def test_head_trains_on_separable_features_and_backbone_stays_frozen():
    torch.manual_seed(0)
    f = torch.cat([torch.randn(20, 12) + 4 * torch.eye(12)[k % 3] for k in range(3)])
    y = torch.arange(3).repeat_interleave(20)
    m = IdentityClassifier(Flat(), 12, ["a", "b", "c"], hidden=16)
    losses = train_head(m, f, y, epochs=30, lr=0.05, seed=0)
    assert losses[-1] < losses[0] and bool(accuracy(m, f, y).all())
    assert not m.backbone.training and not m.training and not any(p.requires_grad for p in m.parameters())
    assert torch.allclose(m.feat_mean, f.mean(0))
    # same seed, same head
    m2 = IdentityClassifier(Flat(), 12, ["a", "b", "c"], hidden=16)
    train_head(m2, f, y, epochs=30, lr=0.05, seed=0)
    assert torch.equal(m.head[1].weight, m2.head[1].weight)
    out = m(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="labels: must lie"):
        train_head(m, f, y + 5)
    with pytest.raises(ValueError, match="at least 2 identities"):
        IdentityClassifier(Flat(), 12, ["a"])


def test_vgg16_backbone_reads_vgg_face_weights_by_path(tmp_path):
    ref = VGG16Features()
    torch.manual_seed(1)
    state = {}
    for i, conv in enumerate(m for m in ref.features if isinstance(m, nn.Conv2d)):
        state[f"conv{i}.weight"] = torch.randn_like(conv.weight) * 0.01
        state[f"conv{i}.bias"] = torch.randn_like(conv.bias)
    state["fc6.weight"] = torch.randn(4, 4)  # FC layers in the file are ignored (not 4-D)
    path = tmp_path / "vgg_face.pth"
    torch.save(state, path)
    net = load_backbone("vgg16", weights=str(path))
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and torch.equal(convs[12].weight, state["conv12.weight"])
    assert not any(p.requires_grad for p in net.parameters())
    net.input_size = 32  # a small input to keep the test fast: pool5 is then 1x1
    assert net(torch.rand(1, 3, 20, 20)).shape == (1, 512)
    bad = dict(state)
    bad["conv3.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="conv3.weight has shape"):
        load_backbone("vgg16", weights=str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="file not found"):
        load_backbone("vgg16", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="backbone_weights"):
        load_backbone("vgg16")


def test_config_rejects_bad_values():
    for kw, match in ((dict(mode="x"), "mode"), (dict(fill="x"), "fill"), (dict(attackers=0), "attackers"),
                      (dict(mus=()), "mus"), (dict(mus=(1.5,)), "grid"), (dict(stop_confidence=0.0), "stop_confidence"),
                      (dict(backbone="vgg16"), "backbone_weights"), (dict(augment="x"), "augment"),
                      (dict(steps=-1), "steps"), (dict(identities=1), "identities")):
        with pytest.raises(ValueError, match=match):
            eg.Config(**kw)


def tiny_cfg(tmp_path, **kw) -> eg.Config:
    base_kw = dict(out_dir=str(tmp_path / "run"), identities=6, train_views=2, val_views=1, epochs=20, attackers=4, steps=3,
                   mus=(0.9,), ns=(1,), phis=(0.0, 20.0), eot_attackers=2, eot_samples=1, eot_poses=2,
                   adaptive_attackers=2, adaptive_steps=1, bootstrap=50, head_hidden=0)
    base_kw.update(kw)
    return eg.Config(**base_kw)


def test_tiny_end_to_end_writes_card(tmp_path):
    exp = eg.run(tiny_cfg(tmp_path))
    card = json.loads((tmp_path / "run" / "results.json").read_text())
    assert card["chapter"] == "03_eyeglasses"
    d = card["metrics"]["data"]
    assert d["identities"] == 6 and d["attackers"] == 4 and d["attacker_identities"] == 4
    assert d["identities_with_2plus_photos"] == 2
    assert set(card["claims"]) == {"attack", "defense", "clean", "threshold", "eot", "adaptive"}
    for v, lo, hi in (x for x in card["metrics"]["blog_vs_ours"].values() if x[1] is not None):
        assert lo - 1e-9 <= v <= hi + 1e-9
    a = exp.results["attack"]
    outside = ~a["mask"].expand_as(a["x"]).bool()
    assert torch.equal(a["adv"][outside], a["x"][outside])  # the glasses are the only change
    # targets differ from the true identities; the grid has 2 points; the best is the max goodness
    assert bool((exp.targets != a["y"]).all())
    grid = exp.results["defense"]["grid"]
    assert len(grid) == 2 and exp.results["defense"]["best"] == int(np.argmax([r["goodness"] for r in grid]))
    # defense success can only count attacks that succeeded before
    t = exp.results["defense"]["table"]
    assert t.total("def_success") <= t.total("before/adv_success")
    assert (tmp_path / "run" / "glasses.pt").is_file()
    rows = {r["quantity"]: r for r in card["paper_comparison"]}
    assert rows["adversarial success, no defense (%)"]["paper"] == 85.0
    assert "FRS validation accuracy (%)" in rows
    floor = eg.tolerance_floor(card)
    assert floor["blog/adv_success_before"] == 0.25 and set(floor) == set(card["measured"])


def test_dodging_mode_and_skipped_sections(tmp_path):
    exp = eg.EyeglassesExperiment(tiny_cfg(tmp_path, mode="dodging", eot_attackers=0, adaptive_attackers=0,
                                           attackers=2), progress=False)
    assert exp.targets is None
    exp.run_sections(["attack", "eot", "adaptive"])
    assert "frs" in exp.results and exp.results.get("eot") is None and "adaptive" not in exp.measured()


def write_pubfig(root: Path, people: int = 3, per: int = 5) -> Path:
    from facelab.data.faces import all_faces

    fs = all_faces()
    faces = [f for f in fs.faces if f.landmarks68 is not None][:people]
    for k, f in enumerate(faces):
        d = root / f"Person {k}"
        d.mkdir(parents=True)
        crop = fs.aligned_crop(f.face_id, 96)
        for i in range(per):
            arr = (crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            Image.fromarray(np.roll(arr, i, axis=1)).save(d / f"{i + 1}.jpg")
    return root


def test_pubfig_root_is_the_full_scale_entry(tmp_path):
    root = write_pubfig(tmp_path / "pubfig")
    exp = eg.EyeglassesExperiment(tiny_cfg(tmp_path, pubfig_root=str(root), attackers=3, val_fraction=0.2),
                                  progress=False)
    assert exp.classes == ["Person 0", "Person 1", "Person 2"]
    assert len(exp.x_train) == 12 and len(exp.x_val) == 3 and exp.x_val.shape[-1] == 112
    assert sorted(exp.units) == exp.classes


def test_notebook_parameters_cell_is_the_config():
    nb = nbformat.read(NOTEBOOK, 4)
    cell = nb.cells[1]
    assert "parameters" in cell.metadata["tags"]
    assert cell.source == base.parameters_cell(eg.Config, out_dir="../runs/default/03_eyeglasses")


def test_a_broken_result_fails_the_reproduction_check(tmp_path, monkeypatch):
    """Glasses that fool nobody (the attack section's success set to zero) at the default parameters: the
    check against the committed reference names the attack's numbers."""
    exp = eg.EyeglassesExperiment.__new__(eg.EyeglassesExperiment)
    exp.cfg = eg.Config(out_dir=str(tmp_path))
    ref = exp.reference()
    assert ref is not None and exp.comparable_to(ref) == []
    broken = {**ref["reference"], "blog/adv_success_before": 0.0}
    monkeypatch.setattr(exp, "measured", lambda: broken)
    monkeypatch.setattr(exp, "verdicts", lambda: dict(ref["verdicts"]))
    with pytest.raises(base.ReproductionError, match="blog/adv_success_before"):
        exp.check_reproduction()
    monkeypatch.setattr(exp, "measured", lambda: dict(ref["reference"]))
    assert exp.check_reproduction().startswith("reproduction check:")
