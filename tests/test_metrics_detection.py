"""The patch paper's metrics (P/R at δ, Fβ, threshold-Fβ curve, AFβ) on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.metrics import (
    area_fbeta,
    fbeta,
    match_detections,
    precision_recall_at,
    threshold_fbeta_curve,
    wider_detection_metrics,
)

FACE_A = [0.0, 0.0, 10.0, 10.0]
FACE_B = [20.0, 0.0, 30.0, 10.0]


def test_match_greedy_by_score_not_input_order():
    boxes = np.array([[0, 0, 10, 9], FACE_A, [50, 50, 60, 60]], dtype=float)
    scores = np.array([0.3, 0.9, 0.6])
    m = match_detections(boxes, scores, np.array([FACE_A]))
    # the 0.9 detection gets the face; the lower duplicate and the background box are false positives
    np.testing.assert_array_equal(m.tp, [False, True, False])
    np.testing.assert_array_equal(m.fp, [True, False, True])
    np.testing.assert_array_equal(m.matched_gt, [0, 0, -1])
    assert m.n_faces == 1 and m.iou[1] == pytest.approx(1.0) and m.iou[0] == pytest.approx(0.9)


def test_match_uses_best_iou_face_even_if_taken():
    # detection 2 overlaps face A best (already recalled by detection 1) and face B with IoU >= 0.5 too:
    # the official rule only looks at the best face, so it is a false positive and B stays missed
    faces = np.array([[0, 0, 10, 10], [3, 0, 13, 10]], dtype=float)
    dets = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], dtype=float)
    m = match_detections(dets, [0.9, 0.8], faces)
    np.testing.assert_array_equal(m.tp, [True, False])
    np.testing.assert_array_equal(m.matched_gt, [0, 0])
    r = precision_recall_at([(dets, [0.9, 0.8])], [faces], delta=0.5)
    assert (r["precision"], r["recall"]) == (0.5, 0.5)


def test_ignore_rule():
    faces = np.array([FACE_A, FACE_B])
    dets = np.array([FACE_A, FACE_B, [50, 50, 60, 60]])
    m = match_detections(dets, [0.9, 0.95, 0.5], faces, ignore=[False, True])
    np.testing.assert_array_equal(m.ignored, [False, True, False])
    np.testing.assert_array_equal(m.tp, [True, False, False])
    np.testing.assert_array_equal(m.fp, [False, False, True])
    assert m.n_faces == 1
    r = precision_recall_at([(dets, [0.9, 0.95, 0.5])], [faces], delta=0.4, ignores=[[False, True]])
    assert (r["tp"], r["fp"], r["n_detections"], r["n_faces"]) == (1, 1, 2, 1)
    assert r["precision"] == 0.5 and r["recall"] == 1.0


def test_precision_recall_at_delta():
    # image 1: two faces, detections 0.995 (TP on A), 0.992 (background), 0.98 (TP on B, below δ)
    # image 2: one face, detection 0.999 (TP), image 3: no face, detection 0.996 (FP)
    dets = [
        (np.array([FACE_A, [40, 40, 50, 50], FACE_B]), np.array([0.995, 0.992, 0.98])),
        (np.array([FACE_A]), np.array([0.999])),
        (np.array([FACE_B]), np.array([0.996])),
    ]
    gts = [np.array([FACE_A, FACE_B]), np.array([FACE_A]), np.zeros((0, 4))]
    r = precision_recall_at(dets, gts, delta=0.99)
    assert (r["tp"], r["fp"], r["n_faces"]) == (2, 2, 3)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(2 / 3)
    r = precision_recall_at(dets, gts, delta=0.9)
    assert r["precision"] == pytest.approx(3 / 5) and r["recall"] == 1.0
    # torch tensors give the same numbers
    tdets = [(torch.tensor(b, dtype=torch.float32), torch.tensor(s, dtype=torch.float32)) for b, s in dets]
    rt = precision_recall_at(tdets, [torch.tensor(g) for g in gts], delta=0.99)
    assert (rt["tp"], rt["fp"], rt["n_faces"]) == (2, 2, 3)


def test_no_detections_precision_is_one_and_fbeta_zero():
    r = precision_recall_at([(np.zeros((0, 4)), np.zeros(0))], [np.array([FACE_A])], delta=0.99)
    assert (r["precision"], r["recall"], r["n_detections"]) == (1.0, 0.0, 0)
    r = precision_recall_at([(np.array([FACE_A]), np.array([0.5]))], [np.array([FACE_A])], delta=0.99)
    assert (r["precision"], r["recall"]) == (1.0, 0.0)  # everything is below δ
    assert fbeta(1.0, 0.0, 0.5) == 0.0 and fbeta(0.0, 0.0, 0.5) == 0.0


def test_fbeta_formula():
    # Fβ = (1 + β²) / (β²/P + 1/R)
    assert fbeta(0.5, 1.0, 1.0) == pytest.approx(2 / 3)
    assert fbeta(0.8, 0.4, 0.5) == pytest.approx(1.25 / (0.25 / 0.8 + 1 / 0.4))
    # β -> 0 weights recall only, β -> ∞ precision only
    assert fbeta(0.2, 0.7, 0.001) == pytest.approx(0.7, rel=1e-5)
    assert fbeta(0.2, 0.7, 1000.0) == pytest.approx(0.2, rel=1e-5)
    np.testing.assert_allclose(fbeta([1.0, 0.5], [1.0, 0.25], 1.0), [1.0, 1 / 3])


def test_threshold_fbeta_curve_and_area():
    # one face detected with score 0.6004: Fβ = 1 for δ <= 0.6004 and 0 above -> area 0.6 + half a grid step
    dets, gts = [(np.array([FACE_A]), np.array([0.6004]))], [np.array([FACE_A])]
    curve = threshold_fbeta_curve(dets, gts)
    assert len(curve["thresholds"]) == 1001 and set(curve["fbeta"]) == {0.001, 0.01, 0.1, 0.5}
    f = curve["fbeta"][0.1]
    assert f[600] == pytest.approx(1.0) and f[601] == 0.0
    af = area_fbeta(dets, gts)
    for b in (0.001, 0.01, 0.1, 0.5):
        assert af[b] == pytest.approx(0.6005)
    assert area_fbeta(curve=curve) == af
    # logit thresholds (footnote 4): area divided by the range is the average Fβ
    th = np.linspace(-10, 10, 2001)
    af2 = area_fbeta(dets, gts, betas=(0.5,), thresholds=th)
    assert af2[0.5] == pytest.approx((10.6 + 0.005) / 20)


def test_area_fbeta_is_lower_for_a_suppressing_attack():
    gts = [np.array([FACE_A, FACE_B])] * 3
    clean = [(np.array([FACE_A, FACE_B]), np.array([0.99, 0.98]))] * 3
    attacked = [(np.array([FACE_A, FACE_B]), np.array([0.30, 0.20]))] * 3
    fooled = [(np.array([FACE_A, FACE_B, [40, 0, 50, 10]]), np.array([0.99, 0.98, 0.999]))] * 3
    a_clean, a_att, a_fool = (area_fbeta(d, gts)[0.5] for d in (clean, attacked, fooled))
    assert a_att < a_clean and a_fool < a_clean
    assert precision_recall_at(attacked, gts)["recall"] == 0.0


def test_input_errors():
    with pytest.raises(ValueError, match=r"det_boxes: expected shape \[N, 4\]"):
        match_detections(np.zeros((2, 3)), np.zeros(2), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="det_scores has 1"):
        match_detections(np.zeros((2, 4)), np.zeros(1), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="ignore has 2 entries"):
        match_detections(np.zeros((1, 4)), np.zeros(1), np.zeros((1, 4)), ignore=[True, False])
    with pytest.raises(ValueError, match="image 1: gt_boxes"):
        precision_recall_at([(np.zeros((0, 4)), np.zeros(0))] * 2, [np.zeros((0, 4)), np.zeros((2, 5))])
    with pytest.raises(ValueError, match="2 images but gts has 1"):
        precision_recall_at([(np.zeros((0, 4)), np.zeros(0))] * 2, [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="thresholds"):
        threshold_fbeta_curve([], [], thresholds=[0.5, 0.2])


def _fb(p: float, r: float, beta: float) -> float:
    """Fβ written out as in §4.1: (1 + β²) / (β²/P + 1/R) (P, R > 0)."""
    return (1 + beta ** 2) / (beta ** 2 / p + 1 / r)


def test_wider_detection_metrics_per_setting():
    # in-memory gt in the load_wider_gt format: one image, faces (x y w h) A, B and a tiny C ignored in easy
    boxes = np.array([[0, 0, 9, 9], [100, 100, 9, 9], [200, 200, 2, 2]], dtype=float)
    gt = {"all": {"ev": {"img": {"boxes": boxes, "keep": None}}},
          "easy": {"ev": {"img": {"boxes": boxes, "keep": np.array([1, 2])}}}}
    # raw scores, no normalisation (all off the 0.001 threshold grid): A 0.9955 (TP), C 0.9935 (ignored in
    # easy), a background box 0.9915 (FP), B 0.5005 (TP, but below δ)
    preds = {"ev": {"img": np.array([[0, 0, 9, 9, 0.9955], [200, 200, 2, 2, 0.9935], [300, 300, 9, 9, 0.9915],
                                     [100, 100, 9, 9, 0.5005]])}}
    res = wider_detection_metrics(preds, gt, settings=("easy", "all"), delta=0.99)
    assert (res["easy"]["tp"], res["easy"]["fp"], res["easy"]["n_faces"]) == (1, 1, 2)
    assert (res["all"]["tp"], res["all"]["fp"], res["all"]["n_faces"]) == (2, 1, 3)
    assert res["easy"]["precision"] == 0.5 and res["all"]["recall"] == pytest.approx(2 / 3)
    assert res["easy"]["delta"] == 0.99 and res["all"]["n_detections"] == 3
    # AFβ by hand on the grid 0, 0.001, ..., 1 (trapezoid, h = 0.001: area = h (Σ f - (f_0 + f_1000) / 2)):
    # easy: δ <= .5005 (501 points) P 2/3 R 1; up to .9915 (491) P = R = 1/2; up to .9955 (4) P 1 R 1/2; then 0
    # all:  δ <= .5005 (501) P 3/4 R 1; up to .9915 (491) P = R = 2/3; .992-.993 (2) P 1 R 2/3; .994-.995 (2) P 1 R 1/3
    for b in (0.001, 0.01, 0.1, 0.5):
        easy = 0.001 * (500.5 * _fb(2 / 3, 1, b) + 491 * 0.5 + 4 * _fb(1, 0.5, b))
        all_ = 0.001 * (500.5 * _fb(0.75, 1, b) + 491 * 2 / 3 + 2 * _fb(1, 2 / 3, b) + 2 * _fb(1, 1 / 3, b))
        assert res["easy"]["afbeta"][b] == pytest.approx(easy, rel=1e-12), b
        assert res["all"]["afbeta"][b] == pytest.approx(all_, rel=1e-12), b
    assert res["easy"]["afbeta"][0.5] != pytest.approx(res["easy"]["afbeta"][0.001], rel=1e-3)
    # +1 pixel IoU: a detection (1,0,2,2)-style shift of C by one pixel still matches under WIDER's convention
    preds2 = {"ev": {"img": np.array([[201, 200, 2, 2, 0.995]])}}
    assert wider_detection_metrics(preds2, gt, settings=("all",))["all"]["tp"] == 1
    with pytest.raises(FileNotFoundError, match="ev/img"):
        wider_detection_metrics({}, gt, settings=("all",), missing="error")
    # a missing image is an image without detections ("empty", the default)
    r = wider_detection_metrics({}, gt, settings=("all",))["all"]
    assert (r["tp"], r["n_detections"], r["precision"], r["recall"]) == (0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="missing must be 'error' or 'empty', got 'skip'"):
        wider_detection_metrics(preds, gt, missing="skip")
    with pytest.raises(ValueError, match=r"settings: 'hard' not in gt \(have \['all', 'easy'\]\)"):
        wider_detection_metrics(preds, gt, settings=("hard",))
    nolist = {"all": gt["all"], "easy": {"ev": {"img": {"boxes": boxes, "keep": None}}}}
    with pytest.raises(ValueError, match="^gt setting has no gt_list$"):
        wider_detection_metrics(preds, nolist, settings=("easy",))
    with pytest.raises(ValueError, match=r"predictions\['ev'\]\['img'\]: expected shape \[N, 5\]"):
        wider_detection_metrics({"ev": {"img": np.zeros((1, 4))}}, gt, settings=("all",))


def test_wider_detection_metrics_without_images():
    gt = {"all": {}, "easy": {}}
    res = wider_detection_metrics({}, gt, settings=("easy", "all"))
    for s in ("easy", "all"):
        assert res[s]["n_faces"] == 0 and res[s]["n_detections"] == 0 and np.isnan(res[s]["recall"])


# -- ties, boundaries and exact values ------------------------------------------------------------------

def test_score_exactly_at_delta_is_kept():
    # a detection with score == δ is output (score >= δ), for P/R at δ and on the threshold-Fβ curve
    dets = [(np.array([FACE_A, [40, 40, 50, 50]]), np.array([0.75, 0.5]))]
    gts = [np.array([FACE_A])]
    r = precision_recall_at(dets, gts, delta=0.75)
    assert (r["tp"], r["fp"], r["n_detections"], r["recall"]) == (1, 0, 1, 1.0)
    r = precision_recall_at(dets, gts, delta=0.5)
    assert (r["tp"], r["fp"], r["precision"]) == (1, 1, 0.5)
    r = precision_recall_at(dets, gts, delta=np.nextafter(0.75, 1))
    assert (r["tp"], r["n_detections"]) == (0, 0)
    c = threshold_fbeta_curve(dets, gts, betas=(1.0,), thresholds=[0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(c["tp"], [1, 1, 1, 0])
    np.testing.assert_array_equal(c["n_detections"], [2, 2, 1, 0])
    np.testing.assert_allclose(c["precision"], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(c["recall"], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(c["fbeta"][1.0], [2 / 3, 2 / 3, 1.0, 0.0])
    assert c["n_faces"] == 1 and list(c["thresholds"]) == [0.25, 0.5, 0.75, 1.0]


def test_iou_exactly_at_threshold_matches():
    # IoU([0,0,10,20], [0,0,10,10]) = 100 / 200 = 0.5 exactly: a match at the threshold 0.5
    det = np.array([[0.0, 0.0, 10.0, 20.0]])
    m = match_detections(det, [0.9], np.array([FACE_A]))
    assert m.iou[0] == 0.5 and m.tp.tolist() == [True] and m.matched_gt.tolist() == [0]
    m = match_detections(det, [0.9], np.array([FACE_A]), iou=np.nextafter(0.5, 1))
    assert m.tp.tolist() == [False] and m.matched_gt.tolist() == [-1] and m.fp.tolist() == [True]
    r = precision_recall_at([(det, [0.9])], [np.array([FACE_A])], delta=0.5)
    assert (r["tp"], r["fp"]) == (1, 0)
    r = precision_recall_at([(det, [0.9])], [np.array([FACE_A])], delta=0.5, iou=0.51)
    assert (r["tp"], r["fp"]) == (0, 1)
    c = threshold_fbeta_curve([(det, [0.9])], [np.array([FACE_A])], thresholds=[0.0, 1.0], iou=0.51)
    assert c["tp"].tolist() == [0, 0] and c["n_detections"].tolist() == [1, 0]
    assert area_fbeta([(det, [0.9])], [np.array([FACE_A])], betas=(1.0,), thresholds=[0.0, 1.0], iou=0.51) == {1.0: 0.0}
    # an ignored face at IoU exactly 0.5 drops the detection
    m = match_detections(det, [0.9], np.array([FACE_A]), ignore=[True])
    assert m.ignored.tolist() == [True] and m.fp.tolist() == [False] and m.n_faces == 0


def test_plus_one_option():
    # (11,10)-(13,12) vs (10,10)-(12,12): IoU 1/3 continuous, 0.5 with WIDER's +1 pixels
    det, face = np.array([[11.0, 10, 13, 12]]), np.array([[10.0, 10, 12, 12]])
    assert precision_recall_at([(det, [0.9])], [face], delta=0.5)["tp"] == 0
    assert precision_recall_at([(det, [0.9])], [face], delta=0.5, plus_one=True)["tp"] == 1
    assert match_detections(det, [0.9], face, plus_one=True).tp.tolist() == [True]
    c0 = threshold_fbeta_curve([(det, [0.9])], [face], thresholds=[0.0, 1.0])
    c1 = threshold_fbeta_curve([(det, [0.9])], [face], thresholds=[0.0, 1.0], plus_one=True)
    assert c0["tp"].tolist() == [0, 0] and c1["tp"].tolist() == [1, 0]
    a0 = area_fbeta([(det, [0.9])], [face], betas=(1.0,), thresholds=[0.0, 1.0])
    a1 = area_fbeta([(det, [0.9])], [face], betas=(1.0,), thresholds=[0.0, 1.0], plus_one=True)
    assert (a0, a1) == ({1.0: 0.0}, {1.0: 0.5})


def test_area_fbeta_hand_computed_and_ignores():
    # one face; detections: the face at 0.8004 (TP), background at 0.6004 (FP); default grid 0..1 step .001:
    # δ <= .600 (601 points) P 1/2 R 1; .601-.800 (200 points) P = R = 1; above: P 1, R 0
    dets = [(np.array([FACE_A, [40, 40, 50, 50]]), np.array([0.8004, 0.6004]))]
    gts = [np.array([FACE_A])]
    af = area_fbeta(dets, gts)
    for b in (0.001, 0.01, 0.1, 0.5):
        f1 = (1 + b * b) * 0.5 / (b * b + 0.5)
        assert af[b] == pytest.approx(0.001 * (600.5 * f1 + 199.5 + 0.5), rel=1e-12), b
    assert af[0.5] == pytest.approx(0.6005 * 0.625 / 0.75 + 0.2, rel=1e-12)
    # the background box lies on an ignored face: it is dropped, so Fβ = 1 up to .800
    gts2 = [np.array([FACE_A, [40, 40, 50, 50]])]
    af2 = area_fbeta(dets, gts2, betas=(0.5,), ignores=[[False, True]])
    assert af2[0.5] == pytest.approx(0.8005, rel=1e-12)
    c = threshold_fbeta_curve(dets, gts2, betas=(0.5,), ignores=[[False, True]])
    assert c["n_faces"] == 1 and c["n_detections"][0] == 1
    with pytest.raises(ValueError, match="^area_fbeta: give dets and gts, or curve$"):
        area_fbeta(dets)
    with pytest.raises(ValueError, match="^area_fbeta: give dets and gts, or curve$"):
        area_fbeta(gts=gts)


def test_precision_zero_and_nan_cases():
    # a single false positive: precision 0 (not the "no detections" 1)
    r = precision_recall_at([(np.array([[40.0, 40, 50, 50]]), [0.9])], [np.array([FACE_A])], delta=0.5)
    assert (r["precision"], r["recall"], r["fp"]) == (0.0, 0.0, 1)
    # only images without faces: recall NaN, precision 0, no error
    r = precision_recall_at([(np.array([FACE_A, FACE_B]), [0.9, 0.8])], [np.zeros((0, 4))], delta=0.5)
    assert r["precision"] == 0.0 and np.isnan(r["recall"]) and (r["fp"], r["n_faces"]) == (2, 0)
    m = match_detections(np.array([FACE_A]), [0.9], np.zeros((0, 4)))
    assert m.iou.tolist() == [-np.inf] and m.matched_gt.tolist() == [-1] and m.fp.tolist() == [True]
    # no images at all
    r = precision_recall_at([], [], delta=0.5)
    assert (r["tp"], r["n_detections"], r["n_faces"], r["precision"]) == (0, 0, 0, 1.0) and np.isnan(r["recall"])
    # Fβ is NaN when either P or R is NaN, and 0 only where R (or P) is 0
    assert np.isnan(fbeta(np.nan, 0.5, 1.0)) and np.isnan(fbeta(0.5, np.nan, 1.0))
    np.testing.assert_array_equal(fbeta([0.0, 1.0, 0.5], [0.5, 0.0, 0.5], 1.0), [0.0, 0.0, 0.5])
    assert fbeta(1, 1, 2) == 1.0 and fbeta(1, 0.5, 2) == pytest.approx(5 * 0.5 / (4 * 0.5 + 1))


@pytest.mark.filterwarnings("error")
def test_no_numpy_warnings_on_degenerate_inputs():
    # 0/0 and x/0 inside the metrics are handled, not warned about
    assert fbeta(0.0, 0.0, 0.5) == 0.0
    r = precision_recall_at([(np.zeros((0, 4)), np.zeros(0))], [np.zeros((0, 4))], delta=0.5)
    assert np.isnan(r["recall"]) and r["precision"] == 1.0
    c = threshold_fbeta_curve([(np.array([FACE_A]), [0.9])], [np.zeros((0, 4))], thresholds=[0.0, 1.0])
    assert np.isnan(c["recall"]).all() and np.isnan(c["fbeta"][0.5]).all()
    # touching and disjoint boxes: IoU exactly 0
    m = match_detections(np.array([[10.0, 0, 20, 10], [0, 20, 10, 30]]), [0.9, 0.8], np.array([FACE_A]))
    assert m.iou.tolist() == [0.0, 0.0]
    # degenerate (zero-width / zero-area) boxes on degenerate faces: IoU 0, not NaN from 0 / 0
    degenerate = np.array([[5.0, 0, 5, 10], [0, 5, 10, 5], [5.0, 5, 5, 5]])  # vertical line, horizontal line, point
    for box in degenerate:
        m = match_detections(box[None], [0.9], box[None])
        assert m.iou.tolist() == [0.0] and not m.tp.any(), box


def test_iou_values_reported():
    # overlapping in x only (not in y): IoU 0, not a negative number; a 0.5-pixel overlap in y is small but > 0
    faces = np.array([FACE_A])
    m = match_detections(np.array([[5.0, 20, 15, 30], [0, 9.5, 10, 19.5]]), [0.9, 0.8], faces)
    assert m.iou[0] == 0.0 and m.iou[1] == pytest.approx(5 / 195)
    m = match_detections(np.array([[20.0, 5, 30, 15]]), [0.9], faces)  # overlapping in y only
    assert m.iou[0] == 0.0


def test_face_ids_do_not_collide_across_images():
    # image 0 has two faces, image 1 one, image 2 one: every face is recalled once
    dets = [(np.array([FACE_A, FACE_B]), [0.9, 0.9]), (np.array([FACE_A]), [0.9]), (np.array([FACE_B]), [0.9])]
    gts = [np.array([FACE_A, FACE_B]), np.array([FACE_A]), np.array([FACE_B])]
    r = precision_recall_at(dets, gts, delta=0.5)
    assert (r["tp"], r["fp"], r["n_faces"]) == (4, 0, 4)
    c = threshold_fbeta_curve(dets, gts, thresholds=[0.0, 1.0])
    assert c["tp"].tolist() == [4, 0]


def test_inputs_as_tensors_with_grad_and_lists():
    boxes = torch.tensor([FACE_A], requires_grad=True)
    scores = torch.tensor([0.9], requires_grad=True)
    m = match_detections(boxes, scores, torch.tensor([FACE_A]))
    assert m.tp.tolist() == [True] and m.scores.tolist() == [pytest.approx(0.9)]
    r = precision_recall_at([(boxes, scores)], [torch.tensor([FACE_A])], delta=0.5)
    assert r["tp"] == 1
    # empty lists are [0, 4] boxes
    r = precision_recall_at([([], [])], [[]], delta=0.5)
    assert (r["n_detections"], r["n_faces"]) == (0, 0)
    m = match_detections([], [], [FACE_A])
    assert len(m.tp) == 0 and m.n_faces == 1


def test_ties_keep_input_order():
    # equal scores: the earlier detection (input order) is the true positive, the rest duplicates
    # (17 detections: numpy's default quicksort would visit index 2 before index 1)
    k = 17
    boxes = np.array([[40.0, 40, 50, 50] if i % 3 == 0 else FACE_A for i in range(k)])
    scores = np.array([0.9 if i % 3 == 0 else 0.7 for i in range(k)])
    m = match_detections(boxes, scores, np.array([FACE_A]))
    assert np.flatnonzero(m.tp).tolist() == [1]


def test_more_input_errors():
    with pytest.raises(ValueError, match=r"det_scores contains NaN/inf"):
        match_detections(np.zeros((1, 4)), [np.nan], np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"image 0: det_scores contains NaN/inf"):
        precision_recall_at([(np.zeros((1, 4)), [np.inf])], [np.zeros((1, 4))])
    with pytest.raises(ValueError, match=r"ignores has 1 images but gts has 2"):
        precision_recall_at([(np.zeros((0, 4)), np.zeros(0))] * 2, [np.zeros((0, 4))] * 2, ignores=[[]])
    with pytest.raises(ValueError, match=r"dets\[0\]: expected a \(boxes \[K,4\], scores \[K\]\) pair"):
        precision_recall_at([np.zeros((0, 4))], [np.zeros((0, 4))])
    with pytest.raises(ValueError, match=r"dets\[0\]: expected a"):
        precision_recall_at([(np.zeros((0, 4)), np.zeros(0), None)], [np.zeros((0, 4))])
    with pytest.raises(ValueError, match=r"^det_scores: expected a 1-D array, got shape \[1, 1\]$"):
        match_detections(np.zeros((1, 4)), [[0.5]], np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"^image 0: ignore: expected a 1-D array"):
        precision_recall_at([(np.zeros((0, 4)), [])], [np.zeros((1, 4))], ignores=[[[True]]])
    with pytest.raises(ValueError, match=r"^thresholds: expected a 1-D array"):
        threshold_fbeta_curve([], [], thresholds=[[0.1, 0.2]])
    with pytest.raises(ValueError, match=r"^thresholds: need at least two strictly increasing values$"):
        threshold_fbeta_curve([], [], thresholds=[0.5])
    with pytest.raises(ValueError, match=r"^thresholds: need at least two strictly increasing values$"):
        threshold_fbeta_curve([], [], thresholds=[0.5, 0.5])
    assert len(threshold_fbeta_curve([], [], thresholds=[0.2, 0.5])["thresholds"]) == 2
    with pytest.raises(ValueError, match=r"^gt_boxes: expected shape \[N, 4\], got \[1, 5\]$"):
        match_detections(np.zeros((0, 4)), [], np.zeros((1, 5)))


def test_defaults_delta_and_thresholds():
    # δ defaults to 0.99 (Tables 1-3): 0.99 is kept, 0.9899 is not
    dets = [(np.array([FACE_A, FACE_B]), np.array([0.99, 0.9899]))]
    r = precision_recall_at(dets, [np.array([FACE_A, FACE_B])])
    assert (r["tp"], r["n_detections"], r["delta"]) == (1, 1, 0.99)


def test_wider_detection_metrics_thresholds_keep_lists_and_missing_at_delta_zero():
    boxes = np.array([[0, 0, 9, 9], [100, 100, 9, 9]], dtype=float)
    gt = {"all": {"ev": {"img": {"boxes": boxes, "keep": None}, "other": {"boxes": boxes[:1], "keep": None}}},
          "easy": {"ev": {"img": {"boxes": boxes, "keep": np.array([1.0])},  # float 1-based lists work too
                          "other": {"boxes": boxes[:1], "keep": np.array([1])}}}}
    preds = {"ev": {"img": np.array([[0, 0, 9, 9, 0.8], [100, 100, 9, 9, 0.3]])}}  # "other" has no file
    res = wider_detection_metrics(preds, gt, settings=("easy", "all"), delta=0.0, thresholds=[0.0, 0.5, 1.0],
                                  betas=(1.0,))
    # the missing image adds no detection even at δ = 0
    assert (res["all"]["tp"], res["all"]["n_detections"], res["all"]["n_faces"]) == (2, 2, 3)
    # easy counts A (img) and A (other); B is ignored, so its detection is dropped
    assert (res["easy"]["tp"], res["easy"]["n_detections"], res["easy"]["n_faces"]) == (1, 1, 2)
    # AFβ on the given grid 0, .5, 1: all: F(P 1, R 2/3) = 0.8 at 0, F(1, 1/3) = 0.5 at .5, 0 at 1 -> (0.8 + 2 * .5) / 4
    assert res["all"]["afbeta"][1.0] == pytest.approx((0.8 + 0.5 + 0.5 + 0.0) / 4)
    assert res["easy"]["afbeta"][1.0] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3 + 0.0) / 4)


def test_unit_table_and_patch_rate_keep_a_score_exactly_at_delta_and_iou_exactly_at_threshold():
    """detection_unit_table and patch_as_face_rate use the same ≥ δ / ≥ IoU rules as precision_recall_at."""
    from facelab.metrics.detection import detection_unit_table, patch_as_face_rate

    tall = [0.0, 0.0, 10.0, 20.0]  # IoU with FACE_A exactly 0.5
    dets = [(np.array([tall, [40.0, 40.0, 50.0, 50.0]]), np.array([0.75, 0.75]))]
    gts = [np.array([FACE_A, FACE_B])]
    t = detection_unit_table(dets, gts, None, [["u1", "u2"]], delta=0.75)
    assert (t.total("tp"), t.total("fp"), t.total("faces")) == (1.0, 1.0, 2.0)
    r = precision_recall_at(dets, gts, delta=0.75)
    assert (r["tp"], r["fp"], r["n_faces"]) == (1, 1, 2)
    t = detection_unit_table(dets, gts, None, [["u1", "u2"]], delta=np.nextafter(0.75, 1))
    assert (t.total("tp"), t.total("fp")) == (0.0, 0.0)
    t = detection_unit_table(dets, gts, None, [["u1", "u2"]], delta=0.75, iou=np.nextafter(0.5, 1))
    assert (t.total("tp"), t.total("fp")) == (0.0, 2.0)
    # a detection at exactly δ covering a patch box with IoU exactly 0.5 is a hit; just above either, it is not
    patches = [np.array([FACE_A, [60.0, 60.0, 70.0, 70.0]])]
    assert patch_as_face_rate(dets, patches, delta=0.75) == 0.5
    assert patch_as_face_rate(dets, patches, delta=np.nextafter(0.75, 1)) == 0.0
    assert patch_as_face_rate(dets, patches, delta=0.75, iou=np.nextafter(0.5, 1)) == 0.0
    t = detection_unit_table(dets, gts, None, [["u1", "u2"]], delta=0.75, patch_boxes=[np.array([FACE_A, FACE_B])])
    assert (t.total("patch_hits"), t.total("patches")) == (1.0, 2.0)


def test_patch_rate_pools_images_and_names_bad_input():
    from facelab.metrics.detection import detection_unit_table, patch_as_face_rate

    hit = (np.array([FACE_A]), np.array([0.9]))
    miss = (np.zeros((0, 4)), np.zeros(0))
    patches = [np.array([FACE_A]), np.array([FACE_A, FACE_B])]
    assert patch_as_face_rate([hit, miss], patches, delta=0.5) == 1 / 3  # 1 hit of 3 patches over both images
    assert patch_as_face_rate([miss, hit], patches, delta=0.5) == 1 / 3  # FACE_A in image 2 hit, B not
    assert np.isnan(patch_as_face_rate([miss], [np.zeros((0, 4))], delta=0.5))
    with pytest.raises(ValueError, match=r"^patch_boxes: expected shape \[N, 4\], got \[3\]$"):
        patch_as_face_rate([hit], [np.array([1.0, 2.0, 3.0])], delta=0.5)
    with pytest.raises(ValueError, match=r"^det_boxes: expected shape \[N, 4\], got \[1, 3\]$"):
        patch_as_face_rate([(np.array([[1.0, 2.0, 3.0]]), np.array([0.9]))], [np.array([FACE_A])], delta=0.5)
    with pytest.raises(ValueError, match=r"^det_scores: expected a 1-D array, got shape \[1, 1\]$"):
        patch_as_face_rate([(np.array([FACE_A]), np.array([[0.9]]))], [np.array([FACE_A])], delta=0.5)
    with pytest.raises(ValueError, match=r"^image 0: gt_boxes: expected shape \[N, 4\], got \[2\]$"):
        detection_unit_table([hit], [np.array([1.0, 2.0])], None, [["u"]], delta=0.5)
    with pytest.raises(ValueError, match=r"^image 0: det_scores: expected a 1-D array, got shape \[1, 1\]$"):
        detection_unit_table([(np.array([FACE_A]), np.array([[0.9]]))], [np.array([FACE_A])], None, [["u"]], 0.5)
    with pytest.raises(ValueError, match=r"^image 0: det_boxes: expected shape \[N, 4\], got \[1, 3\]$"):
        detection_unit_table([(np.array([[1.0, 2.0, 3.0]]), np.array([0.9]))], [np.array([FACE_A])], None, [["u"]], 0.5)
