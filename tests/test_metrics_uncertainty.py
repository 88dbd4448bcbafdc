"""facelab.metrics.uncertainty (unit tables, the cluster bootstrap) and the per-unit detection counts of
facelab.metrics.detection (detection_unit_table, patch_as_face_rate): hand-computed values and invariants."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facelab.metrics.detection import detection_unit_table, patch_as_face_rate, precision_recall_at
from facelab.metrics.uncertainty import Interval, UnitTable, bootstrap, percentile_interval

settings.register_profile("facelab", max_examples=40, deadline=None, derandomize=True, database=None)
settings.register_profile("mutation", parent=settings.get_profile("facelab"), max_examples=8)
settings.load_profile(os.environ.get("FACELAB_HYPOTHESIS_PROFILE", "facelab"))

FACE_A = [0.0, 0.0, 10.0, 10.0]
FACE_B = [20.0, 0.0, 30.0, 10.0]


def recall(t):
    return t["e"]["tp"] / t["e"]["faces"]


# -- UnitTable / Interval / percentile_interval -------------------------------------------------------------

def test_unit_table_total_aligned_and_shape_check():
    t = UnitTable(("a", "b"), {"tp": np.array([1.0, 2.0]), "faces": np.array([2.0, 3.0])})
    assert t.total("tp") == 3.0 and t.total("faces") == 5.0
    al = t.aligned(("b", "c", "a"))
    assert al.units == ("b", "c", "a")
    assert al.columns["tp"].tolist() == [2.0, 0.0, 1.0] and al.columns["faces"].tolist() == [3.0, 0.0, 2.0]
    with pytest.raises(ValueError, match=r"^UnitTable column 'tp': shape \(3,\), expected \(2,\)$"):
        UnitTable(("a", "b"), {"tp": np.zeros(3)})


def test_interval_formatting():
    iv = Interval(0.12345, 0.1, 0.2, 0.9)
    assert iv.as_list() == [0.1235, 0.1, 0.2] and iv.as_list(2) == [0.12, 0.1, 0.2]
    assert iv.fmt() == "12.3 [10.0, 20.0] %" and iv.fmt(digits=2) == "12.35 [10.00, 20.00] %"
    assert iv.fmt(pct=False) == "0.123 [0.100, 0.200]"
    nan = Interval(0.5, math.nan, math.inf, 0.9)
    assert nan.as_list() == [0.5, None, None] and nan.fmt() == "50.0 [–, –] %"


def test_percentile_interval():
    s = np.arange(101, dtype=float)  # quantiles are exact on 0..100
    assert percentile_interval(s, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(s, 0.5) == pytest.approx((25.0, 75.0))
    assert percentile_interval(np.r_[s, np.nan, np.inf], 0.9) == pytest.approx((5.0, 95.0))  # non-finite samples are dropped
    lo, hi = percentile_interval(np.array([np.nan]), 0.9)
    assert math.isnan(lo) and math.isnan(hi)


# -- bootstrap ----------------------------------------------------------------------------------------------

def test_bootstrap_point_value_and_errors():
    t = UnitTable(("a", "b", "c"), {"tp": np.array([1.0, 0.0, 2.0]), "faces": np.array([1.0, 2.0, 2.0])})
    r = bootstrap({"e": t}, recall, n_boot=300, seed=2)
    assert r.value == 3 / 5 and r.level == 0.9 and r.lo <= r.value <= r.hi and r.lo < r.hi
    assert bootstrap({"e": t}, recall, n_boot=300, seed=2) == r
    assert bootstrap({"e": t}, recall, n_boot=300, seed=3) != r
    none = bootstrap({"e": t}, recall, n_boot=0)
    assert none.value == 3 / 5 and math.isnan(none.lo) and math.isnan(none.hi)
    empty = UnitTable((), {"tp": np.zeros(0), "faces": np.zeros(0)})
    r0 = bootstrap({"e": empty}, recall, n_boot=50)
    assert math.isnan(r0.value) and math.isnan(r0.lo)  # 0/0 without a numpy warning escaping as an error
    with pytest.raises(ValueError, match="^bootstrap: no tables$"):
        bootstrap({}, recall)
    other = UnitTable(("a", "b"), {"tp": np.zeros(2), "faces": np.ones(2)})
    with pytest.raises(ValueError, match=r"^bootstrap: table 'r' has other units than the first table; use \.aligned\(\)$"):
        bootstrap({"e": t, "r": other}, recall)


def test_bootstrap_resamples_whole_units():
    # two units: a (1 of 1 recalled), b (0 of 3): a resample holds 0, 1 or 2 copies of a, so the recall is one of
    # 0, 1/4 (a + b) or 1 (a + a), with probabilities 1/4, 1/2, 1/4
    t = UnitTable(("a", "b"), {"tp": np.array([1.0, 0.0]), "faces": np.array([1.0, 3.0])})
    r = bootstrap({"e": t}, recall, n_boot=4000, seed=0, level=0.9)
    assert (r.value, r.lo, r.hi) == (0.25, 0.0, 1.0)
    r = bootstrap({"e": t}, recall, n_boot=4000, seed=0, level=0.4)
    assert (r.lo, r.hi) == (0.25, 0.25)
    # the resampled totals average to the point total (each unit appears once per resample on average)
    seen = []
    bootstrap({"e": t}, lambda x: seen.append(x["e"]["faces"].copy()) or x["e"]["faces"], n_boot=4000, seed=1)
    faces = seen[-1]
    assert faces.shape == (4000,) and set(np.unique(faces)) <= {2.0, 4.0, 6.0}
    assert faces.mean() == pytest.approx(4.0, abs=0.1)


def test_bootstrap_pairs_tables():
    # the same units in two tables are resampled together: a ratio of a table to itself is exactly 1
    t = UnitTable(("a", "b", "c"), {"tp": np.array([1.0, 0.0, 2.0]), "faces": np.array([1.0, 2.0, 2.0])})
    r = bootstrap({"e": t, "r": t}, lambda x: x["e"]["tp"] / x["r"]["tp"], n_boot=200)
    assert (r.value, r.lo, r.hi) == (1.0, 1.0, 1.0)


@given(st.integers(1, 12), st.integers(0, 5), st.integers(1, 5), st.floats(0.5, 0.99), st.integers(0, 100))
def test_bootstrap_interval_of_identical_units_is_the_point_value(n_units, tp, extra, level, seed):
    # a single unit type: every resample has the same recall, so the interval collapses onto the point value
    units = tuple(f"u{i}" for i in range(n_units))
    t = UnitTable(units, {"tp": np.full(n_units, float(tp)), "faces": np.full(n_units, float(tp + extra))})
    r = bootstrap({"e": t}, recall, n_boot=50, seed=seed, level=level)
    assert r.lo == pytest.approx(r.value) and r.hi == pytest.approx(r.value)
    assert r.value == pytest.approx(tp / (tp + extra))


# -- detection_unit_table / patch_as_face_rate --------------------------------------------------------------

def test_detection_unit_table_hand_example():
    # image 0: faces A (unit f1), B (f2); detections A 0.9 (TP), a duplicate of A 0.8 (FP, nearest face A),
    # a box near B 0.85 (FP, nearest B), B 0.5 (below δ = 0.7). image 1: no face, one detection 0.95 (FP)
    dets = [(np.array([FACE_A, FACE_A, [24.0, 20, 34, 30], FACE_B]), np.array([0.9, 0.8, 0.85, 0.5])),
            (np.array([FACE_A]), np.array([0.95]))]
    gts = [np.array([FACE_A, FACE_B]), np.zeros((0, 4))]
    t = detection_unit_table(dets, gts, None, [("f1", "f2"), ()], delta=0.7)
    assert t.units == ("f1", "f2", "image 1 (no face)")
    assert t.columns["tp"].tolist() == [1.0, 0.0, 0.0]
    assert t.columns["faces"].tolist() == [1.0, 1.0, 0.0]
    assert t.columns["fp"].tolist() == [1.0, 1.0, 1.0]
    assert set(t.columns) == {"tp", "fp", "faces"}
    r = precision_recall_at(dets, gts, delta=0.7)
    assert (t.total("tp"), t.total("fp"), t.total("faces")) == (r["tp"], r["fp"], r["n_faces"])
    # δ is inclusive: at 0.5 B's detection counts
    t = detection_unit_table(dets, gts, None, [("f1", "f2"), ()], delta=0.5)
    assert t.columns["tp"].tolist() == [1.0, 1.0, 0.0]
    # an ignored face is not counted, and a detection on it is no FP
    t = detection_unit_table(dets, gts, [[False, True], []], [("f1", "f2"), ()], delta=0.5)
    assert t.columns["faces"].tolist() == [1.0, 0.0, 0.0] and t.columns["tp"].tolist() == [1.0, 0.0, 0.0]
    # faces of one unit over several images add up (views of one face)
    t = detection_unit_table([dets[0], dets[0]], [gts[0], gts[0]], None, [("f1", "f2"), ("f1", "f2")], delta=0.7)
    assert t.units == ("f1", "f2") and t.columns["faces"].tolist() == [2.0, 2.0] and t.columns["fp"].tolist() == [2.0, 2.0]


def test_detection_unit_table_patch_columns_and_errors():
    dets = [(np.array([[2.0, 0, 8, 5], FACE_B]), np.array([0.9, 0.95]))]
    gts = [np.array([FACE_A, FACE_B])]
    patches = [np.array([[2.0, 0, 8, 5], [22.0, 0, 28, 5]])]
    t = detection_unit_table(dets, gts, None, [("f1", "f2")], delta=0.7, patch_boxes=patches)
    assert t.columns["patches"].tolist() == [1.0, 1.0] and t.columns["patch_hits"].tolist() == [1.0, 0.0]
    assert patch_as_face_rate(dets, patches, delta=0.7) == 0.5
    assert patch_as_face_rate(dets, patches, delta=0.95) == 0.0  # the patch detection has 0.9 < δ
    assert patch_as_face_rate(dets, patches, delta=0.9) == 0.5  # δ inclusive
    assert patch_as_face_rate(dets, patches, delta=0.7, iou=1.0) == 0.5  # IoU exactly 1 >= 1
    assert math.isnan(patch_as_face_rate(dets, [np.zeros((0, 4))], delta=0.7))
    assert patch_as_face_rate([(np.zeros((0, 4)), np.zeros(0))], patches, delta=0.7) == 0.0
    with pytest.raises(ValueError, match=r"^image 0: 1 units for 2 faces$"):
        detection_unit_table(dets, gts, None, [("f1",)], delta=0.7)
    with pytest.raises(ValueError, match=r"^image 0: 1 patch boxes for 2 faces$"):
        detection_unit_table(dets, gts, None, [("f1", "f2")], delta=0.7, patch_boxes=[patches[0][:1]])


_coord = st.integers(0, 5).map(lambda v: 10.0 * v)
_box = st.tuples(_coord, _coord, st.sampled_from([8.0, 10.0])).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[2]])


@given(st.lists(st.tuples(st.lists(_box, max_size=3), st.lists(st.tuples(_box, st.floats(0, 1)), max_size=4)),
                min_size=1, max_size=4), st.floats(0, 1))
def test_unit_table_columns_sum_to_precision_recall_counts(images, delta):
    dets = [(np.array([b for b, _ in d]).reshape(-1, 4), np.array([s for _, s in d])) for _, d in images]
    gts = [np.array(g).reshape(-1, 4) for g, _ in images]
    units = [tuple(f"i{i}f{j}" for j in range(len(g))) for i, (g, _) in enumerate(images)]
    t = detection_unit_table(dets, gts, None, units, delta=delta)
    r = precision_recall_at(dets, gts, delta=delta)
    assert (t.total("tp"), t.total("fp"), t.total("faces")) == (r["tp"], r["fp"], r["n_faces"])


def test_bootstrap_defaults_one_resample_and_the_level_without_interval():
    rng = np.random.default_rng(7)
    units = tuple(f"u{i}" for i in range(30))
    big = UnitTable(units, {"tp": rng.random(30), "faces": 1 + rng.random(30)})

    def rate(tot):
        return tot["x"]["tp"] / tot["x"]["faces"]
    def span(i):
        return i.lo, i.hi, i.level
    d = bootstrap({"x": big}, rate)
    assert span(d) == span(bootstrap({"x": big}, rate, n_boot=2000, seed=0, level=0.9))
    assert span(d) != span(bootstrap({"x": big}, rate, n_boot=2001))  # the draws depend on n_boot ...
    assert span(d) != span(bootstrap({"x": big}, rate, seed=1))       # ... and on the seed
    t = UnitTable(("a", "b", "c", "d"), {"tp": np.array([1.0, 0.0, 2.0, 1.0]), "faces": np.array([1.0, 2.0, 2.0, 3.0])})
    one = bootstrap({"x": t}, rate, n_boot=1)
    assert math.isfinite(one.lo) and one.lo == one.hi  # one resample: a degenerate but defined interval
    none = bootstrap({"x": t}, rate, n_boot=0, level=0.8)
    assert none.value == 0.5 and math.isnan(none.lo) and math.isnan(none.hi) and none.level == 0.8
