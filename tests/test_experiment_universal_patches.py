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
                delta=0.5, score_margin_threshold=0.3, mosaic=2, crop=64)
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
    assert rows["Table 1 noise w/ Patch-IoU precision/recall (%)"]["paper"] == [7.3, 1.4]
    assert (tmp_path / "run" / "patches.pt").is_file()
    # trained patches differ from their initialisation, and all are valid images
    for key, p in exp.patches.items():
        assert p.shape == (3, 128, 128) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert not torch.equal(exp.patches[("tiny", "patch_iou", "noise", 0.5, "top", 2)], exp.inits["noise"])
    for r in exp.results["table1"]:
        assert 0 <= r["recall"] <= 1 and 0 <= r["precision"] <= 1


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
