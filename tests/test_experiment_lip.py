"""Chapter 2 (LIP): a tiny end-to-end run on a small conv detector, the config, the notebook and the reference."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from facelab.experiments import base
from facelab.experiments import lip
from test_attacks_patch import TinyDetector

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_lip.ipynb"


def small_cfg(tmp_path, **kw) -> lip.Config:
    base_kw = dict(out_dir=str(tmp_path / "run"), victim="tiny", bootstrap=50, ipi_counts=(1, 4), ipi_faces=4,
                   ipi_distances=(40.0, 160.0), faces_per_setting=4, table_scenes=1, erf_detectors=(), erf_images=2,
                   steps=2, eps=8 / 255, alpha=4 / 255, face_size=32.0, scene_scale=0.5, photo_max_side=96)
    base_kw.update(kw)
    return lip.Config(**base_kw)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("lip")
    return lip.run(small_cfg(tmp), sections=("erf", "ipi", "methods"), victim=TinyDetector().eval()), tmp


def test_tiny_end_to_end_writes_card(tiny_run):
    exp, tmp = tiny_run
    card = json.loads((tmp / "run" / "results.json").read_text())
    assert card["chapter"] == "02_lip" and card["parameters"]["victim"] == "tiny"
    assert set(card["claims"]) == {"ipi", "erf", "lip", "datasets"}
    m = card["metrics"]
    assert set(m["ipi"]) == {"count/n1/d40", "count/n4/d40", "distance/n4/d40", "distance/n4/d160"}
    assert set(m["methods"]) == {"photos", "scenes"}
    for row in m["methods"].values():
        assert set(row) == {"none", "imp", "lp", "lip_a", "lip_h"} and row["none"]["success"] is None
        for v in row.values():
            val, lo, hi = v["recall"]
            assert lo - 1e-9 <= val <= hi + 1e-9
    # the same families share one canvas; each setting holds at least faces_per_setting faces
    d = m["data"]
    assert d["count/1/40.0"]["canvas"] == d["count/4/40.0"]["canvas"]
    assert all(v["faces"] >= 4 for k, v in d.items() if not k.startswith("table"))
    assert (tmp / "run" / "adversarial.pt").is_file()
    rows = {r["quantity"]: r for r in card["paper_comparison"]}
    assert rows["IPI success, 1 faces at 40 px (count family) (%)"]["paper"] == 100.0


def test_success_counts_only_faces_detected_clean(tiny_run):
    exp, _ = tiny_run
    items = exp.ipi_items[("count", 4, 40.0)]
    t = exp.success_table(items, "imp")
    hit0 = sum(int(it.hits["none"].sum()) for it in items)
    lost = sum(int((it.hits["none"] & ~it.hits["imp"]).sum()) for it in items)
    assert t.total("hit0") == hit0 and t.total("lost") == lost and t.total("faces") == sum(len(i.boxes) for i in items)
    assert exp.success(items, "imp").value == pytest.approx(lost / hit0 if hit0 else float("nan"), nan_ok=True)
    # a method that changes nothing: success 0
    for it in items:
        it.hits["noop"] = it.hits["none"]
    assert exp.success(items, "noop").value == 0.0 or hit0 == 0


def test_claims_measured_and_summary(tiny_run):
    exp, _ = tiny_run
    claims = {c.key: c for c in exp.claims()}
    assert len(claims["ipi"].cases) == 2 and all(c.op == ">" for c in claims["ipi"].cases)
    assert {c.label for c in claims["lip"].cases} == {"LIP-A − IMP success", "LIP-H − IMP success", "LIP-H − LP success"}
    meas = exp.measured()
    assert "ipi/count/n1/d40/imp" in meas and "methods/photos/lip_h/success" in meas
    assert all(0 <= v <= 1 for k, v in meas.items() if "/success" in k or "/recall" in k)
    s = exp.summary_markdown()
    assert "Claim 1, IPI" in s and "HR" in s
    floor = lip.tolerance_floor({"metrics": exp.headline(), "measured": meas})
    assert set(floor) == set(meas) and all(v > 0 for v in floor.values())


def test_ap_where_the_official_normalisation_is_undefined():
    gt = {"all": {"e": {"a": {"boxes": np.array([[0.0, 0, 10, 10], [20, 20, 10, 10]]), "keep": None}}}}
    assert lip._ap({"e": {"a": np.zeros((0, 5))}}, gt, ("all",)) == {"all": 0.0}
    # one detection on one of two faces: the single precision-recall point (P 1, R 0.5) -> VOC area 0.5
    one = {"e": {"a": np.array([[0.0, 0, 10, 10, 0.3]])}}
    assert lip._ap(one, gt, ("all",))["all"] == pytest.approx(0.5)
    # a ranking that normalises: the usual evaluation
    two = {"e": {"a": np.array([[0.0, 0, 10, 10, 0.9], [20, 20, 10, 10, 0.2]])}}
    assert lip._ap(two, gt, ("all",))["all"] == pytest.approx(1.0)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="delta"):
        small_cfg(tmp_path, delta=1.5)
    with pytest.raises(ValueError, match="ipi_methods"):
        small_cfg(tmp_path, ipi_methods=("pgd",))
    with pytest.raises(ValueError, match="steps"):
        small_cfg(tmp_path, steps=-1)
    with pytest.raises(ValueError, match="gradient_mode"):
        small_cfg(tmp_path, gradient_mode="magic")
    with pytest.raises(ValueError, match="scene_scale"):
        small_cfg(tmp_path, scene_scale=0)


def test_notebook_parameters_cell_is_the_config():
    nb = nbformat.read(NOTEBOOK, 4)
    cell = nb.cells[1]
    assert "parameters" in cell.metadata["tags"]
    assert cell.source == base.parameters_cell(lip.Config, out_dir="../runs/default/02_lip")
    ns: dict = {}
    exec(cell.source, ns)  # noqa: S102 - the committed cell, to check it builds the default Config
    assert lip.Config.from_namespace(ns).as_dict() == {**lip.Config().as_dict(), "out_dir": "../runs/default/02_lip"}


def test_reference_rejects_a_broken_attack():
    """The committed reference at the default parameters: a run whose attacks do nothing (every success 0) is
    outside the tolerance of the optimised numbers, while the reference itself passes."""
    ref = json.loads(base.reference_path("02_lip").read_text())
    assert ref["parameters"] == {k: v for k, v in lip.Config().as_dict().items() if k != "out_dir"}
    assert base.compare(ref["reference"], ref["verdicts"], ref)["failures"] == []
    broken = {k: (0.0 if k.endswith(("/success", "/imp")) else v) for k, v in ref["reference"].items()}
    fails = base.compare(broken, ref["verdicts"], ref)["failures"]
    assert any("/success" in f or "/imp" in f for f in fails)
