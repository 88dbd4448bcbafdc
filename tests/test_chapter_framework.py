"""The chapter framework (facelab.experiments.base, .spread, facelab.metrics.uncertainty): claims decided on
intervals, the cluster bootstrap, one source of parameters, the reproduction check and its reference."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import sys
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

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


# -- exact rules of the framework (issue 19: mutation testing of experiments/base.py and spread.py) ------
@dataclasses.dataclass
class TinyConfig(base.ExperimentConfig):
    """A chapter config with one field of each kind the parameters cell handles."""

    epochs: int = base.param(3, "training epochs")
    sizes: tuple[int, ...] = base.param((1, 2), "sizes to test")
    names: list[str] = base.param(["a", "b"], "names")
    rate: Optional[float] = base.param(None, "a rate or none")


def tiny_claims() -> list[base.Claim]:
    return [base.Claim("c1", "First", "value <= 0.25", [base.Case("x", iv(0.1, 0.0, 0.2), "<=", 0.25)], detail="D1."),
            base.Claim("c2", "Second", "value >= 1", [base.Case("y", iv(2.0, 0.5, 3.0), ">=", 1.0)], pct=False)]


class TinyExperiment(base.Experiment):
    """A chapter that measures nothing heavy: its numbers are fixed, its steps record that they ran."""

    chapter = "zz_tiny"
    config_class = TinyConfig
    sections = ("first", "second")

    def first(self) -> None:
        self.results.setdefault("ran", []).append("first")

    def second(self) -> None:
        self.results.setdefault("ran", []).append("second")

    def headline(self) -> dict:
        return {"recall": [0.5, 0.4, 0.6]}

    def measured(self) -> dict:
        return {"a": 0.5, "b": 0.2}

    def claims(self) -> list[base.Claim]:
        return tiny_claims()

    def paper_comparison(self) -> list[dict]:
        return [{"quantity": "recall", "paper": 0.6, "ours": 0.5, "interval": [0.4, 0.6], "note": "n"}]

    def differences(self) -> dict:
        return {"model": "M", "data": "D"}

    def write_artifacts(self, out: Path) -> None:
        (out / "artifact.txt").write_text("x")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A TinyExperiment on the CPU whose reference directory is an empty tmp folder; restores torch's state."""
    monkeypatch.setattr(base, "REFERENCES", tmp_path / "refs")
    (tmp_path / "refs").mkdir()
    threads = torch.get_num_threads()
    yield TinyExperiment(TinyConfig(out_dir=str(tmp_path / "out"), device="cpu", threads=0, deterministic=False),
                         progress=False)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def write_ref(tmp_path: Path, **over) -> dict:
    ref = {"parameters": {**{k: v for k, v in TinyConfig(device="cpu", threads=0, deterministic=False).as_dict().items()
                             if k != "out_dir"}},
           "reference": {"a": 0.5, "b": 0.25, "gone": 1.0}, "tolerance": {"a": 0.0, "b": 0.05, "gone": 0.0},
           "verdicts": {"c1": "replicated", "c2": "undecided"}, "kernel_variants": ["threads1"],
           "variants": {"threads1": {"verdicts": {"c2": "replicated"}}}}
    ref.update(over)
    (tmp_path / "refs" / "zz_tiny.json").write_text(json.dumps(ref))
    return ref


def test_param_gives_each_config_its_own_copy_of_a_mutable_default():
    f = base.param([1, 2], "a list")
    assert f.metadata["help"] == "a list" and f.default is dataclasses.MISSING
    a, b = f.default_factory(), f.default_factory()
    assert a == [1, 2] and type(a) is list and a is not b
    assert base.param({"k": 1}, "d").default_factory() == {"k": 1}
    assert base.param({3}, "s").default_factory() == {3}
    g = base.param((1, 2), "a tuple")
    assert g.default == (1, 2) and g.metadata["help"] == "a tuple" and g.default_factory is dataclasses.MISSING
    assert TinyConfig().names is not TinyConfig().names
    assert base.param(0, "no apostrophe here").default == 0
    with pytest.raises(ValueError, match=r"^help text must not contain an apostrophe \(papermill parses the cell\): "
                                         r"\"it's\"$"):
        base.param(0, "it's")


def test_config_validation_names_the_parameter():
    for kw, msg in [({"threads": -1}, "threads=-1: must be >= 0"), ({"bootstrap": -1}, "bootstrap=-1: must be >= 0"),
                    ({"confidence": 0.0}, "confidence=0.0: must lie in (0, 1)"),
                    ({"confidence": 1.0}, "confidence=1.0: must lie in (0, 1)")]:
        with pytest.raises(ValueError) as e:
            base.ExperimentConfig(**kw)
        assert str(e.value) == msg
    ok = base.ExperimentConfig(threads=0, bootstrap=0, confidence=0.5)
    assert (ok.threads, ok.bootstrap, ok.confidence) == (0, 0, 0.5)
    assert [f.name for f in TinyConfig.fields()] == ["out_dir", "device", "threads", "deterministic", "seed",
                                                     "bootstrap", "confidence", "ulp_jitter", "epochs", "sizes",
                                                     "names", "rate"]
    assert TinyConfig(sizes=(4,)).as_dict() == {
        "out_dir": "runs/default", "device": "auto", "threads": 2, "deterministic": True, "seed": 0,
        "bootstrap": 2000, "confidence": 0.9, "ulp_jitter": 0, "epochs": 3, "sizes": [4], "names": ["a", "b"],
        "rate": None}


def test_config_from_namespace():
    ns = {**TinyConfig().as_dict(), "sizes": [5, 6], "names": ["c"], "epochs": 7}
    cfg = TinyConfig.from_namespace(ns)
    assert cfg == TinyConfig(sizes=(5, 6), names=["c"], epochs=7)
    assert type(cfg.sizes) is tuple and type(cfg.names) is list  # only tuple defaults become tuples
    assert TinyConfig.from_namespace({**ns, "sizes": (8,)}).sizes == (8,)
    with pytest.raises(NameError) as e:
        TinyConfig.from_namespace({k: v for k, v in ns.items() if k not in ("seed", "rate")})
    assert str(e.value) == "TinyConfig: parameters missing from the namespace: seed, rate"
    with pytest.raises(TypeError) as e:
        TinyConfig.from_namespace({**ns, "sizes": 3})
    assert str(e.value) == ("parameter sizes: expected a list, got int 3 (with papermill give lists as YAML: "
                            "-y 'name: [a, b]')")


def test_parameters_cell_lines():
    cell = base.parameters_cell(TinyConfig, out_dir="../o", epochs=9)
    lines = cell.split("\n")
    assert lines[0] == "# parameters (papermill): every value can be overridden with  -p name value"
    assert lines[1] == ("out_dir: str = '../o'".ljust(48)
                        + "  # where the results card and artifacts go (facelab run sets it)")
    assert lines[4] == ("deterministic: bool = True".ljust(48)
                        + "  # torch deterministic algorithms (and cuBLAS workspace) on")
    assert lines[7] == "confidence: float = 0.9".ljust(48) + "  # level of the bootstrap intervals"
    assert lines[9:] == ["epochs: int = 9".ljust(48) + "  # training epochs",
                         "sizes: list = [1, 2]".ljust(48) + "  # sizes to test",
                         "names: list = ['a', 'b']".ljust(48) + "  # names",
                         "rate: float | None = None".ljust(48) + "  # a rate or none"]
    assert len(lines) == 13

    @dataclasses.dataclass
    class Bare(base.ExperimentConfig):
        plain: int = 5  # a field without param(): no help text

    assert base.parameters_cell(Bare).split("\n")[-1] == "plain: int = 5".ljust(48) + "  # "


def test_annotation_of_each_kind_of_field():
    ann = base._annotation
    assert [ann(t) for t in (int, float, bool, str)] == ["int", "float", "bool", "str"]
    assert [ann(t) for t in (tuple[int, ...], list[str], Sequence[float], typing.Sequence[int], tuple, list)] == \
        ["list"] * 6
    assert ann(dict) == ann(dict[str, int]) == "dict"
    assert ann(Optional[int]) == "int | None" and ann(Optional[tuple[int, ...]]) == "list | None"
    assert ann(Optional[Union[int, str]]) == "object" and ann(Union[int, str]) == "object"
    assert ann(bytes) == "object" and ann(typing.Any) == "object"
    assert ann(set[int]) == ann(frozenset[str]) == "object"  # a generic of one argument is no Optional


def test_setup_runtime_defaults_seeds_and_determinism(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(False)
        assert base.setup_runtime() == ("cuda" if torch.cuda.is_available() else "cpu")
        assert torch.get_num_threads() == 2
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        random.seed(0), np.random.seed(0), torch.manual_seed(0)
        assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))
        if not torch.cuda.is_available():
            assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # only for CUDA
        # threads 0 leaves the thread count; a seed beyond 32 bits wraps for numpy
        torch.use_deterministic_algorithms(False)
        assert base.setup_runtime("cpu", threads=0, seed=2**32 + 5, deterministic=False) == "cpu"
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
        draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        random.seed(2**32 + 5), np.random.seed(5), torch.manual_seed(2**32 + 5)
        assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))
        # CUDA: the cuBLAS workspace and no cudnn benchmark (set without a GPU too: nothing runs on it here)
        torch.backends.cudnn.benchmark = True
        assert base.setup_runtime("cuda:0", threads=0) == "cuda:0"
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.backends.cudnn.benchmark is False
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        base.setup_runtime("cuda", threads=0)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's setting wins
        torch.backends.cudnn.benchmark = True
        base.setup_runtime("cuda", threads=0, deterministic=False)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)


def test_case_ops_at_the_threshold():
    def status(op, x):
        return base.Case("p", iv(x, math.nan, math.nan), op, 0.5).status

    assert [status(op, 0.5) for op in ("<=", ">=", "<", ">")] == ["met", "met", "not met", "not met"]
    assert [status(op, 0.4) for op in ("<=", ">=", "<", ">")] == ["met", "not met", "met", "not met"]
    assert [status(op, 0.6) for op in ("<=", ">=", "<", ">")] == ["not met", "met", "not met", "met"]
    # an interval with one infinite end is no interval: the point value decides
    assert base.Case("p", iv(0.4, -math.inf, 0.6), "<=", 0.5).status == "met"
    assert base.Case("p", iv(0.6, 0.4, math.inf), "<=", 0.5).status == "not met"
    assert base.Case("p", iv(math.inf, 0.4, 0.6), "<=", 0.5).status == "undecided"
    assert base.Case("p", iv(0.3, 0.1, 0.6), "<", 0.5).status == "undecided"  # hi alone fails
    assert base.Case("p", iv(0.55, 0.45, 0.7), ">", 0.5).status == "undecided"  # lo alone fails
    with pytest.raises(ValueError) as e:
        base.Case("lbl", iv(0, 0, 0), "==", 1.0)
    assert str(e.value) == "Case 'lbl': op must be one of <=, >=, <, >; got '=='"


def test_verdict_of_every_combination():
    assert base.verdict_of(0, 0, 0) == "not measured"
    assert base.verdict_of(1, 0, 0) == base.verdict_of(3, 0, 0) == "replicated"
    assert base.verdict_of(1, 1, 0) == base.verdict_of(2, 0, 1) == base.verdict_of(1, 1, 1) == "partly replicated"
    assert base.verdict_of(0, 1, 0) == base.verdict_of(0, 2, 3) == "not replicated"
    assert base.verdict_of(0, 0, 1) == base.verdict_of(0, 0, 4) == "undecided"
    assert base.VERDICTS == ("replicated", "partly replicated", "undecided", "not replicated", "not measured")


def test_claim_markdown_and_dict_exactly():
    c1, c2 = tiny_claims()
    assert c2.counts() == {"met": 0, "not met": 0, "undecided": 1}
    assert c1.markdown() == ("* **First** — **replicated** (this run: 1 met, 0 not met, 0 undecided of 1; criterion: "
                             "value <= 0.25). D1. Cases: x 10.0 [0.0, 20.0] % (met).")
    assert c2.markdown(["not replicated", "undecided", "undecided"]) == (
        "* **Second** — **undecided** or **not replicated** (the verdict differs between the measured machine "
        "variants: one face instance decides it) (this run: 0 met, 0 not met, 1 undecided of 1; criterion: "
        "value >= 1).  Cases: y 2.000 [0.500, 3.000] (undecided).")
    assert c2.markdown(["undecided"]) == c2.markdown()
    two = base.Claim("k", "T", "c", [c1.cases[0], c2.cases[0]], pct=False)
    assert two.markdown().endswith("Cases: x 0.100 [0.000, 0.200] (met); y 2.000 [0.500, 3.000] (undecided).")
    assert c2.as_dict() == {"title": "Second", "verdict": "undecided", "criterion": "value >= 1", "met": 0,
                            "not met": 0, "undecided": 1,
                            "cases": [{"label": "y", "value": [2.0, 0.5, 3.0], "op": ">=", "threshold": 1.0,
                                       "status": "undecided"}]}


def test_experiment_checks_its_config_and_pins_the_runtime(tiny):
    with pytest.raises(TypeError) as e:
        TinyExperiment(base.ExperimentConfig())
    assert str(e.value) == "TinyExperiment needs a TinyConfig, got ExperimentConfig"
    assert tiny.device == "cpu" and tiny.progress is False and tiny.results == {} and tiny.timer.timings == {}
    assert 0 <= time.perf_counter() - tiny.t0 < 60
    assert tiny.cfg.out_dir.endswith("out")
    assert TinyExperiment(TinyConfig(device="cpu", threads=0, deterministic=False)).progress is True
    assert not torch.are_deterministic_algorithms_enabled()  # deterministic=False is passed on
    # the config's device is used (a CUDA name is only recorded here: nothing runs on it)
    assert TinyExperiment(TinyConfig(device="cuda:1", threads=0, deterministic=False)).device == "cuda:1"
    before = torch.get_num_threads()
    TinyExperiment(TinyConfig(device="cpu", threads=1, seed=4, deterministic=True))
    try:
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        draw = float(torch.rand(1))
        torch.manual_seed(4)
        assert draw == float(torch.rand(1))
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)
    for name in ("headline", "measured", "claims", "paper_comparison", "differences"):
        with pytest.raises(NotImplementedError):
            getattr(base.Experiment, name)(tiny)
    assert base.Experiment.write_artifacts(tiny, Path("nowhere")) is None
    assert base.Experiment.summary_preamble(tiny) == ""


def test_jitter_is_seeded_by_the_config_and_the_image_size(tiny):
    x = torch.full((2, 8, 8), 0.5)
    tiny.cfg.ulp_jitter = 1
    y = tiny.jitter(x)
    g = torch.Generator().manual_seed(1 * 1_000_003 + 128)
    pick, up_ = torch.rand(x.shape, generator=g) < 0.5, torch.rand(x.shape, generator=g) < 0.5
    step = torch.where(up_, torch.nextafter(x, torch.tensor(2.0)), torch.nextafter(x, torch.tensor(-1.0)))
    want = torch.where(pick, step, x)
    assert torch.equal(y, want) and torch.equal(tiny.jitter(x), y)
    tiny.cfg.ulp_jitter = 2
    assert not torch.equal(tiny.jitter(x), y)
    # the coin flips are rand < 0.5 (the reference runs' jitter): a draw of exactly 0.5 means "no" -- found by search:
    # seed 1, 5244 pixels: pixel 1963's pick draw; seed 23755, 2048 pixels: pixel 741's direction draw
    for seed, n, i, which in [(1, 5244, 1963, 0), (23755, 2048, 741, 1)]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + n)
        draws = torch.rand(n, generator=g), torch.rand(n, generator=g)
        assert float(draws[which][i]) == 0.5 and (which == 0 or float(draws[0][i]) < 0.5)
        tiny.cfg.ulp_jitter = seed
        moved = float(tiny.jitter(torch.full((n,), 0.5))[i])
        assert moved == (0.5 if which == 0 else float(torch.nextafter(torch.tensor(0.5), torch.tensor(0.0))))
    # the ends stay in [0, 1]; they can only move inwards
    ends = torch.tensor([0.0, 1.0]).repeat(64)
    j = tiny.jitter(ends)
    assert float(j.min()) >= 0 and float(j.max()) <= 1 and (j != ends).any()
    assert torch.all(j[ends == 0] < 1e-6) and torch.all(j[ends == 1] > 1 - 1e-6)


def test_run_sections_runs_the_steps_in_order(tiny):
    assert tiny.run_sections() is tiny and tiny.results["ran"] == ["first", "second"]
    assert tiny.run_sections(["second"]).results["ran"] == ["first", "second", "second"]
    assert tiny.run_sections([]).results["ran"] == ["first", "second", "second"]
    with pytest.raises(ValueError) as e:
        tiny.run_sections(["first", "third"])
    assert str(e.value) == "zz_tiny: unknown section 'third'; sections: first, second"


def test_summary_and_claims_markdown(tiny, tmp_path):
    c1, c2 = tiny_claims()
    assert tiny.verdicts() == {"c1": "replicated", "c2": "undecided"}
    assert tiny.verdicts_seen() == {}  # no reference
    assert tiny.claims_markdown("c2", "nope", "c1") == c2.markdown() + "\n" + c1.markdown()
    want = "\n".join([
        "", "",
        "Intervals: 90% cluster-bootstrap percentile intervals over units (2000 resamples). A case is *met* when its "
        "whole interval meets the criterion, *not met* when none of it does, *undecided* otherwise; a claim is "
        "*replicated* when every case is met, *partly replicated* when some are, *not replicated* when none is and "
        "some are not met, *undecided* when every case is.", "",
        c1.markdown() + "\n" + c2.markdown(), "",
        "**Differences from the paper:** *model*: M; *data*: D."])
    assert tiny.summary_markdown() == want
    # comparable reference: the variants' verdicts show; other parameters: none
    write_ref(tmp_path)
    assert tiny.verdicts_seen() == {"c1": ["replicated"], "c2": ["replicated", "undecided"]}
    assert tiny.claims_markdown("c2") == c2.markdown(["replicated", "undecided"])
    assert "**replicated** or **undecided**" in tiny.summary_markdown()
    tiny.cfg.epochs = 4
    assert tiny.verdicts_seen() == {} and tiny.claims_markdown("c2") == c2.markdown()


def test_card_and_written_results(tiny, tmp_path):
    c1, c2 = tiny_claims()
    card = tiny.card()
    assert card == {"metrics": {"recall": [0.5, 0.4, 0.6]}, "claims": {"c1": c1.as_dict(), "c2": c2.as_dict()},
                    "measured": {"a": 0.5, "b": 0.2}, "paper_comparison": tiny.paper_comparison(),
                    "differences": {"model": "M", "data": "D"}}
    tiny.timer.timings["step"] = 1.23456
    path = tiny.write_card()
    assert path == tmp_path / "out" / "results.json" and (tmp_path / "out" / "artifact.txt").read_text() == "x"
    r = json.loads(path.read_text())
    assert r["chapter"] == "zz_tiny" and r["seed"] == 0 and r["device"] == "cpu"
    assert r["parameters"] == {**tiny.cfg.as_dict(), "sizes": [1, 2]}
    assert r["metrics"] == {"recall": [0.5, 0.4, 0.6]} and "metrics" in card  # write_card pops its own copy
    assert set(r["timings_s"]) == {"step", "total"} and r["timings_s"]["step"] == 1.23
    assert 0 <= r["timings_s"]["total"] < 60
    tiny.t0 -= 12.3456  # the run's total time, rounded to 0.01 s
    total = json.loads(tiny.write_card().read_text())["timings_s"]["total"]
    assert type(total) is float and 12.34 < total < 13 and total == round(total, 2)
    for k in ("claims", "measured", "paper_comparison", "differences"):
        assert r[k] == json.loads(json.dumps(card[k]))
    assert r["reproduction"] == {"compared": False, "why": "no reference run"}
    write_ref(tmp_path)
    r = json.loads(tiny.write_card().read_text())
    assert r["reproduction"]["compared"] is True and r["reproduction"]["n_numbers"] == 2
    # the out dir is created with its parents
    tiny.cfg.out_dir = str(tmp_path / "deep" / "er")
    assert tiny.write_card().is_file()


def test_reproduction_status_and_check(tiny, tmp_path):
    assert tiny.reference() is None
    assert tiny.check_reproduction() == "reproduction check: not compared (no reference run)"
    ref = write_ref(tmp_path)
    assert tiny.reference() == ref and base.reference_path("zz_tiny") == tmp_path / "refs" / "zz_tiny.json"
    assert tiny.comparable_to(ref) == []
    assert tiny.reproduction_status() == {"compared": True, "n_numbers": 2, "n_verdicts": 2, "failures": []}
    assert tiny.check_reproduction() == ("reproduction check: 2 measured numbers within their measured tolerance of "
                                         "the reference run; 2 verdicts among those of the measured machine variants")
    # presentation parameters may differ; others make the comparison meaningless
    tiny.cfg.out_dir, tiny.cfg.device, tiny.cfg.threads, tiny.cfg.ulp_jitter = "elsewhere", "cuda", 1, 2
    assert tiny.comparable_to(ref) == []
    tiny.cfg.seed, tiny.cfg.sizes = 1, (1, 3)
    assert tiny.comparable_to(ref) == ["seed", "sizes"]
    assert tiny.reproduction_status() == {"compared": False,
                                          "why": "parameters differ from the reference run: seed, sizes"}
    assert tiny.check_reproduction() == ("reproduction check: not compared (parameters differ from the reference "
                                         "run: seed, sizes)")
    tiny.cfg.seed, tiny.cfg.sizes = 0, (1, 2)
    write_ref(tmp_path, reference={"a": 0.6, "b": 0.5}, tolerance={"a": 0.0, "b": 0.05},
              verdicts={"c1": "partly replicated", "c2": "undecided"})
    with pytest.raises(base.ReproductionError) as e:
        tiny.check_reproduction()
    assert str(e.value) == ("zz_tiny: 3 result(s) differ from the reference run beyond the measured tolerance:\n"
                            "  a: 0.5000, reference 0.6000 ± 0.0000\n  b: 0.2000, reference 0.5000 ± 0.0500\n"
                            "  verdict c1: 'replicated', the measured variants gave partly replicated")
    assert issubclass(base.ReproductionError, AssertionError)


def test_allowed_verdicts_only_from_kernel_variants():
    ref = {"verdicts": {"a": "undecided", "b": "replicated"}}
    assert base.allowed_verdicts(ref) == {"a": ["undecided"], "b": ["replicated"]}
    ref = {"verdicts": {"a": "not measured", "b": "replicated"}, "kernel_variants": ["v1", "missing", "v2"],
           "variants": {"v1": {"verdicts": {"a": "undecided", "c": "partly replicated"}}, "v2": {},
                        "seed1": {"verdicts": {"b": "not replicated"}}}}
    assert base.allowed_verdicts(ref) == {"a": ["undecided", "not measured"], "b": ["replicated"],
                                          "c": ["partly replicated"]}
    ref["variants"]["v2"] = {"verdicts": {"a": "replicated", "b": "replicated"}}
    assert base.allowed_verdicts(ref)["a"] == ["replicated", "undecided", "not measured"]


def test_compare_at_the_tolerance_boundary():
    ref = {"reference": {"a": 0.5, "b": 0.25, "c": 1.0}, "tolerance": {"a": 0.25, "b": 0.0, "c": 0.0},
           "verdicts": {"k": "replicated"}}
    # exactly at the tolerance, and within 1e-9 beyond it: passes; a hair more: fails
    assert base.compare({"a": 0.75, "b": 0.25}, {}, ref) == {"n_numbers": 2, "n_verdicts": 0, "failures": []}
    assert base.compare({"a": 0.25, "b": 0.25 + 5e-10}, {}, ref)["failures"] == []
    at = {"reference": {"z": 0.0}, "tolerance": {"z": 0.25}, "verdicts": {}}
    assert base.compare({"z": 0.25 + 1e-9}, {}, at)["failures"] == []  # the boundary itself is within
    assert base.compare({"z": -(0.25 + 1e-9)}, {}, at)["failures"] == []
    assert base.compare({"a": 0.25 - 1e-8, "b": 0.25 - 2e-9}, {}, ref)["failures"] == [
        "a: 0.2500, reference 0.5000 ± 0.2500", "b: 0.2500, reference 0.2500 ± 0.0000"]
    # numbers the run did not measure and verdicts of claims the reference does not have are not counted
    r = base.compare({"c": 1.0}, {"k": "replicated", "new": "undecided"}, ref)
    assert r == {"n_numbers": 1, "n_verdicts": 1, "failures": []}
    assert base.compare({}, {"k": "undecided"}, ref) == {
        "n_numbers": 0, "n_verdicts": 1, "failures": ["verdict k: 'undecided', the measured variants gave replicated"]}


# -- spread: the reference run's tolerances ---------------------------------------------------------------
def spread_card(measured: dict, claims: dict, params: dict, total: float = 1.0) -> dict:
    return {"measured": measured, "claims": claims, "machine": {"cpu": "x"}, "parameters": params,
            "timings_s": {"total": total}, "metrics": {}}


def test_aggregate_record_exactly(monkeypatch):
    c = {"met": 1, "not met": 0, "undecided": 0}
    nm = {"met": 0, "not met": 1, "undecided": 0}
    p = {"out_dir": "o", "epochs": 12, "seed": 0}
    cards = {"default": spread_card({"r": 0.5, "s": 0.1, "t": 0.3}, {"c1": c, "c2": c}, p, 3.0),
             "cbwr_avx2": spread_card({"r": 0.47, "s": 0.1}, {"c1": c, "c2": nm}, p, 2.0),
             "jitter3": spread_card({"r": 0.5, "s": 0.13, "t": 0.3}, {"c1": c}, p),
             "seed2": spread_card({"r": 0.1, "s": 0.5}, {"c1": nm, "c2": c}, {**p, "seed": 2})}
    rec = spread.aggregate("ch", cards, {"t": 0.05, "zz": 1.0})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec.pop("created"))
    # the creation time is UTC
    monkeypatch.setattr(spread, "time", types.SimpleNamespace(strftime=time.strftime, gmtime=lambda: time.gmtime(0)))
    assert spread.aggregate("ch", cards, {})["created"] == "1970-01-01T00:00:00Z"
    assert rec["spread"] == pytest.approx({"r": 0.03, "s": 0.03, "t": 0.0})
    assert rec["tolerance"] == pytest.approx({"r": 0.06, "s": 0.06, "t": 0.05})
    assert rec["seed_spread"] == pytest.approx({"r": 0.4, "s": 0.4, "t": None})
    rec.pop("spread"), rec.pop("tolerance"), rec.pop("seed_spread")
    assert rec == {
        "chapter": "ch", "rule": "tolerance = max(2 x kernel spread, floor); floor = the chapter's resolution",
        "machine": {"cpu": "x"}, "parameters": {"epochs": 12, "seed": 0}, "reference": {"r": 0.5, "s": 0.1, "t": 0.3},
        "verdicts": {"c1": "replicated", "c2": "replicated"}, "unstable_verdicts": ["c2"],
        "kernel_variants": ["cbwr_avx2", "jitter3"],
        "seed_verdicts": {"seed2": {"c1": "not replicated", "c2": "replicated"}},
        "variants": {
            "default": {"env": {}, "set": {}, "measured": {"r": 0.5, "s": 0.1, "t": 0.3},
                        "verdicts": {"c1": "replicated", "c2": "replicated"}, "seconds": 3.0},
            "cbwr_avx2": {"env": {"MKL_CBWR": "AVX2"}, "set": {}, "measured": {"r": 0.47, "s": 0.1},
                          "verdicts": {"c1": "replicated", "c2": "not replicated"}, "seconds": 2.0},
            "jitter3": {"env": {}, "set": {"ulp_jitter": 3}, "measured": {"r": 0.5, "s": 0.13, "t": 0.3},
                        "verdicts": {"c1": "replicated"}, "seconds": 1.0},
            "seed2": {"env": {}, "set": {"seed": 2}, "measured": {"r": 0.1, "s": 0.5},
                      "verdicts": {"c1": "not replicated", "c2": "replicated"}, "seconds": 1.0}}}
    # the default alone: no spread, the floor is the tolerance, no seed spread
    only = spread.aggregate("ch", {"default": cards["default"]}, {"r": 0.01})
    assert only["spread"] == {"r": 0.0, "s": 0.0, "t": 0.0} and only["tolerance"] == {"r": 0.01, "s": 0.0, "t": 0.0}
    assert only["seed_spread"] == {"r": None, "s": None, "t": None} and only["unstable_verdicts"] == []
    assert only["kernel_variants"] == [] and only["seed_verdicts"] == {}


def test_variants_table():
    assert spread.VARIANTS["threads1"] == ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, {"threads": 1})
    assert spread.VARIANTS["cbwr_compatible"] == ({"MKL_CBWR": "COMPATIBLE"}, {})
    assert [spread.VARIANTS[f"jitter{i}"] for i in (1, 2, 3)] == [({}, {"ulp_jitter": i}) for i in (1, 2, 3)]
    assert spread.VARIANTS["seed1"] == ({}, {"seed": 1}) and spread.VARIANTS["default"] == ({}, {})
    assert set(spread.KERNEL_VARIANTS) | set(spread.SEED_VARIANTS) | {"default"} == set(spread.VARIANTS)


class FakeChapter:
    """A chapter module for spread: a TinyConfig, a run that records its config, a floor of 0.01."""

    Config = TinyConfig

    def __init__(self) -> None:
        self.runs: list = []

    def run(self, cfg):
        self.runs.append(cfg)

    def tolerance_floor(self, card):
        return {k: 0.01 for k in card["measured"]}


def test_spread_module_and_run_one(monkeypatch):
    with pytest.raises(SystemExit) as e:
        spread._module("99_none")
    assert str(e.value) == f"unknown chapter '99_none'; chapters: {', '.join(CHAPTERS)}"
    assert spread._module("01_universal_patches") is up
    fake = FakeChapter()
    monkeypatch.setattr(spread, "_module", lambda ch: fake if ch == "zz" else None)
    spread.run_one("zz", "o/d", {"epochs": 5, "out_dir": "ignored"})
    assert fake.runs == [TinyConfig(epochs=5, out_dir="o/d")]


def test_spread_measure_runs_missing_variants_in_their_environment(monkeypatch, tmp_path, capsys):
    fake = FakeChapter()
    monkeypatch.setattr(spread, "_module", {"zz": fake}.__getitem__)
    calls = []

    def fake_run(cmd, env, check):
        calls.append((cmd, env, check))
        out = Path(cmd[cmd.index("--one") + 1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"variant": out.name}))

    monkeypatch.setattr(spread.subprocess, "run", fake_run)
    monkeypatch.setenv("FACELAB_TEST_MARK", "1")
    ticks = iter([100.0, 112.6, 200.0, 201.2, 300.0, 300.4])
    monkeypatch.setattr(spread, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    cards = spread.measure("zz", tmp_path, ["default", "threads1"])
    assert cards == {"default": {"variant": "default"}, "threads1": {"variant": "threads1"}}
    (cmd0, env0, check0), (cmd1, env1, check1) = calls
    assert cmd0 == [sys.executable, "-m", "facelab.experiments.spread", "zz", "--one", str(tmp_path / "default"),
                    "--set", "{}"]
    assert cmd1[-1] == '{"threads": 1}' and check0 is check1 is True
    assert env0["FACELAB_TEST_MARK"] == env1["FACELAB_TEST_MARK"] == "1"
    assert "MKL_NUM_THREADS" not in env0 and env1["OMP_NUM_THREADS"] == env1["MKL_NUM_THREADS"] == "1"
    assert capsys.readouterr().out.splitlines() == ["default: 13 s", "threads1: 1 s"]  # seconds each took
    # a card with the same parameters is reused; one with other parameters is run again
    params = {**TinyConfig().as_dict(), "out_dir": str(tmp_path / "jitter1"), "ulp_jitter": 1}
    (tmp_path / "jitter1").mkdir()
    (tmp_path / "jitter1" / "results.json").write_text(json.dumps({"parameters": params, "v": 1}))
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "results.json").write_text(json.dumps({"parameters": {**params, "seed": 1}}))
    calls.clear()

    def rerun(cmd, env, check):
        calls.append(cmd)
        (Path(cmd[5]) / "results.json").write_text(json.dumps({"v": 2}))

    monkeypatch.setattr(spread.subprocess, "run", rerun)
    printed = []
    monkeypatch.setattr(spread, "print", lambda *a, **kw: printed.append((a, kw)), raising=False)
    cards = spread.measure("zz", tmp_path, ["jitter1", "seed1"])
    assert cards == {"jitter1": {"parameters": params, "v": 1}, "seed1": {"v": 2}}
    assert [c[5] for c in calls] == [str(tmp_path / "seed1")]
    # progress lines are flushed at once (a measurement runs for hours)
    assert printed == [((f"jitter1: done before ({tmp_path / 'jitter1' / 'results.json'})",), {"flush": True}),
                       (("seed1: 0 s",), {"flush": True})]


def test_spread_main(monkeypatch, tmp_path, capsys):
    fake = FakeChapter()
    monkeypatch.setattr(spread, "_module", {"zz": fake}.__getitem__)
    seen = {}
    c = {"met": 1, "not met": 0, "undecided": 0}
    nm = {"met": 0, "not met": 1, "undecided": 0}

    def fake_measure(chapter, workdir, variants):
        seen.update(chapter=chapter, workdir=workdir, variants=variants)
        p = {"out_dir": "o", "epochs": 3}
        if seen.get("many"):
            moved = {f"m{i:02d}": 0.5 + i / 100 for i in range(12)}  # m11 moved most
            return {"default": spread_card({k: 0.5 for k in moved}, {"k": c}, p),
                    "threads1": spread_card(moved, {"k": c}, p)}
        return {"default": spread_card({"x": 0.5, "y": 0.2}, {"k": c}, p),
                "threads1": spread_card({"x": 0.4, "y": 0.2}, {"k": nm if seen["unstable"] else c}, p),
                "jitter1": spread_card({"x": 0.5, "y": 0.2}, {"k": c}, p)}

    monkeypatch.setattr(spread, "measure", fake_measure)
    monkeypatch.setattr(spread, "reference_path", lambda ch: tmp_path / f"{ch}.json")
    seen["unstable"] = True
    assert spread.main(["zz", "--variants", " default, threads1 ,,", "--no-write"]) == 0
    assert seen == {"chapter": "zz", "workdir": Path("runs/spread/zz"), "variants": ["default", "threads1"],
                    "unstable": True}
    assert capsys.readouterr().out == "largest kernel spreads: x 0.1000, y 0.0000\nunstable verdicts: ['k']\n"
    assert not (tmp_path / "zz.json").exists()
    seen["unstable"] = False
    assert spread.main(["zz", "--workdir", str(tmp_path / "w")]) == 0
    assert seen["workdir"] == tmp_path / "w" and seen["variants"] == list(spread.VARIANTS)
    rec = json.loads((tmp_path / "zz.json").read_text())
    assert rec["tolerance"] == pytest.approx({"x": 0.2, "y": 0.01}) and rec["chapter"] == "zz"
    assert capsys.readouterr().out.splitlines()[-2:] == ["unstable verdicts: none", f"wrote {tmp_path / 'zz.json'}"]
    # the ten largest spreads, largest first
    seen["many"] = True
    assert spread.main(["zz", "--no-write"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "largest kernel spreads: " + ", ".join(
        f"m{i:02d} {i / 100:.4f}" for i in range(11, 1, -1))
    # one variant in this process
    assert spread.main(["zz", "--one", "d/o", "--set", '{"epochs": 2}']) == 0
    assert fake.runs == [TinyConfig(epochs=2, out_dir="d/o")]
    assert spread.main(["zz", "--one", "d/p"]) == 0 and fake.runs[-1] == TinyConfig(out_dir="d/p")
    for args, msg in [(["--variants", "default,bogus,x"], "--variants: unknown ['bogus', 'x']"),
                      (["--variants", "threads1"], "--variants must include default")]:
        with pytest.raises(SystemExit) as e:
            spread.main(["zz", *args])
        assert e.value.code == 2 and capsys.readouterr().err.rstrip().endswith(f"error: {msg}")


def test_spread_help(capsys):
    with pytest.raises(SystemExit):
        spread.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m facelab.experiments.spread [-h] [--variants VARIANTS] "
                           "[--workdir WORKDIR] [--no-write] chapter")
    assert ("Measure how far a chapter's results move under what another CPU changes, and write its reference "
            "run. positional arguments:") in text
    assert f"chapter one of {', '.join(CHAPTERS)}" in text
    assert "--variants VARIANTS comma-separated subset of " + ", ".join(spread.VARIANTS) in text
    assert "--workdir WORKDIR where the variant runs go (default runs/spread/<chapter>)" in text
    assert "--no-write print the summary, do not write the reference file" in text
    assert "--one" not in text and "--set" not in text
