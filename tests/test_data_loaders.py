"""Image I/O and the official-format loaders, on tiny fixtures written here in each exact format."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facelab.data import DatasetFormatError, ImageReadError, load_image, save_image, to_uint8
from facelab.data.celeba import CELEBA_ATTRIBUTES, CelebA
from facelab.data.lfw import LFWPairs, parse_lfw_pairs
from facelab.data.pubfig import IdentityFolders
from facelab.metrics.widerface import read_predictions
from facelab.data.wider import (WiderFace, load_wider_mat, parse_wider_gt,
                                write_wider_predictions)

SHARED_EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "widerface_eval"


def _jpg(path: Path, w: int = 8, h: int = 6, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def _raises_at(exc_info, file: Path, line: int | None) -> None:
    e = exc_info.value
    assert Path(e.file) == file and e.line == line, (e.file, e.line, str(e))
    assert str(file) in str(e) and (line is None or f":{line}:" in str(e))


# ---------------------------------------------------------------- images
def test_load_image_modes_and_roundtrip(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    for mode in ("L", "RGBA", "CMYK", "P", "I;16"):
        src = Image.fromarray(rgb)
        img = src.convert(mode) if mode != "I;16" else Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
        p = tmp_path / f"x_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png' if mode != 'I;16' else 'tif'}"
        img.save(p)
        t = load_image(p)
        assert t.shape == (3, 5, 7) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1, mode
    exact = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    out = save_image(tmp_path / "rt.png", exact)
    assert torch.equal(load_image(out), exact)
    assert np.array_equal(to_uint8(exact), rgb)


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(np.zeros((4, 10, 3), dtype=np.uint8))  # 10 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert load_image(p).shape == (3, 10, 4)


def test_image_errors_name_file(tmp_path):
    with pytest.raises(ImageReadError, match=re.escape(str(tmp_path / "none.jpg")) + ".*not found"):
        load_image(tmp_path / "none.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetFormatError, match=re.escape(str(bad)) + ".*cannot read image"):
        load_image(bad)


# ---------------------------------------------------------------- WIDER FACE
WIDER_GT = """0--Parade/0_Parade_a_1.jpg
2
1 2 3 4 0 0 0 0 0 0 
5 6 7 8 2 1 0 1 2 3 
1--Handshaking/1_Handshaking_b_2.jpg
0
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_c_3.jpg
1
0 0 8 6 1 0 1 0 0 0 
"""


def _wider(tmp_path: Path, gt: str = WIDER_GT, images: bool = True) -> Path:
    root = tmp_path / "wider"
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text(gt)
    if images:
        for rel in ("0--Parade/0_Parade_a_1.jpg", "1--Handshaking/1_Handshaking_b_2.jpg",
                    "1--Handshaking/1_Handshaking_c_3.jpg"):
            _jpg(root / "WIDER_val" / "images" / rel)
    return root


def test_wider_parse_and_items(tmp_path):
    ds = WiderFace(_wider(tmp_path), "val")
    assert len(ds) == 3
    img, boxes, info = ds[0]
    assert img.shape == (3, 6, 8)
    assert torch.equal(boxes, torch.tensor([[1.0, 2, 4, 6], [5, 6, 12, 14]]))
    assert info["event"] == "0--Parade" and info["file"] == "0_Parade_a_1.jpg"
    assert info["blur"].tolist() == [0, 2] and info["pose"].tolist() == [0, 3] and info["invalid"].tolist() == [0, 1]
    img, boxes, info = ds[1]  # count 0 -> its line of zeros is consumed, no box
    assert boxes.shape == (0, 4) and info["occlusion"].shape == (0,)
    assert ds[2][1].tolist() == [[0.0, 0.0, 8.0, 6.0]]
    assert [r.line for r in ds.records] == [1, 5, 8]


@pytest.mark.parametrize("gt,line,msg", [
    (WIDER_GT.replace("\n2\n", "\ntwo\n", 1), 2, "face count"),
    (WIDER_GT.replace("5 6 7 8 2 1 0 1 2 3 ", "5 6 7 8 2 1 0 1 2"), 4, "10 numbers"),
    (WIDER_GT.replace("1 2 3 4 0 0", "1 2 x 4 0 0"), 3, "non-numeric"),
    (WIDER_GT.replace("\n1\n0 0 8 6 1 0 1 0 0 0 \n", "\n3\n0 0 8 6 1 0 1 0 0 0 \n"), 10, "file ends"),
    (WIDER_GT.replace("0--Parade/0_Parade_a_1.jpg", "no_slash_here"), 1, "image path"),
    (WIDER_GT.replace("\n0\n0 0 0 0 0 0 0 0 0 0 \n", "\n0\n"), 7, "10 numbers"),
])
def test_wider_malformed_lines(tmp_path, gt, line, msg):
    root = _wider(tmp_path, gt)
    with pytest.raises(DatasetFormatError, match=msg) as ei:
        WiderFace(root, "val")
    _raises_at(ei, root / "wider_face_split" / "wider_face_val_bbx_gt.txt", line)


def test_wider_missing_and_unreadable_image(tmp_path):
    root = _wider(tmp_path)
    gt = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    (root / "WIDER_val/images/1--Handshaking/1_Handshaking_c_3.jpg").unlink()
    with pytest.raises(DatasetFormatError, match="image not found") as ei:
        WiderFace(root, "val")
    _raises_at(ei, gt, 8)
    (root / "WIDER_val/images/1--Handshaking/1_Handshaking_c_3.jpg").write_bytes(b"garbage")
    ds = WiderFace(root, "val")
    with pytest.raises(DatasetFormatError, match="1_Handshaking_c_3.jpg.*cannot read image") as ei:
        ds[2]
    _raises_at(ei, gt, 8)
    with pytest.raises(DatasetFormatError, match="not found") as ei:
        WiderFace(root, "train")
    _raises_at(ei, root / "wider_face_split" / "wider_face_train_bbx_gt.txt", None)


def _cell(items):
    a = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        a[i, 0] = x
    return a


def _write_mat(path: Path, with_gt: bool) -> None:
    events = ["0--Parade", "1--Handshaking"]
    files = [["0_Parade_a_1", "0_Parade_a_2"], ["1_Handshaking_b_1"]]
    boxes = [[np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int32), np.zeros((0, 4), dtype=np.int32)],
             [np.array([[10, 20, 30, 40]], dtype=np.int32)]]
    gts = [[np.array([[2]], dtype=np.uint8), np.zeros((0, 1), dtype=np.uint8)], [np.array([[1]], dtype=np.uint8)]]
    m = {
        "event_list": _cell([np.array([e]) for e in events]),
        "file_list": _cell([_cell([np.array([f]) for f in fl]) for fl in files]),
        "face_bbx_list": _cell([_cell(bl) for bl in boxes]),
    }
    if with_gt:
        m["gt_list"] = _cell([_cell(g) for g in gts])
    scipy.io.savemat(str(path), m)


def test_load_wider_mat(tmp_path):
    _write_mat(tmp_path / "wider_hard_val.mat", True)
    _write_mat(tmp_path / "wider_face_val.mat", False)
    d = load_wider_mat(tmp_path / "wider_hard_val.mat")
    assert list(d) == ["0--Parade", "1--Handshaking"]
    assert list(d["0--Parade"]) == ["0_Parade_a_1", "0_Parade_a_2"]
    x = d["0--Parade"]["0_Parade_a_1"]
    assert x["boxes"].dtype == np.float64 and x["boxes"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert x["keep"].dtype == np.int64 and x["keep"].tolist() == [2]
    assert d["0--Parade"]["0_Parade_a_2"]["boxes"].shape == (0, 4)
    assert d["0--Parade"]["0_Parade_a_2"]["keep"].tolist() == []
    assert d["1--Handshaking"]["1_Handshaking_b_1"]["keep"].tolist() == [1]
    d = load_wider_mat(tmp_path / "wider_face_val.mat")
    assert d["1--Handshaking"]["1_Handshaking_b_1"]["keep"] is None
    (tmp_path / "broken.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetFormatError, match="broken.mat.*cannot read"):
        load_wider_mat(tmp_path / "broken.mat")
    scipy.io.savemat(str(tmp_path / "nolist.mat"), {"event_list": _cell([np.array(["a"])])})
    with pytest.raises(DatasetFormatError, match="file_list"):
        load_wider_mat(tmp_path / "nolist.mat")


@pytest.mark.skipif(not SHARED_EVAL.is_dir(), reason="development check: official .mat files not present")
def test_load_wider_mat_official_files():
    d = load_wider_mat(SHARED_EVAL / "wider_face_val.mat")
    assert len(d) == 61 and sum(map(len, d.values())) == 3226
    assert sum(len(x["boxes"]) for ev in d.values() for x in ev.values()) == 39708
    hard = load_wider_mat(SHARED_EVAL / "wider_hard_val.mat")
    easy = load_wider_mat(SHARED_EVAL / "wider_easy_val.mat")
    n_hard = sum(len(x["keep"]) for ev in hard.values() for x in ev.values())
    n_easy = sum(len(x["keep"]) for ev in easy.values() for x in ev.values())
    assert n_easy < n_hard <= 39708


def test_wider_predictions_roundtrip(tmp_path):
    p = write_wider_predictions(tmp_path, "0--Parade", "0_Parade_a_1.jpg",
                                torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.5, 6.25, 7.0, 8.0]]), torch.tensor([0.9, 0.25]))
    assert p == tmp_path / "0--Parade" / "0_Parade_a_1.txt"
    assert p.read_text().splitlines()[:2] == ["0_Parade_a_1", "2"]
    write_wider_predictions(tmp_path, "0--Parade", "0_Parade_a_2", np.zeros((0, 4)), np.zeros(0))
    d = read_predictions(tmp_path)  # the official-format reader lives with the evaluator
    assert np.allclose(d["0--Parade"]["0_Parade_a_1"], [[1, 2, 3, 4, 0.9], [5.5, 6.25, 7, 8, 0.25]])
    assert d["0--Parade"]["0_Parade_a_2"].shape == (0, 5)
    p.write_text("0_Parade_a_1\n3\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:4: line 2 announces 3 boxes")):
        read_predictions(tmp_path)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        write_wider_predictions(tmp_path, "e", "n", np.zeros((2, 4)), np.zeros(1))


# ---------------------------------------------------------------- CelebA
def _celeba(tmp_path: Path) -> Path:
    root = tmp_path / "celeba"
    files = [f"{i:06d}.jpg" for i in range(1, 6)]
    rows = []
    for i, f in enumerate(files):
        vals = [1 if (i + j) % 3 == 0 else -1 for j in range(40)]
        rows.append(f + "  " + " ".join(f"{v:2d}" for v in vals))
        _jpg(root / "img_align_celeba" / f, 6, 7, seed=i)
    (root / "list_attr_celeba.txt").write_text(f"{len(files)}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, [0, 0, 1, 2, 2])))
    return root


def test_celeba_splits_and_targets(tmp_path):
    root = _celeba(tmp_path)
    assert [len(CelebA(root, s)) for s in ("train", "valid", "test", "all")] == [2, 1, 2, 5]
    ds = CelebA(root, "test")
    img, target, name = ds[0]
    assert name == "000004.jpg" and img.shape == (3, 7, 6)
    assert target.tolist() == [1.0 if (3 + j) % 3 == 0 else 0.0 for j in range(40)]
    sub = CelebA(root, "all", attributes=["Young", "Male"])
    assert sub.attributes == ["Young", "Male"] and sub.targets.shape == (5, 2)
    assert sub.targets[:, 0].tolist() == [1.0 if (i + 39) % 3 == 0 else 0.0 for i in range(5)]
    with pytest.raises(ValueError, match="unknown attribute"):
        CelebA(root, attributes=["Smiling_Widely"])


@pytest.mark.parametrize("edit,line,msg", [
    (lambda ls: ls.__setitem__(4, ls[4].replace("-1", " 0", 1)), 5, "must be -1 or 1"),
    (lambda ls: ls.__setitem__(3, ls[3].rsplit(" ", 1)[0]), 4, "40 values"),
    (lambda ls: ls.__setitem__(0, "7"), 7, "announces 7 images"),
    (lambda ls: ls.__setitem__(1, "Male Young"), 2, "40 distinct attribute names"),
    (lambda ls: ls.__setitem__(6, ls[6].replace("x", "x").replace("1 ", "one ", 1)), 7, "non-integer"),
])
def test_celeba_malformed_attr_file(tmp_path, edit, line, msg):
    root = _celeba(tmp_path)
    f = root / "list_attr_celeba.txt"
    lines = f.read_text().splitlines()
    edit(lines)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=msg) as ei:
        CelebA(root, "all")
    _raises_at(ei, f, line)


def test_celeba_partition_and_images(tmp_path):
    root = _celeba(tmp_path)
    part = root / "list_eval_partition.txt"
    good = part.read_text()
    part.write_text(good.replace("000003.jpg 1", "000003.jpg 5"))
    with pytest.raises(DatasetFormatError, match="partition must be") as ei:
        CelebA(root)
    _raises_at(ei, part, 3)
    part.write_text(good.replace("000005.jpg 2\n", ""))
    with pytest.raises(DatasetFormatError, match="not in list_eval_partition") as ei:
        CelebA(root)
    _raises_at(ei, root / "list_attr_celeba.txt", 7)
    part.write_text(good)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DatasetFormatError, match="image not found") as ei:
        CelebA(root, "train")
    _raises_at(ei, root / "list_attr_celeba.txt", 4)
    assert len(CelebA(root, "test")) == 2  # other splits need only their own images


# ---------------------------------------------------------------- LFW
def _lfw(tmp_path: Path, pairs: str) -> Path:
    root = tmp_path / "lfw"
    for name, n in (("Ann_A", 2), ("Bob_B", 3), ("Cy_C", 1)):
        for i in range(1, n + 1):
            _jpg(root / name / f"{name}_{i:04d}.jpg", seed=i)
    (root / "pairs.txt").write_text(pairs)
    return root


LFW_PAIRS = "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tCy_C\t1\nBob_B\t1\t3\nBob_B\t2\tCy_C\t1\n"


def test_lfw_pairs_folds(tmp_path):
    ds = LFWPairs(_lfw(tmp_path, LFW_PAIRS))
    assert (ds.folds, ds.n_per_class, len(ds)) == (2, 1, 4)
    assert [(p.same, p.fold) for p in ds.pairs] == [(True, 0), (False, 0), (True, 1), (False, 1)]
    assert ds.fold_indices(1) == [2, 3]
    a, b, same, fold = ds[3]
    assert a.shape == (3, 6, 8) and not same and fold == 1
    assert ds.pairs[3].name2 == "Cy_C" and ds.pairs[2].index2 == 3
    folds, n, pairs = parse_lfw_pairs(_write(tmp_path / "dev.txt", "1\nAnn_A 1 2\nBob_B 1 Cy_C 1\n"))
    assert (folds, n, [p.same for p in pairs]) == (1, 1, [True, False])


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize("pairs,line,msg", [
    (LFW_PAIRS.replace("Ann_A\t1\t2", "Ann_A\t1\t2\t9"), 2, "matched pair"),
    (LFW_PAIRS.replace("Bob_B\t2\tCy_C\t1", "Bob_B\t2\tCy_C"), 5, "mismatched pair"),
    (LFW_PAIRS.replace("Bob_B\t1\t3", "Bob_B\tone\t3"), 4, "integer"),
    ("3\t1\n" + LFW_PAIRS.split("\n", 1)[1], 5, "announces"),
    ("ten\t300\n", 1, "number of folds"),
    (LFW_PAIRS.replace("Bob_B\t1\t3", "Bob_B\t1\t4"), 4, "image not found"),
])
def test_lfw_malformed(tmp_path, pairs, line, msg):
    root = _lfw(tmp_path, pairs)
    with pytest.raises(DatasetFormatError, match=msg) as ei:
        LFWPairs(root)
    _raises_at(ei, root / "pairs.txt", line)


# ---------------------------------------------------------------- PubFig-style folders
def _folders(tmp_path: Path) -> Path:
    root = tmp_path / "pubfig"
    for k, (name, n) in enumerate((("Alice Smith", 10), ("Bob Jones", 4), ("Solo Person", 1))):
        for i in range(1, n + 1):
            _jpg(root / name / f"{i}.jpg", seed=k * 100 + i)
    return root


def test_identity_folders_split(tmp_path):
    root = _folders(tmp_path)
    all_ = IdentityFolders(root)
    assert all_.classes == ["Alice Smith", "Bob Jones", "Solo Person"] and len(all_) == 15
    assert [Path(p).name for p, _ in all_.samples[:3]] == ["1.jpg", "2.jpg", "3.jpg"]
    img, label, path = all_[11]
    assert img.shape == (3, 6, 8) and label == 1 and path.endswith("Bob Jones/2.jpg")
    tr, te = IdentityFolders(root, "train", seed=3), IdentityFolders(root, "test", seed=3)
    assert {p for p, _ in tr.samples}.isdisjoint({p for p, _ in te.samples})
    assert len(tr) + len(te) == 15 and len(te) == 3 + 1  # round(10 * .3) + round(4 * .3); Solo stays in train
    assert all(lbl != 2 for _, lbl in te.samples)
    assert te.samples == IdentityFolders(root, "test", seed=3).samples
    others = [{p for p, _ in IdentityFolders(root, "test", seed=s).samples} for s in range(4, 9)]
    assert any(o != {p for p, _ in te.samples} for o in others)  # the seed matters


def test_identity_folders_errors(tmp_path):
    root = _folders(tmp_path)
    stray = root / "Alice Smith" / "notes.txt"
    stray.write_text("x")
    with pytest.raises(DatasetFormatError, match="notes.txt.*<n>.jpg"):
        IdentityFolders(root)
    stray.unlink()
    (root / "Empty Person").mkdir()
    with pytest.raises(DatasetFormatError, match="Empty Person.*no images"):
        IdentityFolders(root)
    (root / "Empty Person").rmdir()
    (root / "readme.md").write_text("x")
    with pytest.raises(DatasetFormatError, match="readme.md.*person folders"):
        IdentityFolders(root)
    (root / "readme.md").unlink()
    (root / "Bob Jones" / "2.jpg").write_bytes(b"broken")
    with pytest.raises(DatasetFormatError, match=re.escape("Bob Jones/2.jpg") + ".*cannot read image"):
        IdentityFolders(root)[11]
