"""The official WIDER FACE evaluator on a hand-made fixture (.mat files in the official nesting).

Fixture (faces x y w h; setting keep lists are 1-based like gt_list):

  0--Parade/A   F1 (0,0,9,9)  F2 (100,100,9,9)  F3 (200,200,9,9)   easy/medium keep [1,2], hard [1,2,3]
  0--Parade/B   G1 (10,10,2,2)                                    all settings keep [1]
  1--Hand/C     H1 (50,50,9,9)  H2 (0,0,9,9)                       easy/medium/hard keep [1]
  1--Hand/D     K1 (0,0,9,9), no predictions                      easy keep [], medium/hard [1]
  1--Hand/E     no faces, one prediction (skipped by the protocol)

Predictions (raw score -> min-max normalised (s - 0.05) / 0.9):
  d1 A 0.95 -> 1.000  exactly F1                    -> TP
  eE E 0.90 -> 0.944  image without faces           -> skipped (else it would be an FP here)
  d2 A 0.85 -> 0.889  exactly F3                    -> ignored in easy/medium (dropped), TP in hard/all
  d5 B 0.75 -> 0.778  (11,10,2,2) vs G1: IoU(+1) = 2*3 / (9+9-6) = 0.5 -> TP (continuous IoU 1/3 would be FP)
  d6 B 0.70 -> 0.722  background                    -> FP
  d7 C 0.65 -> 0.667  exactly H1                    -> TP
  d3 A 0.55 -> 0.556  (1,0,9,9) vs F1: IoU(+1) 90/110 -> duplicate of F1 -> FP
  d4 A 0.05 -> 0.000  background                    -> FP
Every score falls in its own bucket of the 1000 thresholds, so the PR points are the prefixes.

easy (4 faces: F1 F2 G1 H1): TP/proposals after d1 1/1, d5 2/2, d6 2/3, d7 3/4, d3 3/5, d4 3/6.
  recall .25 .5 .5 .75 .75 .75; envelope precision 1 up to recall .5, .75 at .75, 0 beyond.
  AP = .25*1 + .25*1 + .25*.75 = 0.6875
medium (5 faces: + K1): same counts, recall /5 -> AP = .2 + .2 + .2*.75 = 0.55
hard (6 faces: F1 F2 F3 G1 H1 K1): d1 1/1, d2 2/2, d5 3/3, d6 3/4, d7 4/5, d3 4/6, d4 4/7
  AP = 3/6 * 1 + 1/6 * .8 = 0.633333...
all (7 faces, none ignored): same detections, AP = 3/7 + 1/7 * .8 = 3.8/7 = 0.542857...
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from facelab.data.wider_mat import load_wider_gt, load_wider_mat
from facelab.metrics._matching import iou_matrix
from facelab.metrics.widerface import evaluate, normalize_scores, read_pred_file, read_predictions, voc_ap

EXPECTED = {"easy": 0.6875, "medium": 0.55, "hard": 3 / 6 + 0.8 / 6, "all": 3.8 / 7}

FACES = {
    ("0--Parade", "A"): [[0, 0, 9, 9], [100, 100, 9, 9], [200, 200, 9, 9]],
    ("0--Parade", "B"): [[10, 10, 2, 2]],
    ("1--Hand", "C"): [[50, 50, 9, 9], [0, 0, 9, 9]],
    ("1--Hand", "D"): [[0, 0, 9, 9]],
    ("1--Hand", "E"): [],
}
KEEP = {
    "easy": {"A": [1, 2], "B": [1], "C": [1], "D": [], "E": []},
    "medium": {"A": [1, 2], "B": [1], "C": [1], "D": [1], "E": []},
    "hard": {"A": [1, 2, 3], "B": [1], "C": [1], "D": [1], "E": []},
}
PREDS = {
    ("0--Parade", "A"): [[0, 0, 9, 9, 0.95], [200, 200, 9, 9, 0.85], [1, 0, 9, 9, 0.55], [300, 300, 9, 9, 0.05]],
    ("0--Parade", "B"): [[11, 10, 2, 2, 0.75], [100, 100, 20, 20, 0.70]],
    ("1--Hand", "C"): [[50, 50, 9, 9, 0.65]],
    ("1--Hand", "D"): [],
    ("1--Hand", "E"): [[5, 5, 9, 9, 0.90]],
}


def _cell(items: list) -> np.ndarray:
    a = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        a[i, 0] = x
    return a


def write_gt(d: Path) -> Path:
    """The four official files, nested like eval_tools/ground_truth (cells of cells)."""
    d.mkdir(parents=True, exist_ok=True)
    events = sorted({e for e, _ in FACES})
    imgs = {e: [n for ee, n in FACES if ee == e] for e in events}
    base = {
        "event_list": _cell([np.array([e]) for e in events]),
        "file_list": _cell([_cell([np.array([n]) for n in imgs[e]]) for e in events]),
        "face_bbx_list": _cell([_cell([np.array(FACES[e, n], dtype=np.int32).reshape(-1, 4) for n in imgs[e]])
                                for e in events]),
    }
    savemat(d / "wider_face_val.mat", base)
    for s, keep in KEEP.items():
        gt_list = _cell([_cell([np.array(keep[n], dtype=np.uint8).reshape(-1, 1) for n in imgs[e]]) for e in events])
        savemat(d / f"wider_{s}_val.mat", {**base, "gt_list": gt_list})
    return d


def write_preds(d: Path, preds: dict = PREDS, fmt: str = "{:.2f}") -> Path:
    for (e, n), rows in preds.items():
        (d / e).mkdir(parents=True, exist_ok=True)
        lines = [f"{n}.jpg", str(len(rows))] + [" ".join(fmt.format(v) for v in r) for r in rows]
        (d / e / f"{n}.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture
def fixture_dirs(tmp_path):
    return write_gt(tmp_path / "gt"), write_preds(tmp_path / "pred")


def test_load_wider_mat(fixture_dirs):
    gt_dir, _ = fixture_dirs
    allm = load_wider_mat(gt_dir / "wider_face_val.mat")
    assert list(allm) == ["0--Parade", "1--Hand"] and list(allm["1--Hand"]) == ["C", "D", "E"]
    a = allm["0--Parade"]["A"]
    assert a["boxes"].dtype == np.float64 and a["boxes"].shape == (3, 4) and a["keep"] is None
    assert allm["1--Hand"]["E"]["boxes"].shape == (0, 4)
    easy = load_wider_mat(gt_dir / "wider_easy_val.mat")
    np.testing.assert_array_equal(easy["0--Parade"]["A"]["keep"], [1, 2])
    assert easy["1--Hand"]["D"]["keep"].dtype == np.int64 and easy["1--Hand"]["D"]["keep"].size == 0
    gt = load_wider_gt(gt_dir)
    assert set(gt) == {"all", "easy", "medium", "hard"}
    np.testing.assert_array_equal(gt["hard"]["0--Parade"]["A"]["keep"], [1, 2, 3])


def test_load_wider_mat_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="nothere.mat.*not found"):
        load_wider_mat(tmp_path / "nothere.mat")
    savemat(tmp_path / "bad.mat", {"event_list": _cell([np.array(["x"])])})
    with pytest.raises(ValueError, match=r"bad\.mat.*file_list"):
        load_wider_mat(tmp_path / "bad.mat")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match="junk.mat"):
        load_wider_mat(tmp_path / "junk.mat")
    with pytest.raises(ValueError, match="wider_face_val.mat.*not found"):
        load_wider_gt(tmp_path)


@pytest.mark.filterwarnings("error")  # 0/0 precision is NaN without a numpy warning
def test_hand_derived_ap(fixture_dirs):
    gt_dir, pred_dir = fixture_dirs
    res = evaluate(pred_dir, gt_dir)
    for s, ap in EXPECTED.items():
        assert res["ap"][s] == pytest.approx(ap, abs=1e-12), s
    assert (res["score_min"], res["score_max"]) == (0.05, 0.95)
    c = res["curves"]["easy"]
    assert c["thresholds"][0] == pytest.approx(0.999) and c["thresholds"][-1] == 0.0 and len(c["thresholds"]) == 1000
    # d1..d4 minus d2 (ignored) and E's prediction (image without faces): 6 proposals, 3 recalled, 4 faces
    assert (c["proposals"][-1], c["recalled"][-1], c["n_faces"]) == (6, 3, 4)
    assert res["curves"]["hard"]["proposals"][-1] == 7 and res["curves"]["all"]["n_faces"] == 7


def test_ignore_rule_drops_the_detection(fixture_dirs):
    gt_dir, pred_dir = fixture_dirs
    res = evaluate(pred_dir, gt_dir, settings=("easy", "hard"))
    # at the threshold just below d2's score (0.889) only d1 and d2 pass
    t = int(np.flatnonzero(res["curves"]["easy"]["thresholds"] <= 0.888)[0])
    assert res["curves"]["easy"]["proposals"][t] == 1 and res["curves"]["easy"]["recalled"][t] == 1
    assert res["curves"]["hard"]["proposals"][t] == 2 and res["curves"]["hard"]["recalled"][t] == 2


def test_plus_one_iou():
    a = np.array([[11.0, 10, 13, 12]])  # (11,10,2,2) as x1y1x2y2
    b = np.array([[10.0, 10, 12, 12]])  # (10,10,2,2)
    assert iou_matrix(a, b, plus_one=True)[0, 0] == pytest.approx(0.5)
    assert iou_matrix(a, b, plus_one=False)[0, 0] == pytest.approx(1 / 3)
    # touching boxes overlap by one pixel column under the +1 convention, not at all otherwise
    c = np.array([[12.0, 10, 14, 12]])
    assert iou_matrix(c, b, plus_one=True)[0, 0] == pytest.approx(3 / 15)
    assert iou_matrix(c, b, plus_one=False)[0, 0] == 0.0
    assert iou_matrix(np.array([[20.0, 20, 22, 22]]), b, plus_one=True)[0, 0] == 0.0


def test_plus_one_changes_the_fixture(fixture_dirs, tmp_path):
    gt_dir, _ = fixture_dirs
    preds = dict(PREDS)
    preds["0--Parade", "B"] = [[11.5, 10, 2, 2, 0.75], [100, 100, 20, 20, 0.70]]  # IoU(+1) = 1.5*3/(18-4.5) < 0.5
    res = evaluate(read_predictions(write_preds(tmp_path / "p2", preds)), gt_dir, settings=("easy",))
    # now d5 is an FP: 1/1, 1/2, 1/3, 2/4, 2/5, 2/6 -> AP = .25 * 1 + .25 * .5 = 0.375
    assert res["ap"]["easy"] == pytest.approx(0.375, abs=1e-12)


def test_min_max_normalisation(fixture_dirs):
    gt_dir, pred_dir = fixture_dirs
    preds = read_predictions(pred_dir)
    norm, lo, hi = normalize_scores(preds)
    assert (lo, hi) == (0.05, 0.95)
    np.testing.assert_allclose(norm["0--Parade"]["A"][:, 4], [1.0, 0.8 / 0.9, 0.5 / 0.9, 0.0])
    assert preds["0--Parade"]["A"][0, 4] == 0.95  # input untouched
    # an affine change of the scores inside [0, 1] leaves the normalised scores, hence AP, unchanged
    scaled = {e: {n: np.c_[p[:, :4], 0.2 + 0.5 * p[:, 4]] for n, p in ev.items()} for e, ev in preds.items()}
    ap0, ap1 = evaluate(preds, gt_dir)["ap"], evaluate(scaled, gt_dir)["ap"]
    for s in EXPECTED:
        assert ap1[s] == pytest.approx(ap0[s], abs=1e-12)
    # norm_score.m starts its running max/min at 0/1: scores all in [2, 4] -> range [1, 4]
    big = {"e": {"i": np.array([[0, 0, 1, 1, 2.0], [0, 0, 1, 1, 4.0]])}}
    out, lo, hi = normalize_scores(big)
    assert (lo, hi) == (1.0, 4.0) and out["e"]["i"][:, 4] == pytest.approx([1 / 3, 1.0])
    with pytest.raises(ValueError, match="normalise"):
        normalize_scores({"e": {"i": np.array([[0, 0, 1, 1, 1.0]])}})
    with pytest.raises(ValueError, match=r"predictions\['e'\]\['i'\]: expected shape \[N, 5\]"):
        normalize_scores({"e": {"i": np.zeros((2, 4))}})


def test_thousand_threshold_buckets(fixture_dirs):
    gt_dir, _ = fixture_dirs
    gt = load_wider_gt(gt_dir)
    empty = {e: {n: np.zeros((0, 5)) for n in ev} for e, ev in gt["all"].items()}
    preds = {e: dict(ev) for e, ev in empty.items()}
    # normalised scores 1.0 (TP on G1), 0.9995 (FP) and 0.0 (FP): the first two share the bucket >= 0.999
    preds["0--Parade"]["B"] = np.array([[10, 10, 2, 2, 1.0], [300, 300, 5, 5, 0.9995], [400, 400, 5, 5, 0.0]])
    res = evaluate(preds, gt, settings=("all",))
    c = res["curves"]["all"]
    assert (c["proposals"][0], c["recalled"][0]) == (2, 1)
    # PR points: (1/7, 1/2) for every threshold; AP = 1/7 * 1/2
    assert res["ap"]["all"] == pytest.approx(1 / 14, abs=1e-12)


def test_voc_ap_skips_nan_precision():
    rec = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    prec = np.array([np.nan, np.nan, 1.0, 0.5, 0.5])
    assert voc_ap(rec, prec) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)


@pytest.mark.parametrize("text, line, msg", [
    ("", 1, "image name"),
    ("A.jpg\n", 2, "number of boxes"),
    ("A.jpg\nthree\n", 2, "integer"),
    ("A.jpg\n-1\n", 2, "negative"),
    ("A.jpg\n2\n1 2 3 4 0.5\n", 4, "announces 2 boxes"),
    ("A.jpg\n1\n1 2 3 4 0.5\n5 6 7 8 0.9\n", 4, "announces 1 boxes"),
    ("A.jpg\n2\n1 2 3 4 0.5\n1 2 3 0.5\n", 4, "5 numbers"),
    ("A.jpg\n1\n1 2 x 4 0.5\n", 3, "not a number"),
    ("A.jpg\n1\n1 2 3 4 nan\n", 3, "non-finite"),
])
def test_malformed_prediction_file(tmp_path, text, line, msg):
    f = tmp_path / "A.txt"
    f.write_text(text)
    with pytest.raises(ValueError, match=rf"A\.txt:{line}: .*{msg}"):
        read_pred_file(f)


def test_read_predictions(fixture_dirs, tmp_path):
    _, pred_dir = fixture_dirs
    preds = read_predictions(pred_dir)
    assert preds["1--Hand"]["D"].shape == (0, 5)
    np.testing.assert_allclose(preds["0--Parade"]["B"][0], [11, 10, 2, 2, 0.75])
    name, boxes = read_pred_file(pred_dir / "1--Hand" / "C.txt")
    assert name == "C.jpg" and boxes.shape == (1, 5)
    (pred_dir / "1--Hand" / "C.txt").write_text("0--Parade/Z.jpg\n0\n")
    with pytest.raises(ValueError, match=r"C\.txt:1: .*does not match"):
        read_predictions(pred_dir)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_predictions(tmp_path / "nowhere")


def test_missing_prediction_file(fixture_dirs):
    gt_dir, pred_dir = fixture_dirs
    (pred_dir / "1--Hand" / "D.txt").unlink()
    with pytest.raises(FileNotFoundError, match="1--Hand/D"):
        evaluate(pred_dir, gt_dir)
    res = evaluate(pred_dir, gt_dir, missing="empty")  # D had no predictions anyway
    assert res["ap"]["medium"] == pytest.approx(EXPECTED["medium"], abs=1e-12)
    with pytest.raises(ValueError, match="settings"):
        evaluate(pred_dir, gt_dir, settings=("easy", "extreme"), missing="empty")


def test_cli(fixture_dirs, tmp_path, capsys):
    from facelab.cli import main

    gt_dir, pred_dir = fixture_dirs
    out = tmp_path / "ap.json"
    assert main(["wider-eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Easy    Val AP: 0.687500" in text and "All     Val AP: 0.542857" in text
    data = json.loads(out.read_text())
    for s, ap in EXPECTED.items():
        assert data["ap"][s] == pytest.approx(ap, abs=1e-12)
    assert len(data["curves"]["hard"]["precision"]) == 1000


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface_eval"


@pytest.mark.skipif(not (SHARED / "expected_ap.json").is_file(), reason="development data (../shared) not present")
def test_dev_real_wider_val_agrees_with_expected():
    expected = json.loads((SHARED / "expected_ap.json").read_text())
    res = evaluate(SHARED / expected.get("predictions", "example_predictions"), SHARED)
    for s in ("easy", "medium", "hard", "all"):
        assert abs(res["ap"][s] - expected[s]) < 1e-6, s


def test_voc_ap_uses_the_precision_envelope():
    # precision rises with recall: the envelope lifts the first segment to 1 (0.75 without it)
    assert voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == 1.0
    assert voc_ap(np.array([0.25, 0.5, 1.0]), np.array([1.0, 0.5, 0.75])) == pytest.approx(0.25 + 0.75 * 0.75)
    # recall that stops short of 1 adds nothing beyond its last point
    assert voc_ap(np.array([0.5]), np.array([1.0])) == 0.5


@pytest.mark.parametrize("line1, stem", [
    ("0--Parade\\0_Parade_1.jpg", "0_Parade_1"),
    ("a/b/0--Parade/x_y.jpg", "x_y"),
    ("x_y.jpeg", "x_y"),
    ("x_y.JPEG", "x_y"),
    ("x_y.png", "x_y"),
    ("x_y.PNG", "x_y"),
    ("x.v2", "x.v2"),
    ("x_y", "x_y"),
])
def test_read_predictions_image_name_forms(tmp_path, line1, stem):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / f"{stem}.txt").write_text(f"{line1}\n1\n1 2 3 4 0.5\n")
    preds = read_predictions(tmp_path)
    assert list(preds["ev"]) == [stem] and preds["ev"][stem].dtype == np.float64


def test_read_predictions_without_events(tmp_path):
    (tmp_path / "stray.txt").write_text("x\n0\n")
    with pytest.raises(ValueError, match=r": no event folders with prediction files$"):
        read_predictions(tmp_path)


def test_normalize_scores_rejects_non_finite():
    with pytest.raises(ValueError, match=r"^predictions\['e'\]\['i'\]: non-finite values$"):
        normalize_scores({"e": {"i": np.array([[0, 0, 1, 1, 0.5], [0, 0, 1, 1, np.inf]])}})


def _gt(images: dict, keep: dict | None = None) -> dict:
    """In-memory load_wider_gt output: {event: {name: boxes x y w h}} (+ an "easy" setting's keep lists)."""
    out = {"all": {e: {n: {"boxes": np.array(b, dtype=float).reshape(-1, 4), "keep": None} for n, b in ev.items()}
                   for e, ev in images.items()}}
    if keep is not None:
        out["easy"] = {e: {n: {"boxes": out["all"][e][n]["boxes"], "keep": keep.get((e, n))} for n in ev}
                       for e, ev in images.items()}
    return out


def test_evaluate_face_ids_do_not_collide_across_images():
    # image a has two faces, b one, c one; each detected once -> recall 1, AP 1
    face, face2 = [0, 0, 9, 9], [20, 0, 9, 9]
    gt = _gt({"ev": {"a": [face, face2], "b": [face], "c": [face2]}})
    preds = {"ev": {"a": np.array([face + [0.9], face2 + [0.8]]), "b": np.array([face + [0.7]]),
                    "c": np.array([face2 + [0.6]])}}
    res = evaluate(preds, gt, settings=("all",))
    c = res["curves"]["all"]
    assert (c["recalled"][-1], c["proposals"][-1], c["n_faces"]) == (4, 4, 4)
    assert res["ap"]["all"] == pytest.approx(1.0) and res["n_images"] == 3 and res["n_predictions"] == 4


@pytest.mark.filterwarnings("error")
def test_evaluate_missing_images_and_events():
    face = [0, 0, 9, 9]
    gt = _gt({"ev": {"a": [face]}, "gone": {"b": [face]}})
    preds = {"ev": {"a": np.array([face + [0.9], [50, 50, 9, 9, 0.1]])}}
    with pytest.raises(FileNotFoundError, match="gone/b"):
        evaluate(preds, gt, settings=("all",))
    res = evaluate(preds, gt, settings=("all",), missing="empty")
    c = res["curves"]["all"]
    # the missing image adds its face, no proposal
    assert (c["recalled"][-1], c["proposals"][-1], c["n_faces"]) == (1, 2, 2)
    assert res["ap"]["all"] == pytest.approx(0.5)
    # no image has both faces and predictions: nothing is matched, every proposal is skipped
    res = evaluate({"x": {"y": np.array([face + [0.9], face + [0.2]])}}, gt, settings=("all",), missing="empty")
    assert res["n_predictions"] == 0 and res["curves"]["all"]["proposals"][-1] == 0 and res["ap"]["all"] == 0.0
    with pytest.raises(ValueError, match=r"^missing must be 'error' or 'empty', got 'skip'$"):
        evaluate(preds, gt, missing="skip")
    with pytest.raises(ValueError, match=r"^gt: needs the 'all' entry \(wider_face_val\.mat\) for the face boxes$"):
        evaluate(preds, {"easy": gt["all"]})


def test_evaluate_without_images_and_without_gt_list():
    preds = {"ev": {"a": np.array([[0, 0, 9, 9, 0.9], [0, 0, 9, 9, 0.1]])}}
    res = evaluate(preds, {"all": {}}, settings=("all",))
    assert res["n_images"] == 0 and res["curves"]["all"]["n_faces"] == 0
    gt = _gt({"ev": {"a": [[0, 0, 9, 9]]}}, keep={})
    with pytest.raises(ValueError, match=r"^setting 'easy' has no gt_list$"):
        evaluate(preds, gt, settings=("easy",))


def test_evaluate_iou_threshold_is_used():
    # detection (0,0,9,9) vs face (0,0,9,19): IoU(+1) = 100/200 = 0.5: a match at 0.5, not at 0.6
    gt = _gt({"ev": {"a": [[0, 0, 9, 19]]}})
    preds = {"ev": {"a": np.array([[0, 0, 9, 9, 0.9], [40, 40, 9, 9, 0.1]])}}
    assert evaluate(preds, gt, settings=("all",))["curves"]["all"]["recalled"][-1] == 1
    assert evaluate(preds, gt, settings=("all",), iou_thresh=0.6)["curves"]["all"]["recalled"][-1] == 0


def test_pred_file_box_sizes_zero_fractional_and_negative(tmp_path):
    """w, h >= 0 are boxes (0 and fractions included); a negative w or h alone is refused with the line;
    the score column may be anything finite."""
    from facelab.metrics.widerface import read_pred_file

    f = tmp_path / "a.txt"
    f.write_text("a\n3\n1 2 0 0 0.9\n1 2 0.5 0.25 -0.5\n0 0 3 4 0.1\n")
    name, arr = read_pred_file(f)
    assert name == "a" and arr.dtype == np.float64
    assert arr.tolist() == [[1, 2, 0, 0, 0.9], [1, 2, 0.5, 0.25, -0.5], [0, 0, 3, 4, 0.1]]
    for row, lineno in (("1 2 -1 4 0.9", 3), ("1 2 4 -1 0.9", 3)):
        f.write_text(f"a\n1\n{row}\n")
        with pytest.raises(ValueError) as e:
            read_pred_file(f)
        assert str(e.value) == (f"{f}:{lineno}: negative box width/height in {row!r} (columns 3 and 4 are w h, "
                                "not x2 y2)")


def test_pred_file_that_is_not_text_is_named(tmp_path):
    from facelab.metrics.widerface import read_pred_file

    f = tmp_path / "b.txt"
    f.write_bytes(b"img\n1\n\xff\xfe 1 2 3 4\n")
    with pytest.raises(ValueError) as e:
        read_pred_file(f)
    assert str(e.value) == (f"{f}: not a text prediction file (byte 6 is not UTF-8); the official format is text: "
                            "image name, number of boxes, then 'x y w h score' lines")
