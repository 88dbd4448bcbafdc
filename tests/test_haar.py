"""OpenCV Haar cascade as a black-box FaceDetector (transfer target of chapter 1, Table 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.models.base import FaceDetector
from facelab.models.haar import HaarCascadeDetector, haar


def _photo():
    cv2 = pytest.importorskip("cv2")
    from facelab import assets

    try:
        p = assets.path("face-api/demo/sample1.jpg")
    except Exception as e:  # pragma: no cover - cache missing
        pytest.skip(f"asset cache unavailable: {e}")
    im = cv2.imread(str(p))[:, :, ::-1]
    im = cv2.resize(im, (im.shape[1] // 4, im.shape[0] // 4), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float() / 255


def test_detects_faces_on_a_photo_and_blank_has_none():
    det = haar()
    assert isinstance(det, FaceDetector)
    img = _photo()
    d = det.detect(img)[0]
    assert len(d) >= 1 and d.boxes.shape[1] == 4
    assert (d.boxes[:, 2] > d.boxes[:, 0]).all() and (d.boxes[:, 3] > d.boxes[:, 1]).all()
    assert torch.all(d.scores == 1.0)
    assert len(det.detect(torch.full((1, 3, 120, 160), 0.5))[0]) == 0
    # a covered face is no longer found: black out every detection and re-run
    covered = img.clone()
    for x1, y1, x2, y2 in d.boxes.round().long().tolist():
        covered[:, y1:y2, x1:x2] = 0
    assert len(det.detect([covered])[0]) < len(d) or len(d) == 0


def test_weights_scores_and_threshold():
    det = HaarCascadeDetector(scores="weights")
    img = _photo()
    d = det.detect(img)[0]
    assert ((d.scores > 0) & (d.scores < 1)).all()
    assert torch.all(d.scores[:-1] >= d.scores[1:])
    assert len(det.detect(img, score_threshold=1.01)[0]) == 0


def test_black_box_errors():
    det = haar()
    with pytest.raises(NotImplementedError, match="black-box"):
        det.dense(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="grayscale"):
        det.detect(torch.zeros(1, 1, 32, 32))
    with pytest.raises(FileNotFoundError, match="nope.xml"):
        HaarCascadeDetector("nope.xml")
    with pytest.raises(ValueError, match="scores"):
        HaarCascadeDetector(scores="probability")


def test_registered_in_the_model_zoo():
    from facelab import models

    assert models.MODELS["haar"] == "facelab.models.haar:haar"
    det = models.load("haar")
    assert isinstance(det, HaarCascadeDetector) and not det.training
    assert len(det.detect(torch.full((1, 3, 64, 64), 0.5))[0]) == 0
