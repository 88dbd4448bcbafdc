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


def test_wider_detection_metrics_per_setting():
    # in-memory gt in the load_wider_gt format: one image, faces (x y w h) A, B and a tiny C ignored in easy
    boxes = np.array([[0, 0, 9, 9], [100, 100, 9, 9], [200, 200, 2, 2]], dtype=float)
    gt = {"all": {"ev": {"img": {"boxes": boxes, "keep": None}}},
          "easy": {"ev": {"img": {"boxes": boxes, "keep": np.array([1, 2])}}}}
    # raw scores, no normalisation: A 0.995 (TP), C 0.993 (ignored in easy), (11,10,2,2)-like miss 0.991 (FP),
    # B 0.5 (TP, but below δ)
    preds = {"ev": {"img": np.array([[0, 0, 9, 9, 0.995], [200, 200, 2, 2, 0.993], [300, 300, 9, 9, 0.991],
                                     [100, 100, 9, 9, 0.5]])}}
    res = wider_detection_metrics(preds, gt, settings=("easy", "all"), delta=0.99)
    assert (res["easy"]["tp"], res["easy"]["fp"], res["easy"]["n_faces"]) == (1, 1, 2)
    assert (res["all"]["tp"], res["all"]["fp"], res["all"]["n_faces"]) == (2, 1, 3)
    assert res["easy"]["precision"] == 0.5 and res["all"]["recall"] == pytest.approx(2 / 3)
    assert set(res["all"]["afbeta"]) == {0.001, 0.01, 0.1, 0.5}
    # +1 pixel IoU: a detection (1,0,2,2)-style shift of C by one pixel still matches under WIDER's convention
    preds2 = {"ev": {"img": np.array([[201, 200, 2, 2, 0.995]])}}
    assert wider_detection_metrics(preds2, gt, settings=("all",))["all"]["tp"] == 1
    with pytest.raises(FileNotFoundError, match="ev/img"):
        wider_detection_metrics({}, gt, settings=("all",), missing="error")
