"""The embedded face set: annotation integrity, split, augmentation, aligned crops."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from facelab import assets
from facelab.data import DatasetFormatError
from facelab.data.celeba import CELEBA_ATTRIBUTES
from facelab.data.faces import (ANNOTATION_FILE, ARCFACE_TEMPLATE_112, ATTRIBUTES, PHOTOS, FaceSet, align_face,
                                augment, bundled_faces)

EXPECTED_COUNTS = {"sample1": 3, "sample2": 3, "sample3": 3, "sample4": 4, "sample5": 5, "sample6": 4,
                   "t1": 6, "tom_hanks": 1, "astronaut": 1}


def _assets_present() -> bool:
    return all(assets.verify([a])[a] == "ok" for a in PHOTOS.values())


needs_photos = pytest.mark.skipif(not _assets_present(), reason="bundled photos not in the asset cache "
                                                               "(run `facelab assets fetch`)")


@pytest.fixture(scope="module")
def fs() -> FaceSet:
    return bundled_faces()


def test_nine_photos_and_face_counts(fs):
    assert [p.photo_id for p in fs.photos] == list(PHOTOS)
    assert {p.photo_id: len(p.face_ids) for p in fs.photos} == EXPECTED_COUNTS
    assert len(fs.faces) == sum(EXPECTED_COUNTS.values()) == 30
    assert sum(len(fs.photo(f"sample{i}").face_ids) for i in range(1, 7)) == 22
    for p in fs.photos:
        assert p.asset == PHOTOS[p.photo_id]
        assert p.boxes.shape == (len(p.face_ids), 4) and p.boxes.dtype == torch.float32


def test_ids_unique_stable_left_to_right(fs):
    ids = [f.face_id for f in fs.faces]
    assert len(set(ids)) == len(ids)
    assert ids == [f"{pid}-{k}" for pid, n in EXPECTED_COUNTS.items() for k in range(n)]
    assert [f.face_id for f in FaceSet.load().faces] == ids  # stable across loads
    for p in fs.photos:  # numbering follows x1, left to right
        assert torch.all(p.boxes[1:, 0] >= p.boxes[:-1, 0])


def test_boxes_landmarks_labels_valid(fs):
    for f in fs.faces:
        p = fs.photo(f.photo_id)
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= p.width and 0 <= y1 < y2 <= p.height, f.face_id
        assert (x2 - x1) >= 20 and (y2 - y1) >= 20, f.face_id
        assert f.landmarks5.shape == (5, 2)
        w, h = x2 - x1, y2 - y1
        inside = ((f.landmarks5[:, 0] > x1 - 0.25 * w) & (f.landmarks5[:, 0] < x2 + 0.25 * w)
                  & (f.landmarks5[:, 1] > y1 - 0.25 * h) & (f.landmarks5[:, 1] < y2 + 0.25 * h))
        assert inside.all(), f.face_id
        assert f.landmarks5[3:, 1].mean() > f.landmarks5[:2, 1].mean(), f.face_id  # mouth below eyes
        assert list(f.labels) == list(CELEBA_ATTRIBUTES)  # the 4 first labels + the later ones (null = unsure)
        assert f.source in ("mtcnn", "hand")
    lab = fs.labels()
    assert lab.shape == (30, 4)
    raw = json.loads(ANNOTATION_FILE.read_text())["faces"]
    for j, a in enumerate(ATTRIBUTES):
        assert int((lab[:, j] == 1).sum()) == sum(r["labels"][a] is True for r in raw)
        assert int(torch.isnan(lab[:, j]).sum()) == sum(r["labels"][a] is None for r in raw)
    assert 0 < int(lab[:, 0].eq(1).sum()) < 30  # both sexes present


@needs_photos
def test_photo_sizes_match_annotation(fs):
    for p in fs.photos:
        img = p.image()
        assert img.shape == (3, p.height, p.width), p.photo_id
        assert img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    small = fs.photo("sample1").image(max_side=320)
    assert max(small.shape[1:]) == 320
    b = fs.photo("sample1").scaled_boxes(320)
    assert torch.allclose(b, fs.photo("sample1").boxes * (320 / 1920))


def test_split_fixed_deterministic_by_photo(fs):
    s = fs.split()
    assert list(s.test_photos) == ["sample2", "sample6", "tom_hanks"]
    for sp in [s] + [fs.split(seed) for seed in range(8)]:
        assert set(sp.train_photos).isdisjoint(sp.test_photos)
        assert set(sp.train_photos) | set(sp.test_photos) == set(PHOTOS)
        assert len(sp.test_photos) == 3
        assert any(EXPECTED_COUNTS[p] > 1 for p in sp.train_photos)
        assert any(EXPECTED_COUNTS[p] > 1 for p in sp.test_photos)
        assert {fs.face(f).photo_id for f in sp.test_faces} <= set(sp.test_photos)
        assert {fs.face(f).photo_id for f in sp.train_faces} <= set(sp.train_photos)
        assert len(sp.train_faces) + len(sp.test_faces) == 30
    assert fs.split(3).test_photos == fs.split(3).test_photos
    assert len({tuple(fs.split(seed).test_photos) for seed in range(8)}) > 1
    train, test = s
    assert train == s.train_photos and test == s.test_photos


def _square_image():
    img = torch.zeros(3, 60, 100)
    img[:, 10:30, 20:40] = 1.0
    return img, torch.tensor([[20.0, 10.0, 40.0, 30.0]])


def test_augment_deterministic_per_seed():
    img, boxes = _square_image()
    a1, b1 = augment(img, boxes, torch.Generator().manual_seed(7))
    a2, b2 = augment(img, boxes, torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    outs = [augment(img, boxes, torch.Generator().manual_seed(s)) for s in range(6)]
    assert len({(tuple(o[0].shape), tuple(o[1].flatten().tolist())) for o in outs}) > 1


def test_augment_flip_moves_boxes():
    img, boxes = _square_image()
    out, b = augment(img, boxes, torch.Generator().manual_seed(0), hflip_p=1.0, crop=(1, 1), scale=(1, 1),
                     brightness=0, contrast=0, saturation=0)
    assert torch.allclose(out, img.flip(-1), atol=1e-5)
    assert torch.allclose(b, torch.tensor([[60.0, 10.0, 80.0, 30.0]]))
    out, b = augment(img, boxes, torch.Generator().manual_seed(0), hflip_p=0.0, crop=(1, 1), scale=(1, 1),
                     brightness=0, contrast=0, saturation=0)
    assert torch.allclose(out, img, atol=1e-5) and torch.allclose(b, boxes)


@pytest.mark.parametrize("seed", range(10))
def test_augment_boxes_follow_content(seed):
    img, boxes = _square_image()
    out, b = augment(img, boxes, torch.Generator().manual_seed(seed), saturation=0)
    H, W = out.shape[1:]
    x1, y1, x2, y2 = b[0].tolist()
    assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
    inner = out[:, round(y1) + 2:round(y2) - 2, round(x1) + 2:round(x2) - 2]
    assert inner.numel() > 0 and inner.mean() > 0.6  # the white square is still under its box
    mask = torch.ones(H, W, dtype=torch.bool)
    mask[max(0, round(y1) - 2):round(y2) + 2, max(0, round(x1) - 2):round(x2) + 2] = False
    assert out[:, mask].mean() < 0.35  # and nothing white outside it


def test_align_face_template_is_identity():
    img = torch.rand(3, 140, 150, generator=torch.Generator().manual_seed(0))
    crop = align_face(img, landmarks=ARCFACE_TEMPLATE_112, size=112)
    assert crop.shape == (3, 112, 112)
    assert torch.allclose(crop, img[:, :112, :112], atol=1e-4)
    shifted = align_face(img, landmarks=ARCFACE_TEMPLATE_112 + np.array([10.0, 5.0]), size=112)
    assert torch.allclose(shifted, img[:, 5:117, 10:122], atol=1e-4)
    box = align_face(img, box=(10, 20, 42, 52), size=32)
    assert torch.allclose(box, img[:, 20:52, 10:42], atol=1e-4)
    with pytest.raises(ValueError):
        align_face(img, size=112)


@needs_photos
def test_aligned_crops_and_views(fs):
    for fid in ("astronaut-0", "t1-2"):
        c = fs.aligned_crop(fid)
        assert c.shape == (3, 112, 112) and 0 <= c.min() and c.max() <= 1 and c.std() > 0.05
    assert fs.aligned_crop("astronaut-0", size=160, mode="box").shape == (3, 160, 160)
    v1 = list(fs.views(2, seed=5, photo_ids=["astronaut", "tom_hanks"], max_side=128))
    v2 = list(fs.views(2, seed=5, photo_ids=["astronaut", "tom_hanks"], max_side=128))
    assert [v.photo_id for v in v1] == [v.photo_id for v in v2] and {v.photo_id for v in v1} == {"astronaut", "tom_hanks"}
    for a, b in zip(v1, v2):
        assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)
        assert a.boxes.shape == (1, 4) and a.face_ids == fs.photo(a.photo_id).face_ids


def test_malformed_annotation_names_file(tmp_path):
    data = json.loads(ANNOTATION_FILE.read_text())
    bad = tmp_path / "faces.json"
    data["faces"][0]["box"] = [0, 0, 99999, 10]
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=re.escape(str(bad)) + ".*sample1-0.*box"):
        FaceSet.load(bad)
    data = json.loads(ANNOTATION_FILE.read_text())
    data["faces"][1]["face_id"] = data["faces"][0]["face_id"]
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="duplicate face_id"):
        FaceSet.load(bad)
    data = json.loads(ANNOTATION_FILE.read_text())
    data["faces"][2]["labels"]["Has_Freckles"] = True
    bad.write_text(json.dumps(data, indent=2))
    line = next(i + 1 for i, ln in enumerate(bad.read_text().splitlines()) if '"sample1-2"' in ln)
    with pytest.raises(DatasetFormatError, match=re.escape(f"{bad}:{line}: faces[2] (sample1-2): unknown attribute")):
        FaceSet.load(bad)
    data["faces"][2]["labels"].pop("Has_Freckles")
    data["faces"][2]["labels"].pop("Young")
    bad.write_text(json.dumps(data, indent=2))
    with pytest.raises(DatasetFormatError, match=r"sample1-2.*missing or bad field.*Young"):
        FaceSet.load(bad)
    bad.write_text('{"photos": [\n  oops\n]}')
    with pytest.raises(DatasetFormatError, match=re.escape(f"{bad}:2")):
        FaceSet.load(bad)
