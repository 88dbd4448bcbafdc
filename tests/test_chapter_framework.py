"""The chapter framework (facelab.experiments.base, .spread, facelab.metrics.uncertainty): claims decided on
intervals, the cluster bootstrap, one source of parameters, the reproduction check and its reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from facelab.experiments import CHAPTERS, base, spread
from facelab.experiments import universal_patches as up
from facelab.metrics.detection import detection_unit_table, precision_recall_at
from facelab.metrics.uncertainty import Interval, UnitTable, bootstrap

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_universal_patches.ipynb"


def iv(v, lo, hi):
    return Interval(v, lo, hi, 0.9)


# -- claims ------------------------------------------------------------------------------------------
def test_case_status_uses_the_whole_interval():
    assert base.Case("a", iv(0.1, 0.05, 0.2), "<=", 0.25).status == "met"
    assert base.Case("a", iv(0.1, 0.05, 0.25), "<=", 0.25).status == "met"  # the bound itself meets <=
    assert base.Case("a", iv(0.1, 0.05, 0.3), "<=", 0.25).status == "undecided"
    assert base.Case("a", iv(0.4, 0.3, 0.5), "<=", 0.25).status == "not met"
    assert base.Case("a", iv(0.4, 0.25, 0.5), ">", 0.25).status == "undecided"  # 0.25 is not > 0.25
    assert base.Case("a", iv(0.4, 0.26, 0.5), ">", 0.25).status == "met"
    # without an interval the point value decides; a NaN value decides nothing
    assert base.Case("a", iv(0.1, math.nan, math.nan), "<=", 0.25).status == "met"
    assert base.Case("a", iv(0.3, math.nan, math.nan), "<=", 0.25).status == "not met"
    assert base.Case("a", iv(math.nan, math.nan, math.nan), "<=", 0.25).status == "undecided"
    with pytest.raises(ValueError, match="op"):
        base.Case("a", iv(0, 0, 0), "=<", 0.25)


def test_claim_verdicts():
    met, no, und = (base.Case("m", iv(0.1, 0.0, 0.2), "<=", 0.25), base.Case("n", iv(0.5, 0.4, 0.6), "<=", 0.25),
                    base.Case("u", iv(0.2, 0.1, 0.4), "<=", 0.25))
    v = (lambda *cases: base.Claim("k", "t", "c", list(cases)).verdict)
    assert v(met, met) == "replicated"
    assert v(no, no) == "not replicated"
    assert v(met, no) == v(met, und) == "partly replicated"
    assert v(no, und) == "not replicated" and v(und, und) == "undecided"
    assert v() == "not measured"
    c = base.Claim("k", "Title", "crit", [met, no, und])
    assert c.counts() == {"met": 1, "not met": 1, "undecided": 1}
    md = c.markdown()
    assert "**Title** — **partly replicated** (this run: 1 met, 1 not met, 1 undecided of 3; criterion: crit)" in md
    assert "m 10.0 [0.0, 20.0] % (met)" in md
    assert c.as_dict()["cases"][1] == {"label": "n", "value": [0.5, 0.4, 0.6], "op": "<=", "threshold": 0.25,
                                       "status": "not met"}


# -- bootstrap ---------------------------------------------------------------------------------------
def test_bootstrap_resamples_units_and_pairs_tables():
    t = UnitTable(("a", "b", "c", "d"), {"tp": np.array([1.0, 2, 0, 3]), "faces": np.array([2.0, 2, 2, 4])})
    r = bootstrap({"e": t}, lambda x: x["e"]["tp"] / x["e"]["faces"], n_boot=500, seed=1)
    assert r.value == pytest.approx(6 / 10) and r.lo <= r.value <= r.hi and r.lo < r.hi
    assert bootstrap({"e": t}, lambda x: x["e"]["tp"] / x["e"]["faces"], n_boot=500, seed=1) == r  # seeded
    # paired: a table against itself has a ratio of exactly 1 in every resample
    same = bootstrap({"e": t, "r": t}, lambda x: x["e"]["tp"] / x["r"]["tp"], n_boot=200)
    assert (same.value, same.lo, same.hi) == (1.0, 1.0, 1.0)
    # one unit: no spread at all
    one = UnitTable(("a",), {"tp": np.array([3.0]), "faces": np.array([4.0])})
    r1 = bootstrap({"e": one}, lambda x: x["e"]["tp"] / x["e"]["faces"], n_boot=100)
    assert (r1.value, r1.lo, r1.hi) == (0.75, 0.75, 0.75)
    # n_boot = 0: a point value without interval
    assert math.isnan(bootstrap({"e": t}, lambda x: x["e"]["tp"], n_boot=0).lo)
    with pytest.raises(ValueError, match="other units"):
        bootstrap({"e": t, "r": one}, lambda x: x["e"]["tp"])
    assert t.aligned(("d", "z", "a")).columns["tp"].tolist() == [3.0, 0.0, 1.0]


def test_bootstrap_interval_narrows_with_more_units():
    rng = np.random.default_rng(0)

    def width(n):
        tp = rng.integers(0, 2, n).astype(float)
        t = UnitTable(tuple(map(str, range(n))), {"tp": tp, "faces": np.ones(n)})
        r = bootstrap({"e": t}, lambda x: x["e"]["tp"] / x["e"]["faces"], n_boot=1000)
        return r.hi - r.lo

    assert width(400) < width(8) / 3


def test_detection_unit_table_charges_false_positives_to_the_nearest_face():
    gts = [torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110]]), torch.zeros(0, 4)]
    dets = [(torch.tensor([[0.0, 0, 10, 10], [95, 95, 105, 105], [0, 0, 10, 10], [50, 0, 60, 10]]),
             torch.tensor([0.9, 0.8, 0.75, 0.2])),
            (torch.tensor([[1.0, 1, 5, 5]]), torch.tensor([0.95]))]
    t = detection_unit_table(dets, gts, None, [("f1", "f2"), ()], delta=0.7)
    assert t.units == ("f1", "f2", "image 1 (no face)")
    # f1: recalled, plus a duplicate (fp); f2: a box at IoU 0.14 is a false positive near f2, f2 missed;
    # the 0.2 detection is below δ; the face-less image's detection is its own unit
    assert t.columns["tp"].tolist() == [1, 0, 0] and t.columns["faces"].tolist() == [1, 1, 0]
    assert t.columns["fp"].tolist() == [1, 1, 1]
    pr = precision_recall_at(dets, gts, 0.7)
    assert (t.total("tp"), t.total("fp"), t.total("faces")) == (pr["tp"], pr["fp"], pr["n_faces"])
    with pytest.raises(ValueError, match="2 units for 1 faces"):
        detection_unit_table(dets[:1], [gts[0][:1]], None, [("a", "b")], 0.7)


# -- one source of parameters ------------------------------------------------------------------------
def test_notebook_parameters_cell_is_the_config():
    nb = nbformat.read(NOTEBOOK, 4)
    cell = nb.cells[1]
    assert "parameters" in cell.metadata["tags"]
    assert cell.source == base.parameters_cell(up.Config, out_dir="../runs/default/01_universal_patches")
    ns: dict = {}
    exec(cell.source, ns)  # noqa: S102 - the committed cell, to check it builds the default Config
    assert up.Config.from_namespace(ns).as_dict() == {**up.Config().as_dict(),
                                                      "out_dir": "../runs/default/01_universal_patches"}
    with pytest.raises(TypeError, match="parameter methods: expected a list, got str"):
        up.Config.from_namespace({**ns, "methods": "[patch_iou]"})
    with pytest.raises(NameError, match="alpha"):
        up.Config.from_namespace({k: v for k, v in ns.items() if k != "alpha"})


def test_runner_lists_every_config_field():
    from facelab.book.runner import declared_parameters

    params = declared_parameters(NOTEBOOK)
    names = list(params)
    assert params["delta"].type == "float" and params["other_detectors"].type == "list"
    assert params["deltas"].optional and "operating threshold" in params["delta"].help
    assert names == [f.name for f in up.Config.fields()]


def test_config_help_has_no_apostrophe():
    with pytest.raises(ValueError, match="apostrophe"):
        base.param(1, "the victim's rule")


# -- runtime -----------------------------------------------------------------------------------------
def test_setup_runtime_pins_threads_and_seeds():
    before = torch.get_num_threads()
    try:
        assert base.setup_runtime("cpu", threads=1, seed=3, deterministic=False) == "cpu"
        assert torch.get_num_threads() == 1
        a = torch.rand(3)
        base.setup_runtime("cpu", threads=1, seed=3, deterministic=False)
        assert torch.equal(a, torch.rand(3))
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)


def test_ulp_jitter_moves_pixels_by_at_most_one_ulp():
    class E(base.Experiment):
        chapter = "x"

    x = torch.rand(3, 16, 16)
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    assert E(base.ExperimentConfig(threads=0, deterministic=False)).jitter(x) is x
    y = E(base.ExperimentConfig(threads=0, deterministic=False, ulp_jitter=1)).jitter(x)
    moved = y != x
    assert 0.3 < moved.float().mean() < 0.7
    step = torch.where(y > x, torch.nextafter(x, torch.full_like(x, 2.0)), torch.nextafter(x, torch.full_like(x, -1.0)))
    assert torch.equal(y[moved], step[moved]) and 0 <= float(y.min()) and float(y.max()) <= 1


# -- reproduction check ------------------------------------------------------------------------------
REF = {"parameters": {"epochs": 12, "seed": 0}, "reference": {"a": 0.5, "b": 0.2},
       "tolerance": {"a": 0.05, "b": 0.0}, "verdicts": {"obs1": "replicated", "obs2": "undecided"},
       "kernel_variants": ["jitter1"],
       "variants": {"jitter1": {"verdicts": {"obs1": "replicated", "obs2": "partly replicated"}},
                    "seed1": {"verdicts": {"obs1": "not replicated"}}}}


def test_compare_within_tolerance_and_verdicts():
    assert base.allowed_verdicts(REF) == {"obs1": ["replicated"], "obs2": ["partly replicated", "undecided"]}
    ok = base.compare({"a": 0.54, "b": 0.2}, {"obs1": "replicated", "obs2": "partly replicated"}, REF)
    assert ok == {"n_numbers": 2, "n_verdicts": 2, "failures": []}
    bad = base.compare({"a": 0.56, "b": 0.2 + 1e-6}, {"obs1": "not replicated", "obs2": "replicated"}, REF)
    assert bad["failures"] == ["a: 0.5600, reference 0.5000 ± 0.0500", "b: 0.2000, reference 0.2000 ± 0.0000",
                               "verdict obs1: 'not replicated', the measured variants gave replicated",
                               "verdict obs2: 'replicated', the measured variants gave partly replicated / undecided"]
    assert base.compare({"a": math.nan}, {}, REF)["failures"]  # NaN never passes


def test_a_verdict_one_face_decides_is_shown_as_every_verdict_seen():
    met, und = base.Case("m", iv(0.1, 0.0, 0.2), "<=", 0.25), base.Case("u", iv(0.2, 0.1, 0.4), "<=", 0.25)
    c = base.Claim("k", "T", "c", [met, und])
    assert c.markdown().startswith("* **T** — **partly replicated** (this run: 1 met")
    both = c.markdown(["replicated"])
    assert both.startswith("* **T** — **replicated** or **partly replicated** (the verdict differs")
    # the same text whichever of the two this run gave
    other = base.Claim("k", "T", "c", [met, met]).markdown(["partly replicated"])
    assert other.split(" (this run")[0] == both.split(" (this run")[0]


def test_aggregate_spread_and_tolerance():
    counts = {"replicated": (1, 0, 0), "not replicated": (0, 1, 0), "undecided": (0, 0, 1),
              "partly replicated": (1, 1, 0)}

    def card(measured, verdicts):
        return {"measured": measured, "claims": {k: dict(zip(("met", "not met", "undecided"), counts[v]))
                                                 for k, v in verdicts.items()},
                "machine": {"cpu": "x"}, "parameters": {"out_dir": "o", "epochs": 12}, "timings_s": {"total": 1.0}}

    cards = {"default": card({"r": 0.50, "s": 0.1}, {"c1": "replicated", "c2": "undecided"}),
             "threads1": card({"r": 0.52, "s": 0.1}, {"c1": "replicated", "c2": "partly replicated"}),
             "jitter1": card({"r": 0.49, "s": 0.1}, {"c1": "replicated", "c2": "undecided"}),
             "seed1": card({"r": 0.30, "s": 0.2}, {"c1": "not replicated", "c2": "undecided"})}
    rec = spread.aggregate("x", cards, {"r": 0.01, "s": 0.02})
    assert rec["spread"] == pytest.approx({"r": 0.02, "s": 0.0})
    assert rec["tolerance"] == pytest.approx({"r": 0.04, "s": 0.02})  # 2 x spread, at least the floor
    assert rec["seed_spread"] == pytest.approx({"r": 0.2, "s": 0.1})  # reported apart, not in the tolerance
    assert rec["unstable_verdicts"] == ["c2"] and rec["parameters"] == {"epochs": 12}
    assert rec["seed_verdicts"] == {"seed1": {"c1": "not replicated", "c2": "undecided"}}


def test_chapter_registry_and_reference_files():
    for chapter, module in CHAPTERS.items():
        mod = __import__(module, fromlist=["run"])
        assert mod.CHAPTER == chapter and callable(mod.run) and callable(mod.tolerance_floor)
        ref = base.reference_path(chapter)
        assert ref.is_file(), f"{ref}: run python -m facelab.experiments.spread {chapter}"
        rec = json.loads(ref.read_text())
        # the reference was measured with the chapter's current default parameters
        assert rec["parameters"] == {k: v for k, v in mod.Config().as_dict().items() if k != "out_dir"}
        assert set(rec["tolerance"]) == set(rec["reference"]) and all(t > 0 for t in rec["tolerance"].values())
        # measured at least under both thread counts, MKL's conditional-reproducibility branch and an input
        # jitter (the minimum set of book/contributing.md; chapter 1 also has cbwr_avx2 and three jitters)
        assert set(rec["variants"]) >= {"default", "threads1", "cbwr_compatible"}
        assert any(v.startswith("jitter") for v in rec["variants"])


def test_an_untrained_patch_fails_the_reproduction_check(monkeypatch, tmp_path):
    """A deliberately broken chapter 1 (the patch is never trained) at the default parameters: the check
    against the committed reference raises, naming the optimised rows; the clean baseline still passes."""
    from facelab.attacks import UniversalPatchAttack

    def no_training(self, data, epochs=1, batch_size=4, *, snapshots=(), progress=False):
        return {e: self.patch.detach().cpu().clone() for e in snapshots}

    monkeypatch.setattr(UniversalPatchAttack, "fit", no_training)
    exp = up.UniversalPatchesExperiment(up.Config(out_dir=str(tmp_path)), progress=False)
    exp.table1()
    assert exp.reproduction_status()["compared"]
    with pytest.raises(base.ReproductionError) as e:
        exp.check_reproduction()
    msg = str(e.value)
    assert "table1/noise w/ Patch-IoU/recall" in msg and "table1/Baseline/recall" not in msg
