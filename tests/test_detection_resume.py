"""Training loop: resume after an interrupt reproduces the uninterrupted run (CPU, same seed); a
2-process DDP (gloo) smoke run keeps the replicas identical."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from facelab.models.detection.train import TrainConfig, load_trained, lr_at, train_detector
from facelab.models.detection.wider_layout import write_synthetic_wider

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_wider(tmp_path_factory.mktemp("wider"), "train", n_images=4, size=(80, 72),
                                 face_sizes=(16, 32), seed=1)


def _cfg(root, out, epochs, **kw) -> TrainConfig:
    return TrainConfig(data_root=str(root), out_dir=str(out), epochs=epochs, batch_size=2, crop=64, workers=0,
                       warmup_iters=3, milestones=(1,), model_kwargs={"channels": 16}, progress=False, **kw)


def test_lr_schedule():
    c = TrainConfig(lr=0.01, milestones=(60, 80), warmup_iters=0)
    assert lr_at(c, 0, 0) == 0.01 and lr_at(c, 59, 10**6) == 0.01
    assert lr_at(c, 60, 0) == pytest.approx(1e-3) and lr_at(c, 80, 0) == pytest.approx(1e-4)
    assert lr_at(TrainConfig(lr=0.01, warmup_iters=4), 0, 1) == pytest.approx(0.005)


def test_resume_after_interrupt_is_identical(root, tmp_path):
    ref, _ = train_detector(_cfg(root, tmp_path / "a", 2))

    def kill(epoch, summary):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_detector(_cfg(root, tmp_path / "b", 2), on_epoch_end=kill)
    assert (tmp_path / "b" / "last.pt").is_file() and not (tmp_path / "b" / "model.pt").exists()
    resumed, hist = train_detector(_cfg(root, tmp_path / "b", 2))
    assert [h["epoch"] for h in hist] == [0, 1]
    sa, sb = ref.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the weights changed during training, the log has no duplicated epoch after the resume
    fresh = _cfg(root, tmp_path / "c", 0)
    init, _ = train_detector(fresh)
    assert not torch.equal(init.state_dict()["cls.weight"], sa["cls.weight"])
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "step" in x] == [1, 2, 3, 4]
    loaded = load_trained(tmp_path / "b" / "model.pt")
    assert torch.equal(loaded.state_dict()["cls.weight"], sa["cls.weight"])
    with pytest.raises(ValueError, match="checkpoint is for"):
        train_detector(TrainConfig(**{**_cfg(root, tmp_path / "b", 3).__dict__, "model_kwargs": {"channels": 32}}))


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = TrainConfig(data_root=root, out_dir=out, epochs=1, batch_size=1, crop=64, workers=0, warmup_iters=1,
                      model_kwargs={"channels": 16}, progress=False, device="cpu")
    model, _ = train_detector(cfg)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save(flat, os.path.join(out, f"rank{rank}.pt"))
    assert not torch.distributed.is_initialized()  # train_detector destroyed the group it created


def test_ddp_gloo_two_processes(root, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(root), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a, b)  # DDP kept the replicas in sync
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if "step" in x] == [1, 2]  # 4 images / (2 ranks · batch 1)


def test_predict_wider_writes_official_files(tmp_path):
    from facelab.experiments.detector_eval import predict_wider
    from facelab.models.detection import build_detector

    root = write_synthetic_wider(tmp_path / "w", "val", n_images=2, size=(48, 64), seed=2)
    model = build_detector("sln", channels=16)
    preds = predict_wider(model, root, tmp_path / "pred", split="val", score_threshold=0.0, progress=False)
    files = sorted((tmp_path / "pred").rglob("*.txt"))
    assert len(files) == 2 and set(preds) == {"0--Synthetic"}
    lines = files[0].read_text().splitlines()
    assert lines[0] == files[0].stem and int(lines[1]) == len(lines) - 2 > 0
    assert len(lines[2].split()) == 5


def test_resume_with_another_model_fails_before_building(tmp_path, monkeypatch):
    import facelab.models.detection.train as train_mod

    out = tmp_path / "run"
    out.mkdir()
    ck = {"model": {}, "optimizer": {}, "scaler": {}, "epoch": 0, "global_step": 1, "history": [],
          "model_config": {"arch": "ssd", "backbone": "resnet50", "model_kwargs": {}}}
    torch.save(ck, out / "last.pt")

    def no_build(*a, **k):
        raise AssertionError("the model was built before the checkpoint was checked")

    monkeypatch.setattr(train_mod, "build_detector", no_build)
    cfg = TrainConfig(data_root=str(tmp_path / "no-data"), out_dir=str(out), arch="sln", backbone="resnet18",
                      progress=False)
    with pytest.raises(ValueError) as e:
        train_detector(cfg)
    msg = str(e.value)
    assert str(out / "last.pt") in msg
    assert "arch: checkpoint 'ssd' != requested 'sln'" in msg
    assert "backbone: checkpoint 'resnet50' != requested 'resnet18'" in msg
    assert "model_kwargs" not in msg.split("(")[-1]  # only the fields that differ are listed
    # same arch, other backbone: only the backbone is named
    torch.save({**ck, "model_config": {"arch": "sln", "backbone": "resnet50", "model_kwargs": {}}}, out / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: cannot resume.*\(backbone: checkpoint 'resnet50' "
                                         r"!= requested 'resnet18'\)"):
        train_detector(cfg)
    # not a checkpoint at all
    torch.save({"weights": 1}, out / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: not a train-detector checkpoint"):
        train_detector(cfg)
    (out / "last.pt").write_text("garbage")
    with pytest.raises(ValueError, match=r"last\.pt: cannot read the checkpoint"):
        train_detector(cfg)


def test_distributed_setup_without_torchrun_is_single_process(monkeypatch):
    from facelab import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.world() == (0, 1)
    assert distributed.setup("cpu") == (0, 1, torch.device("cpu"), False)
    assert distributed.setup("auto")[2].type == ("cuda" if torch.cuda.is_available() else "cpu")
    distributed.teardown(False)  # nothing was created: nothing to destroy
