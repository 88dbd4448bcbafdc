"""Chapter 1 pipelines: a tiny end-to-end run, the WIDER-layout (full-scale) entry point, the notebook."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.experiments import universal_patches as up
from test_attacks_patch import TinyDetector

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_universal_patches.ipynb"


def write_wider_fixture(root: Path, n: int = 2) -> Path:
    """A WIDER FACE layout with ``n`` images per split, each with two 'faces' (bright squares)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        lines = []
        for i in range(n):
            img = (rng.random((96, 128, 3)) * 60 + 40).astype(np.uint8)
            boxes = [(10 + 4 * i, 12, 36, 40), (70, 30 + 3 * i, 30, 30)]
            for x, y, w, h in boxes:
                img[y:y + h, x:x + w] = (210, 170, 140)
            rel = f"0--Parade/0_Parade_{split}_{i}.jpg"
            path = root / f"WIDER_{split}" / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img)
            lines += [rel, str(len(boxes))] + [f"{x} {y} {w} {h} 0 0 0 0 0 0" for x, y, w, h in boxes]
        gt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        gt.parent.mkdir(parents=True, exist_ok=True)
        gt.write_text("\n".join(lines) + "\n")
    return root


def small_cfg(tmp_path, **kw) -> up.Config:
    base = dict(out_dir=str(tmp_path / "run"), victim="tiny", other_detectors=(), black_box=("haar",),
                epochs=2, sweep_epochs=1, inits=("noise", "faceA"),
                methods=("patch_iou", "patch_combination"), scales=(0.3,), locations=("center",), lr=0.1,
                delta=0.5, score_margin_threshold=0.3, mosaic=2, crop=64, test_views=1)
    base.update(kw)
    return up.Config(**base)


def test_tiny_end_to_end_writes_card(tmp_path):
    torch.manual_seed(0)
    exp = up.run(small_cfg(tmp_path), victim=TinyDetector())
    card = json.loads((tmp_path / "run" / "results.json").read_text())
    assert card["chapter"] == "01_universal_patches" and card["parameters"]["victim"] == "tiny"
    m = card["metrics"]
    assert set(m["table1"]) == {"Baseline", "noise w/o Patch-IoU", "faceA w/o Patch-IoU", "noise w/ Patch-IoU",
                                "faceA w/ Patch-IoU"}
    assert set(m["transfer_recall"]) == {"tiny", "noise (unoptimised)", "clean"} and set(m["transfer_recall"]["tiny"]) == {"tiny", "haar"}
    assert set(m["partial_recall"]) == {"1.0", "0.5", "0.667"}
    rows = {r["quantity"]: r for r in card["paper_comparison"]}
    assert rows["Table 1 noise w/ Patch-IoU precision (%)"]["paper"] == 7.3
    assert rows["Table 1 noise w/ Patch-IoU recall (%)"]["paper"] == 1.4
    assert rows["Table 1 noise w/ Patch-IoU recall (%)"]["ours"] == round(100 * m["table1"]["noise w/ Patch-IoU"][1], 1)
    # the status page computes ours - paper: every row has scalar finite numbers and says what was compared
    for r in card["paper_comparison"]:
        for k in ("paper", "ours"):
            assert isinstance(r[k], (int, float)) and not isinstance(r[k], bool) and math.isfinite(r[k]), r
        assert "δ=0.5" in r["note"] and "face instances" in r["note"]
    assert m["table1"]["Baseline"][2] is None  # NaN is written as null (strict JSON)
    d = m["data"]["test"]
    assert d["views_per_photo"] == 1 and d["crops"] == 2 * d["distinct_faces"]
    assert (tmp_path / "run" / "patches.pt").is_file()
    # trained patches differ from their initialisation, and all are valid images
    for key, p in exp.patches.items():
        assert p.shape == (3, 128, 128) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert not torch.equal(exp.patches[("tiny", "patch_iou", "noise", 0.5, "top", 2)], exp.inits["noise"])
    for r in exp.results["table1"]:
        assert 0 <= r["recall"] <= 1 and 0 <= r["precision"] <= 1


def test_summary_and_clean_scores_are_computed(tmp_path):
    torch.manual_seed(0)
    exp = up.run(small_cfg(tmp_path), victim=TinyDetector(), sections=("table1", "methods", "transfer", "partial"))
    c = exp.clean_scores(split="test")
    clean = exp.clean("tiny")
    assert (c["precision"], c["recall"], c["tp"]) == (clean["precision"], clean["recall"], clean["tp"])
    n_dets = sum(int((s >= exp.cfg.detect_threshold).sum()) for _, s in clean["dets"])
    assert c["n_face"] + c["n_background"] == n_dets
    if c["n_face"] and c["n_background"]:
        assert c["separates"] == (c["max_background"] < c["delta"] <= c["min_face"])
    assert exp.clean_scores(split="train")["split"] == "train"
    with pytest.raises(ValueError, match="split"):
        exp.clean_scores(split="val")
    md = exp.summary_markdown()
    assert "Criteria" in md and "not independent" in md
    base = exp.results["table1"][0]["recall"]
    assert f"recall {100 * base:.1f} %" in md  # numbers come from the results
    for claim in ("obs. 1", "obs. 2", "obs. 3", "Table 2", "Table 3"):
        line = next(x for x in md.splitlines() if claim in x)
        assert any(v in line for v in ("**replicated**", "**partly replicated**", "**not replicated**")), line
    # verdicts follow the stated criteria
    t1 = {r["name"]: r for r in exp.results["table1"]}
    k = sum(t1[f"{i} w/ Patch-IoU"]["recall"] <= up.CRITERIA["collapse"] * base < t1[f"{i} w/o Patch-IoU"]["recall"]
            for i in ("noise", "faceA"))
    line = next(x for x in md.splitlines() if "obs. 1" in x)
    assert f"({k} of 2 initialisations" in line
    assert up._verdict(2, 2) == "**replicated**" and up._verdict(1, 2) == "**partly replicated**"
    assert up._verdict(0, 2) == "**not replicated**"


def test_view_crops_are_seeded_held_out_instances():
    from facelab.data.faces import bundled_faces

    split = bundled_faces().split()
    n_test_faces = len(split.test_faces)
    a = up.view_crops(split.test_photos, 2, seed=1, out=48)
    b = up.view_crops(split.test_photos, 2, seed=1, out=48)
    c = up.view_crops(split.test_photos, 2, seed=2, out=48)
    assert len(a) == 2 * n_test_faces  # one crop per face per view
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    for im, boxes, ign in a:
        assert im.shape == (3, 48, 48) and 0 <= float(im.min()) and float(im.max()) <= 1
        assert len(boxes) >= 1 and (boxes >= 0).all() and (boxes <= 48).all() and not bool(ign.all())
    assert up.view_crops(split.test_photos, 0, seed=1) == []
    # the default run evaluates at least 32 face instances (originals + views of the held-out photos)
    cfg = up.Config()
    assert n_test_faces * (1 + cfg.test_views) >= 32
    with pytest.raises(ValueError, match="test_views"):
        up.Config(test_views=-1)


def test_training_lowers_targeted_scores_on_bundled_crops(tmp_path):
    cfg = small_cfg(tmp_path, epochs=0)
    exp = up.UniversalPatchesExperiment(cfg, victim=TinyDetector(), progress=False)
    from facelab.attacks import UniversalPatchAttack

    atk = UniversalPatchAttack(exp.detectors["tiny"], "patch_iou", alpha=0.5, init=exp.inits["noise"], lr=0.1)
    before = atk.evaluate(exp.train_xy)
    atk.fit(exp.train_xy, epochs=5, batch_size=2)
    after = atk.evaluate(exp.train_xy)
    assert after.mean_score < before.mean_score - 0.05, (before, after)


def test_mosaic_and_crops_geometry():
    img = torch.rand(3, 100, 100)
    crop, boxes, ign = up._crop_resize(img, torch.tensor([[40.0, 40.0, 60.0, 60.0], [0.0, 0.0, 45.0, 45.0]]),
                                       30.0, 30.0, 40.0, 80)
    assert crop.shape == (3, 80, 80)
    assert torch.allclose(boxes[0], torch.tensor([20.0, 20.0, 60.0, 60.0]))
    assert ign.tolist() == [False, True]  # the second face is mostly outside the crop
    items = [(torch.full((3, 8, 8), float(i) / 10), torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([False]))
             for i in range(5)]
    tiles = up.mosaic(items, 2)
    assert len(tiles) == 2 and tiles[0][0].shape == (3, 16, 16)
    assert torch.allclose(tiles[0][1][3], torch.tensor([9.0, 9.0, 13.0, 13.0]))
    assert len(tiles[1][1]) == 1 and float(tiles[1][0][0, 12, 12]) == 0.5  # gray empty tile
    assert len(up.mosaic(items, 2, fill_with_repeats=True)[1][1]) == 4


def test_patch_as_face_rate():
    dets = [(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), torch.tensor([0.9, 0.4]))]
    pboxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])]
    assert up.patch_as_face_rate(dets, pboxes, 0.5) == 0.5
    assert up.patch_as_face_rate(dets, pboxes, 0.3) == 1.0


def test_wider_layout_entry_point_full_scale_parameters(tmp_path):
    root = write_wider_fixture(tmp_path / "WIDER")
    cfg = small_cfg(tmp_path, wider_root=str(root), max_images=2, epochs=1, sweep_epochs=0, mosaic=0)
    exp = up.run(cfg, victim=TinyDetector(), sections=("table1", "transfer"))
    assert len(exp.train) == 2 and len(exp.test) == 2
    assert sum(len(b) for _, b, _ in exp.test) == 4
    card = json.loads((tmp_path / "run" / "results.json").read_text())
    assert card["parameters"]["wider_root"] == str(root) and "table1" in card["metrics"]


def test_bad_config_and_detector_spec():
    with pytest.raises(ValueError, match="δ"):
        up.Config(delta=0.5, score_margin_threshold=1.5)
    with pytest.raises(KeyError, match="not a zoo model"):
        up.load_detector("no_such_detector")


def test_load_detector_from_a_train_detector_checkpoint(tmp_path):
    from facelab.models.detection import build_detector

    model = build_detector("sln", "resnet18", channels=16)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(),
                "model_config": {"arch": "sln", "backbone": "resnet18", "model_kwargs": {"channels": 16}}}, ckpt)
    for spec in ("sln", "trained"):
        det = up.load_detector(spec, "cpu", str(ckpt))
        assert type(det) is type(model) and not any(p.requires_grad for p in det.parameters())
        for k, v in model.state_dict().items():
            assert torch.equal(det.state_dict()[k], v), k
    with pytest.raises(ValueError, match="a trained 'sln' detector, but victim/detector is 'ssd_mobilenetv1'"):
        up.load_detector("ssd_mobilenetv1", "cpu", str(ckpt))


@pytest.mark.slow
def test_notebook_papermill_full_scale_parameters_on_wider_fixture(tmp_path):
    """The committed notebook, unchanged, with full-scale parameters on a WIDER-layout fixture and an
    SLN checkpoint (random weights, the point is the plumbing), epochs=0."""
    pm = pytest.importorskip("papermill")
    from facelab.models.detection.sln import SLN

    root = write_wider_fixture(tmp_path / "WIDER")
    ckpt = tmp_path / "sln.pt"
    torch.save({"model": SLN().state_dict()}, ckpt)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), kernel_name="facelab", cwd=str(NOTEBOOK.parent),
                        parameters=dict(out_dir=str(tmp_path / "run"), wider_root=str(root), max_images=2,
                                        victim="facelab.models.detection.sln:SLN", victim_checkpoint=str(ckpt),
                                        other_detectors=[], black_box=["haar"], epochs=0, sweep_epochs=0,
                                        delta=0.99, score_margin_threshold=0.5, iou_threshold=0.6,
                                        device="cpu", explorer=False), progress_bar=False)
    card = json.loads((tmp_path / "run" / "results.json").read_text())
    assert card["parameters"]["victim"] == "facelab.models.detection.sln:SLN"
    assert card["parameters"]["wider_root"] == str(root)
    assert math.isfinite(card["metrics"]["table1"]["Baseline"][0])


def test_committed_notebook_structure():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, 4)
    assert nb.metadata["kernelspec"]["name"] == "facelab"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []) and "out_dir" in code[0].source
    checked = [c for c in code if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 5 and all(c.outputs for c in checked)
    # the committed outputs come from the default run (papermill injected no parameters)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    # the results card is printed as JSON by the cell tagged results-card (read by the status page)
    from facelab.book_status import card_from_notebook

    card_cells = [c for c in code if "results-card" in c.metadata.get("tags", [])]
    assert len(card_cells) == 1 and "hide-output" in card_cells[0].metadata["tags"]
    card = card_from_notebook(NOTEBOOK)
    assert card["chapter"] == "01_universal_patches" and card["paper_comparison"]
    assert card["parameters"]["out_dir"] == "../runs/default/01_universal_patches"
    assert all(isinstance(r["paper"], float) and isinstance(r["ours"], float) for r in card["paper_comparison"])
    assert card["metrics"]["data"]["test"]["face_instances"] >= 32
    # the summary is rendered from the results, not typed; display equations are one per line
    assert any("summary_markdown()" in c.source for c in code)
    for c in nb.cells:
        if c.cell_type == "markdown":
            for disp in c.source.split("$$")[1::2]:
                assert not ("(1)" in disp and "(2)" in disp), disp
