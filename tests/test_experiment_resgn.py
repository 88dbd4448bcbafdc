"""Chapter 5 pipeline on a tiny LFW-layout folder: split, adversarial sets and their cache, ResGN training with
checkpoint/resume, the card; the committed notebook's structure and the reproduction check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facelab.data.images import save_image
from facelab.experiments import resgn as rg
from facelab.models.base import FaceEmbedder

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_resgn.ipynb"


class TinyEmbedder(FaceEmbedder):
    """A fixed random conv net (seed 0): fast, differentiable, distances that follow the pixels."""

    threshold = 1.0

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def forward(self, images):
        x = nn.functional.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False)
        return torch.tanh(self.conv(x)).flatten(1)


PEOPLE = [f"P{i}" for i in range(8)]


def write_tiny_lfw(root: Path, shared: bool = False) -> Path:
    """8 people × 2 images (a person's images are one base picture + a little noise); fold 0 = P0-P3, fold 1 =
    P4-P7, 2 matched + 2 mismatched pairs per fold. ``shared``: one test pair also names a training person."""
    rng = np.random.default_rng(0)
    for p in PEOPLE:
        base = rng.random((3, 8, 8))
        for j in (1, 2):
            img = torch.from_numpy(np.kron(base, np.ones((1, 6, 6))) + rng.normal(0, 0.03, (3, 48, 48))).float()
            save_image(root / p / f"{p}_{j:04d}.jpg", img.clamp(0, 1), quality=95)
    lines = ["2\t2", "P0\t1\t2", "P1\t1\t2", "P2\t1\tP3\t1", "P0\t2\tP1\t2",
             "P4\t1\t2", "P5\t1\t2", "P6\t1\tP7\t1", ("P0" if shared else "P4") + "\t2\tP5\t2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def small_cfg(tmp_path: Path, **kw) -> rg.Config:
    base = dict(out_dir=str(tmp_path / "run"), lfw_root=str(write_tiny_lfw(tmp_path / "lfw")), crop=24,
                crop_fraction=1.0, texture_net="face_recognition", losses=("pixel", "joint"), eps_grid=(0.02, 0.04),
                blocks=1, width=4, steps=2, batch_size=4, checkpoint_every=1, pgd_steps=1, bootstrap=50)
    base.update(kw)
    return rg.Config(**base)


def test_split_and_verification(tmp_path):
    exp = rg.ResGNExperiment(small_cfg(tmp_path), target=TinyEmbedder(), progress=False)
    d = exp.data_summary()
    assert d["train"]["pairs"] == d["test"]["pairs"] == 4 and d["shared_identities"] == 0 and d["shared_images"] == 0
    v = exp.verification()
    assert v["eta"] == v["eta_chosen"] and v["train"]["accuracy"] == v["eta_train_accuracy"]
    dist = exp.pair_distances("test")
    assert torch.equal(exp.correct["test"], (dist < exp.eta) == exp.sides["test"].same)
    # a test pair naming a training person is dropped
    shared = rg.ResGNExperiment(small_cfg(tmp_path / "s", lfw_root=str(write_tiny_lfw(tmp_path / "lfw2", True))),
                                target=TinyEmbedder(), progress=False)
    assert shared.dropped_test_pairs == 1 and shared.data_summary()["shared_identities"] == 0
    # a given eta is used as is
    given = rg.ResGNExperiment(small_cfg(tmp_path / "g", eta=0.5), target=TinyEmbedder(), progress=False)
    assert given.verification()["eta"] == 0.5


def test_adversarial_sets_stay_in_the_ball_and_are_cached(tmp_path, monkeypatch):
    cfg = small_cfg(tmp_path)
    exp = rg.ResGNExperiment(cfg, target=TinyEmbedder(), progress=False)
    a = exp.adversarial("test", 0.03)
    ok = exp.correct["test"]
    assert len(a["adv"]) == int(ok.sum()) > 0  # only correctly verified pairs are attacked
    delta = (a["adv"] - a["legit"]).abs()
    assert float(delta.max()) <= 0.03 + 1e-6 and float(a["adv"].min()) >= 0 and float(a["adv"].max()) <= 1
    assert float(delta.max()) > 0.02  # FGSM moved the pixels
    tr = exp.adversarial("train", 0.03)
    assert len(tr["adv"]) == 2 * int(exp.correct["train"].sum())  # both directions
    files = list((Path(cfg.out_dir) / "cache").glob("adv_test_eps0.03_*.pt"))
    assert len(files) == 1
    # a new run reads the cache instead of attacking again
    monkeypatch.setattr(rg, "fgsm", lambda *a, **k: (_ for _ in ()).throw(AssertionError("attacked again")))
    again = rg.ResGNExperiment(cfg, target=TinyEmbedder(), progress=False).adversarial("test", 0.03)
    assert torch.equal(again["adv"], a["adv"])
    # another epsilon is another key
    with pytest.raises(AssertionError, match="attacked again"):
        rg.ResGNExperiment(cfg, target=TinyEmbedder(), progress=False).adversarial("test", 0.02)


def test_training_resumes_from_its_checkpoint_exactly(tmp_path):
    full = rg.ResGNExperiment(small_cfg(tmp_path / "a", steps=4), target=TinyEmbedder(), progress=False)
    net_full = full.train_cleaner("joint")
    part = rg.ResGNExperiment(small_cfg(tmp_path / "b", steps=2), target=TinyEmbedder(), progress=False)
    part.train_cleaner("joint")
    resumed = rg.ResGNExperiment(small_cfg(tmp_path / "b", steps=4), target=TinyEmbedder(), progress=False)
    net_res = resumed.train_cleaner("joint")
    assert resumed.train_log[("joint", 0.03)]["resumed_from"] == 2
    assert len(resumed.train_log[("joint", 0.03)]["history"]) == 4
    for (k, v), w in zip(net_full.state_dict().items(), net_res.state_dict().values()):
        assert torch.equal(v, w), k
    # the trained net is no longer the identity, and every loss term was used
    h = full.train_log[("joint", 0.03)]["history"]
    assert set(h[0]) == {"pixel", "texture", "verification", "joint"}
    assert float(net_full.tail.weight.detach().abs().sum()) > 0
    assert full.texture_weights[0.03]["w_texture"] == pytest.approx(
        full.texture_weights[0.03]["pixel0"] / full.texture_weights[0.03]["texture0"])


def test_tiny_end_to_end_writes_card(tmp_path):
    cfg = small_cfg(tmp_path)
    exp = rg.run(cfg, target=TinyEmbedder())
    card = json.loads((Path(cfg.out_dir) / "results.json").read_text())
    assert card["chapter"] == "05_resgn"
    assert set(card["metrics"]["table1"]) == {"pixel", "joint", "Randomization", "original"}
    assert {"train 0.02 / test 0.04", "train 0.04 / test 0.02"} <= set(card["metrics"]["table2"])
    assert all(math.isfinite(v) for v in card["measured"].values())
    assert {"attack", "cleaned", "vs_randomization", "joint_best", "t2_high_cleans_low", "t2_not_vice_versa",
            "adaptive"} <= set(card["claims"])
    assert card["paper_comparison"] and all(isinstance(r["paper"], float) for r in card["paper_comparison"])
    assert (Path(cfg.out_dir) / "cleaners.pt").is_file()
    # the uncleaned row is the recognizer alone on the FGSM set
    orig = next(r for r in exp.results["table1"] if r["name"] == "original")
    d = exp.distance(exp.embed(exp.adversarial("test", 0.03)["adv"]), exp.adversarial("test", 0.03)["ref_emb"])
    assert torch.allclose(orig["eval"]["d_adv"], d)
    assert orig["legitimate"] == 1.0  # only correctly verified pairs were attacked
    ex = exp.example(0)
    assert set(ex["d"]) == {"legitimate", "adversarial", "cleaned"}
    floor = rg.tolerance_floor(card)
    assert set(floor) == set(card["measured"]) and all(v > 0 for v in floor.values())


@pytest.mark.parametrize("kw,name", [({"losses": ("pixel", "gan")}, "losses"), ({"eps": 0.0}, "eps"),
                                     ({"eps_grid": (0.02, 1.5)}, "eps_grid"), ({"distance": "cosine"}, "distance"),
                                     ({"train_folds": (0,), "test_folds": (0, 1)}, "overlap"),
                                     ({"eta": 4.5}, "eta"), ({"steps": 0}, "steps"),
                                     ({"texture_rescale": "auto"}, "texture_rescale")])
def test_bad_config(kw, name):
    with pytest.raises(ValueError, match=name):
        rg.Config(**kw)


def test_bad_target_and_folds(tmp_path):
    with pytest.raises(ValueError, match="facenet_weights"):
        rg.ResGNExperiment(small_cfg(tmp_path, target="facenet"), progress=False)
    with pytest.raises(ValueError, match="folds"):
        rg.ResGNExperiment(small_cfg(tmp_path, test_folds=(5,)), target=TinyEmbedder(), progress=False)


def test_committed_notebook_structure():
    nbformat = pytest.importorskip("nbformat")
    if not NOTEBOOK.is_file():
        pytest.skip("notebook not generated yet")
    nb = nbformat.read(NOTEBOOK, 4)
    assert nb.metadata["kernelspec"]["name"] == "facelab"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []) and "out_dir" in code[0].source
    checked = [c for c in code if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert all(c.outputs for c in checked)
    check_out = "".join(o.get("text", "") for c in checked if "check_reproduction()" in c.source for o in c.outputs)
    assert check_out.startswith("reproduction check: ") and "within their measured tolerance" in check_out
    assert not any(name in c.source for c in checked for name in ("exp.table1()", "exp.table2()", "exp.adaptive()"))
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    from facelab.book.status import card_from_notebook

    card = card_from_notebook(NOTEBOOK)
    assert card["chapter"] == "05_resgn" and card["parameters"]["out_dir"] == "../runs/default/05_resgn"
    assert any("summary_markdown()" in c.source for c in code)


def test_a_broken_attack_fails_the_reproduction_check(monkeypatch, tmp_path):
    """A deliberately broken chapter 5 at the default parameters (FGSM returns its input unchanged): the check
    against the committed reference raises, naming the uncleaned row; the clean-model numbers still pass."""
    from facelab.experiments import base

    if not base.reference_path("05_resgn").is_file():
        pytest.skip("no reference run yet")
    monkeypatch.setattr(rg, "fgsm", lambda x, loss_fn, eps: x.detach().clone())
    exp = rg.ResGNExperiment(rg.Config(out_dir=str(tmp_path)), progress=False)
    exp.verification()
    ev = exp.evaluate(None)
    exp.results["table1"] = [{"name": "original", "eval": ev, **{c: ev[c] for c in rg.COLUMNS}}]
    assert exp.reproduction_status()["compared"]
    with pytest.raises(base.ReproductionError) as e:
        exp.check_reproduction()
    msg = str(e.value)
    assert "table1/original/dodging" in msg
    assert not any(line.strip().startswith(("eta:", "clean_accuracy")) for line in msg.splitlines())
