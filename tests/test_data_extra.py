"""The extra face set, identity sets, synthetic scenes and the paper-format fixtures written from the faces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab import assets
from facelab.data import DatasetFormatError
from facelab.data import faces as faces_mod
from facelab.data.celeba import CELEBA_ATTRIBUTES, CelebA
from facelab.data.faces import (EXTRA_ANNOTATION_FILE, EXTRA_PHOTOS, PHOTOS, FaceRecord, FaceSet, Photo, all_faces,
                                bundled_faces, extra_faces)
from facelab.data.fixtures import celeba_label_mask, write_celeba, write_lfw, write_pubfig
from facelab.data.identities import augment_face, identity_set
from facelab.data.lfw import LFWPairs, parse_lfw_pairs
from facelab.data.pubfig import IdentityFolders
from facelab.data.scenes import make_scene, read_coco, write_coco


def _present(names) -> bool:
    return all(assets.verify([a])[a] == "ok" for a in names)


needs_photos = pytest.mark.skipif(not _present(list(PHOTOS.values()) + list(EXTRA_PHOTOS.values())),
                                  reason="bundled photos not in the asset cache (run `facelab assets fetch`)")


def _line_of(file: Path, needle: str) -> int:
    return next(i + 1 for i, ln in enumerate(file.read_text().splitlines()) if needle in ln)


# ------------------------------------------------------------------ the sets
def test_core_set_is_chapter_one_data():
    """bundled_faces() and its default split are what chapter 1 was run on; the extra photos are opt-in."""
    fs = bundled_faces()
    assert [p.photo_id for p in fs.photos] == list(PHOTOS) and len(fs.faces) == 30
    s = fs.split()
    assert s.test_photos == ["sample2", "sample6", "tom_hanks"]
    assert s.train_photos == ["sample1", "sample3", "sample4", "sample5", "t1", "astronaut"]
    assert not set(EXTRA_PHOTOS) & {p.photo_id for p in fs.photos}
    assert all(f.identity == f.face_id for f in fs.faces)
    assert [f.face_id for f in fs.faces if f.landmarks68 is None] == ["sample2-0"]  # profile: failed the check
    for f in fs.faces:
        if f.landmarks68 is not None:  # the 68 points agree with the checked 5 (eye centres, mouth corners)
            lm = f.landmarks68
            size = f.box[3] - f.box[1]
            eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
            assert np.abs(eyes - f.landmarks5[:2]).max() < 0.15 * size, f.face_id
            assert np.abs(lm[[48, 54]] - f.landmarks5[3:]).max() < 0.2 * size, f.face_id


def test_extra_set_counts_identities_labels():
    ex = extra_faces()
    assert [p.photo_id for p in ex.photos] == list(EXTRA_PHOTOS)
    assert [p.asset for p in ex.photos] == list(EXTRA_PHOTOS.values())
    assert ex.identities == {"Barack_Obama": ["obama-0", "obama2-0", "obama3-0"], "Joe_Biden": ["biden-0"],
                             "Aaron_Paul": ["breakingbad-0"], "Bryan_Cranston": ["breakingbad-1"],
                             "einstein-0": ["einstein-0"], "Albert_Einstein": ["einstein-1", "einstein_tongue-0"],
                             "takeo": ["takeo-0"]}
    assert [f.face_id for f in ex.faces if f.landmarks68 is None] == ["einstein-0"]  # 40 px, blurred
    for f in ex.faces:
        assert list(f.labels) == list(CELEBA_ATTRIBUTES)
        if f.landmarks68 is None:
            continue
        assert f.landmarks68.shape == (68, 2) and f.landmarks5.shape == (5, 2)
        x1, y1, x2, y2 = f.box
        assert (f.landmarks68[:, 0] > x1 - 0.1 * (x2 - x1)).all() and (f.landmarks68[:, 0] < x2 + 0.1 * (x2 - x1)).all()
        assert f.landmarks68[48:68, 1].mean() > f.landmarks68[36:48, 1].mean()  # mouth below eyes (iBUG order)
        assert f.labels["Male"] is True
    lab = ex.labels(attributes=CELEBA_ATTRIBUTES)
    assert (~torch.isnan(lab)).sum(1).tolist() == [25, 27, 24, 27, 19, 21, 9, 21, 23, 20]  # judged by eye; rest null
    assert int(lab[:, CELEBA_ATTRIBUTES.index("Eyeglasses")].nansum()) == 2  # Bryan_Cranston, takeo
    al = all_faces()
    assert (len(al.photos), len(al.faces), len(al.identities)) == (17, 40, 37)
    assert sorted(len({al.face(f).photo_id for f in v}) for v in al.identities.values())[-3:] == [1, 2, 3]
    assert al.labels().shape == (40, 4)


@needs_photos
def test_extra_photos_load_at_annotated_size():
    for p in extra_faces().photos:
        img = p.image()
        assert img.shape == (3, p.height, p.width)


def _write_v2(tmp_path, edit) -> Path:
    data = json.loads(EXTRA_ANNOTATION_FILE.read_text())
    edit(data)
    f = tmp_path / "extra.json"
    f.write_text(json.dumps(data, indent=2))
    return f


@pytest.mark.parametrize("edit,needle,msg", [
    (lambda d: d["faces"][1]["labels"].__setitem__("Wearing_Glasses", True), '"face_id": "obama2-0"',
     r"unknown attribute name\(s\) \['Wearing_Glasses'\]"),
    (lambda d: d["faces"][2]["labels"].pop("Smiling"), '"face_id": "obama3-0"', "39 labels, expected all 40.*Smiling"),
    (lambda d: d["faces"][3].__setitem__("face_id", "obama-0"), '"face_id": "obama-0"', "duplicate face_id"),
    (lambda d: d["faces"][0].pop("identity"), '"face_id": "obama-0"', "missing or bad field"),
    (lambda d: d["faces"][1].__setitem__("identity", "Barack Obama"), '"face_id": "obama2-0"', "identity must be"),
    (lambda d: d["faces"][0].__setitem__("landmarks68", [[0, 0]] * 67), '"face_id": "obama-0"', "landmarks68 must be 68"),
    (lambda d: d["faces"][1].__setitem__("photo_id", "nowhere"), '"face_id": "obama2-0"', "unknown photo_id"),
])
def test_v2_annotation_errors_name_file_and_line(tmp_path, edit, needle, msg):
    f = _write_v2(tmp_path, edit)
    lines = [i + 1 for i, ln in enumerate(f.read_text().splitlines()) if needle in ln]
    with pytest.raises(DatasetFormatError, match=msg) as e:
        FaceSet.load(f)
    assert e.value.file == str(f) and e.value.line == lines[-1], (e.value.line, lines)


def test_merge_refuses_repeated_ids():
    with pytest.raises(ValueError, match="face_id|photo_id"):
        FaceSet.merge(extra_faces(), extra_faces())


# ------------------------------------------------------------------ identity sets
@needs_photos
def test_identity_set_leak_free_and_deterministic():
    s = identity_set(6, train_views=3, test_views=2, seed=4)
    assert s.classes[:2] == ["Barack_Obama", "Albert_Einstein"] and len(s.classes) == 6
    ein = [(v.split, v.face_id, v.augmented) for v in s.train + s.test if v.identity == "Albert_Einstein"]
    assert {f for sp, f, _ in ein if sp == "train"}.isdisjoint({f for sp, f, _ in ein if sp == "test"})
    X, y = s.tensors("train")
    Xt, yt = s.tensors("test")
    assert X.shape == (18, 3, 112, 112) and Xt.shape == (12, 3, 112, 112)
    assert y.bincount().tolist() == [3] * 6 and yt.bincount().tolist() == [2] * 6
    # a person with several photos: train and test photos are disjoint, plain crops of them come first
    ob_train = {v.face_id for v in s.train if v.identity == "Barack_Obama"}
    ob_test = {v.face_id for v in s.test if v.identity == "Barack_Obama"}
    assert len(ob_train) == 2 and len(ob_test) == 1 and not ob_train & ob_test
    assert [v.augmented for v in s.train if v.identity == "Barack_Obama"] == [False, False, True]
    # no view is in both sides (pixel-wise)
    flat_tr, flat_te = X.flatten(1), Xt.flatten(1)
    assert torch.cdist(flat_tr, flat_te).min() > 1.0
    s2 = identity_set(6, train_views=3, test_views=2, seed=4)
    assert torch.equal(s2.tensors("train")[0], X) and torch.equal(s2.tensors("test")[0], Xt)
    assert not torch.equal(identity_set(6, train_views=3, test_views=2, seed=5).tensors("test")[0], Xt)


def test_identity_set_needs_photos_error_names_record():
    with pytest.raises(DatasetFormatError) as e:
        identity_set(3, min_photos=2, faces=all_faces())
    assert e.value.file == str(faces_mod.ANNOTATION_FILE)
    assert e.value.line == _line_of(faces_mod.ANNOTATION_FILE, '"face_id": "sample1-0"')
    assert "has 1 photo(s), the split needs at least 2" in str(e.value)
    with pytest.raises(ValueError):
        identity_set(2, test_views=0)


def test_augment_face_seeded():
    img = torch.rand(3, 160, 160, generator=torch.Generator().manual_seed(0))
    lm = np.array([[60.0, 70], [100, 70], [80, 95], [65, 115], [95, 115]])
    a = augment_face(img, lm, torch.Generator().manual_seed(1))
    assert a.shape == (3, 112, 112) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, augment_face(img, lm, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment_face(img, lm, torch.Generator().manual_seed(2)))


# ------------------------------------------------------------------ scenes
@pytest.fixture
def square_faces(monkeypatch):
    """A FaceSet of one synthetic photo: black, a white 'face' exactly at its box (60 x 80 px)."""
    img = torch.zeros(3, 200, 300)
    img[:, 60:140, 50:110] = 1.0
    monkeypatch.setattr(faces_mod, "_load_photo", lambda asset: img.clone())
    box = (50.0, 60.0, 110.0, 140.0)
    rec = FaceRecord("sq-0", "sq", box, np.zeros((5, 2)), {}, "hand", identity="sq")
    photo = Photo("sq", "synthetic", 300, 200, ["sq-0"], torch.tensor([box]))
    return FaceSet([photo], [rec], Path("synthetic.json"))


@pytest.mark.parametrize("n,distance,size", [(1, 240, 100), (9, 160, 64), (9, 40, 32), (64, 40, 20)])
def test_grid_scene_boxes_are_exact(square_faces, n, distance, size):
    sc = make_scene(n, distance, size, seed=0, faces=square_faces, context=0.25)
    assert sc.boxes.shape == (n, 4) and sc.face_ids == ["sq-0"] * n
    h = sc.boxes[:, 3] - sc.boxes[:, 1]
    assert torch.allclose(h, torch.full((n,), float(size)), atol=0.75)  # rounding of the paste size only
    ctr = (sc.boxes[:, :2] + sc.boxes[:, 2:]) / 2
    assert torch.allclose(ctr, sc.centres, atol=0.51)
    if n > 1:  # centres on the grid, distance apart
        d = torch.cdist(sc.centres, sc.centres) + torch.eye(n) * 1e9
        assert torch.allclose(d.min(1).values, torch.full((n,), float(distance)))
    for x1, y1, x2, y2 in sc.boxes.tolist():
        inner = sc.image[:, round(y1) + 1:round(y2) - 1, round(x1) + 1:round(x2) - 1]
        assert inner.min() > 0.7, (x1, y1, x2, y2)  # the white face fills its box
        ring = torch.cat([sc.image[:, round(y1) - 2:round(y2) + 2, round(x1) - 2].flatten(),
                          sc.image[:, round(y1) - 2:round(y2) + 2, round(x2) + 1].flatten()])
        assert ring.max() < 0.3  # and stops at its edge (black context; the gray background is further out)


def test_random_scene_min_distance_and_errors(square_faces):
    sc = make_scene(12, face_size=30, layout="random", min_distance=50, seed=2, faces=square_faces,
                    background="noise")
    d = torch.cdist(sc.centres, sc.centres) + torch.eye(12) * 1e9
    assert d.min() >= 50
    again = make_scene(12, face_size=30, layout="random", min_distance=50, seed=2, faces=square_faces,
                       background="noise")
    assert torch.equal(again.image, sc.image) and torch.equal(again.boxes, sc.boxes)
    with pytest.raises(ValueError, match="overlap"):
        make_scene(4, distance=20, face_size=32, faces=square_faces)
    with pytest.raises(ValueError, match="placed only"):
        make_scene(50, face_size=30, layout="random", min_distance=60, canvas=(200, 200), faces=square_faces)


@needs_photos
def test_real_scene_and_coco_roundtrip(tmp_path):
    fs = all_faces()
    a = make_scene(9, 160, 64, seed=1)
    b = make_scene(9, 160, 64, seed=1)
    assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes)
    test_ids = fs.split().test_faces
    c = make_scene(4, 100, 48, seed=3, face_ids=test_ids, layout="random", min_distance=80)
    assert set(c.face_ids) <= set(test_ids)
    ann = write_coco(tmp_path / "coco", [a, c])
    back = read_coco(ann)
    assert [p.name for p, _ in back] == ["scene_00000.png", "scene_00001.png"]
    assert torch.allclose(back[0][1], a.boxes, atol=1e-4) and torch.allclose(back[1][1], c.boxes, atol=1e-4)
    data = json.loads(ann.read_text())
    assert data["categories"] == [{"id": 1, "name": "face", "supercategory": "face"}]
    assert len(data["annotations"]) == 13 and all(x["iscrowd"] == 0 for x in data["annotations"])


def test_coco_reader_errors_name_file_and_line(tmp_path, square_faces):
    ann = write_coco(tmp_path / "coco", [make_scene(2, 100, 40, faces=square_faces)])
    data = json.loads(ann.read_text())
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    bad = tmp_path / "coco" / "bad.json"
    bad.write_text(json.dumps(data, indent=1))
    with pytest.raises(DatasetFormatError, match="duplicate annotation id") as e:
        read_coco(bad)
    assert e.value.line == [i + 1 for i, ln in enumerate(bad.read_text().splitlines()) if '"bbox"' in ln][1]
    data = json.loads(ann.read_text())
    data["images"][0]["file_name"] = "missing.png"
    bad.write_text(json.dumps(data, indent=1))
    with pytest.raises(DatasetFormatError, match="image not found") as e:
        read_coco(bad)
    assert e.value.line == _line_of(bad, "missing.png")


# ------------------------------------------------------------------ paper-format fixtures
@needs_photos
def test_celeba_fixture_reads_as_celeba(tmp_path):
    root = write_celeba(tmp_path / "celeba", seed=0)
    ds = CelebA(root, "all")
    assert len(ds) == 40 and ds.attributes == list(CELEBA_ATTRIBUTES)
    img, attrs, name = ds[0]
    assert img.shape == (3, 218, 178) and name == "000001.jpg"
    fs = all_faces()
    mask = celeba_label_mask()
    truth = fs.labels(attributes=CELEBA_ATTRIBUTES)
    assert torch.equal(ds.targets[mask], truth[mask])  # every judged label is written as judged
    assert int(mask.sum()) == int((~torch.isnan(truth)).sum()) == 573 + 216  # judged values: core, extra
    parts = {sp: set(CelebA(root, sp).files) for sp in ("train", "valid", "test")}
    assert sum(map(len, parts.values())) == 40 and all(parts.values())
    ident_part = {}
    for sp, files in parts.items():  # identity-disjoint partitions
        for f in files:
            ident_part.setdefault(fs.faces[int(f[:6]) - 1].identity, set()).add(sp)
    assert all(len(v) == 1 for v in ident_part.values())


@needs_photos
def test_pubfig_fixture_reads_as_identity_folders(tmp_path):
    root = write_pubfig(tmp_path / "pubfig", 5, views=6, seed=0)
    assert sorted(p.name for p in root.iterdir())[:2] == ["Albert Einstein", "Barack Obama"]
    tr, te = IdentityFolders(root, "train"), IdentityFolders(root, "test")
    assert len(tr.classes) == 5 and len(tr) + len(te) == 30
    assert IdentityFolders(root, min_per_identity=6).classes == tr.classes
    with pytest.raises(DatasetFormatError, match="holds 6 image.*at least 7") as e:
        IdentityFolders(root, min_per_identity=7)
    assert e.value.file == str(root / "Albert Einstein")


@needs_photos
def test_lfw_fixture_reads_as_lfw(tmp_path):
    pairs = write_lfw(tmp_path / "lfw", folds=2, seed=0)
    folds, n, ps = parse_lfw_pairs(pairs)
    ds = LFWPairs(tmp_path / "lfw")  # the same reader as for the real LFW
    assert (ds.folds, ds.n_per_class) == (folds, n) == (2, 18) and len(ds) == 72
    a, b, same, fold = ds[0]
    assert a.shape == b.shape == (3, 250, 250) and same is True and fold == 0
    people = [{p.name1 for p in ps if p.fold == k} | {p.name2 for p in ps if p.fold == k} for k in range(2)]
    assert not people[0] & people[1]  # identity-disjoint folds, as LFW's
    assert all(not p.same or p.name1 == p.name2 for p in ps) and all(p.same or p.name1 != p.name2 for p in ps)
    mism = [(p.name1, p.name2) for p in ps if not p.same]
    assert len(set(mism)) == len(mism)
    obama = [p for p in ps if p.same and p.name1 == "Barack_Obama"]
    assert obama and all(p.index1 != p.index2 and max(p.index1, p.index2) <= 3 for p in obama)  # two photos
    assert len(list((tmp_path / "lfw" / "Barack_Obama").iterdir())) == 3
    einstein = [(p.index1, p.index2) for p in ps if p.same and p.name1 == "Albert_Einstein"]
    assert einstein and set(einstein) == {(1, 2)}  # his two photos, not a photo and its augmentation


def test_celeba_header_unknown_attribute_and_identity_folder_errors(tmp_path):
    root = tmp_path / "c"
    (root / "img_align_celeba").mkdir(parents=True)
    names = list(CELEBA_ATTRIBUTES)
    names[5] = "Bangz"
    (root / "list_attr_celeba.txt").write_text("1\n" + " ".join(names) + "\n000001.jpg" + " -1" * 40 + "\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DatasetFormatError, match=re.escape(f"{root / 'list_attr_celeba.txt'}:2: unknown attribute")):
        CelebA(root, "all")


# ------------------------------------------------------------------ the sdist assets
def test_sdist_asset_by_hand_message():
    a = assets.REGISTRY["face_recognition/obama.jpg"]
    assert a.kind == "sdist" and a.spec == "face_recognition==1.3.0"
    msg = a.by_hand()
    assert "pip download --no-deps --no-binary :all: face_recognition==1.3.0" in msg
    assert "tests/test_images/obama.jpg" in msg


@pytest.mark.skipif(not _present(["face_recognition/obama.jpg"]), reason="photo not in the asset cache")
def test_sdist_fetch_takes_member_below_top_folder(tmp_path, monkeypatch):
    """_fetch_sdist on a stand-in source tarball (pip is replaced): the member is verified and placed; a
    tarball without it, or with other bytes, is refused and nothing is written."""
    import io
    import tarfile

    data = assets.path("face_recognition/obama.jpg").read_bytes()  # from the real cache
    isolated_home = tmp_path / "home"
    monkeypatch.setenv("FACELAB_HOME", str(isolated_home))

    def fake_client(members):
        def run(cmd, group, cwd):
            assert cmd[1:4] == ["-m", "pip", "download"] and "--no-binary" in cmd and cmd[-1] == "face_recognition==1.3.0"
            with tarfile.open(Path(cwd) / "face_recognition-1.3.0.tar.gz", "w:gz") as tar:
                for name, blob in members.items():
                    info = tarfile.TarInfo(f"face_recognition-1.3.0/{name}")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
        return run

    monkeypatch.setattr(assets, "_run_client", fake_client({"tests/test_images/obama.jpg": data}))
    (got,) = assets.fetch(["face_recognition/obama.jpg"])
    assert got == isolated_home / "assets" / "face_recognition" / "obama.jpg" and got.read_bytes() == data
    monkeypatch.setattr(assets, "_run_client", fake_client({"README.rst": b"x"}))
    with pytest.raises(assets.AssetError, match="has no file tests/test_images/obama2.jpg"):
        assets.fetch(["face_recognition/obama2.jpg"])
    monkeypatch.setattr(assets, "_run_client", fake_client({"tests/test_images/biden.jpg": b"not the photo"}))
    with pytest.raises(assets.AssetError, match="nothing was written"):
        assets.fetch(["face_recognition/biden.jpg"])
    assert not (isolated_home / "assets" / "face_recognition" / "biden.jpg").exists()
