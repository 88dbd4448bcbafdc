"""ResGN (Fig. 1a), the cleaner defense, the texture-feature nets and the full-scale loaders' errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facelab.defenses import Defense, defended
from facelab.defenses.resgn import ResGNCleaner, resgn_clean
from facelab.models.base import FaceEmbedder
from facelab.models.resgn import FaceNetEmbedder, PenultimateFeatures, ResGN, ResidualBlock, VGGFaceFC7


def test_untrained_resgn_is_the_identity_and_keeps_shape():
    torch.manual_seed(0)
    net = ResGN(2, 8).train()
    x = torch.rand(3, 3, 37, 53)
    y = net(x)
    assert y.shape == x.shape and torch.equal(y, x)  # the output convolution starts at zero: global skip only
    assert float(net.residual(x).detach().abs().max()) == 0.0


def test_resgn_architecture_follows_blocks_and_width():
    net = ResGN(24, 64)  # the paper's size
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 24
    convs = [m for m in blocks[0].modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(64, 64, 3, 3)] * 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in blocks[0].modules()) == 2
    small = ResGN(1, 4)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in ResGN(2, 4).parameters())


def test_trained_resgn_output_stays_in_the_unit_range():
    torch.manual_seed(0)
    net = ResGN(1, 4)
    with torch.no_grad():
        net.tail.weight.normal_(0, 5.0)
    y = net(torch.rand(2, 3, 16, 16)).detach()
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and not torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("kw,name", [({"blocks": 0}, "blocks"), ({"width": -1}, "width"), ({"blocks": 1.5}, "blocks")])
def test_resgn_rejects_bad_sizes(kw, name):
    with pytest.raises(ValueError, match=name):
        ResGN(**{"blocks": 1, "width": 4, **kw})


def test_resgn_rejects_bad_images():
    with pytest.raises(ValueError, match="range"):
        ResGN(1, 4)(torch.full((1, 3, 8, 8), 2.0))


def test_cleaner_is_differentiable_frozen_and_restores_mode(tmp_path):
    torch.manual_seed(0)
    net = ResGN(1, 4)
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
    cleaner = ResGNCleaner(net)
    assert isinstance(cleaner, Defense) and cleaner.differentiable and not cleaner.random
    assert not any(p.requires_grad for p in cleaner.parameters())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    cleaner(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # the functional core runs the net in eval mode and gives its mode back
    other = ResGN(1, 4).train()
    resgn_clean(torch.rand(1, 3, 8, 8), other)
    assert other.training
    with pytest.raises(TypeError, match="net"):
        resgn_clean(torch.rand(1, 3, 8, 8), "resgn")
    # checkpoint round trip
    path = tmp_path / "c.pt"
    torch.save({"model": net.state_dict(), "blocks": 1, "width": 4}, path)
    loaded = ResGNCleaner.load(path)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), cleaner(x))
    torch.save({"model": net.state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a ResGN checkpoint"):
        ResGNCleaner.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not found"):
        ResGNCleaner.load(tmp_path / "missing.pt")


class _Emb(FaceEmbedder):
    threshold = 0.5

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images):
        return self.conv(images).mean((2, 3))


def test_defended_embedder_attacks_through_the_cleaner():
    torch.manual_seed(0)
    net = ResGN(1, 4)
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
    victim = _Emb()
    model = defended(ResGNCleaner(net), victim)
    assert isinstance(model, FaceEmbedder) and model.threshold == 0.5
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    model(x).sum().backward()
    assert float(x.grad.abs().sum()) > 0


def test_texture_nets_give_features_and_reject_bad_names():
    f = PenultimateFeatures("face_recognition")
    out = f(torch.rand(2, 3, 40, 40))
    assert out.shape == (2, 256)  # the pooled features before face-api's last linear layer
    assert not any(p.requires_grad for p in f.parameters())
    with pytest.raises(ValueError, match="texture net"):
        PenultimateFeatures("vgg19")
    with pytest.raises(ValueError, match="vggface_weights"):
        PenultimateFeatures("vggface")
    with pytest.raises(ValueError, match="vggface"):
        PenultimateFeatures("face_recognition", weights="x.pt")


def test_full_scale_loaders_name_the_bad_file(tmp_path):
    with pytest.raises(ValueError, match="facenet_weights .*not found"):
        FaceNetEmbedder(tmp_path / "none.pt")
    bad = tmp_path / "small.pt"
    torch.save({"conv.weight": torch.zeros(64, 3, 3, 3), "conv.bias": torch.zeros(64)}, bad)
    with pytest.raises(ValueError, match="vggface_weights .*1 conv and 0 linear"):
        VGGFaceFC7(bad)
    with pytest.raises(ValueError, match="InceptionResnetV1 tensors missing"):
        FaceNetEmbedder(bad)


# ----------------------------------------------------------------------------- exact values (issue 19, mutation)


def test_cleaner_messages_repr_and_device(tmp_path):
    with pytest.raises(TypeError, match=r"^resgn_clean: net must be an nn\.Module \(a ResGN\), got str$"):
        resgn_clean(torch.rand(1, 3, 8, 8), "resgn")
    with pytest.raises(TypeError, match=r"^ResGNCleaner: net must be a ResGN module, got str$"):
        ResGNCleaner("resgn")
    assert ResGNCleaner(ResGN(2, 4)).extra_repr() == "blocks=2, width=4"
    assert ResGNCleaner(nn.Identity()).extra_repr() == "blocks=?, width=?"  # any module: sizes unknown
    path = tmp_path / "c.pt"
    torch.save({"model": ResGN(1, 4).state_dict(), "blocks": 1, "width": 4}, path)
    assert {p.device.type for p in ResGNCleaner.load(path, device="meta").parameters()} == {"meta"}
    assert {p.device.type for p in ResGNCleaner.load(path).parameters()} == {"cpu"}


def test_cleaner_load_maps_to_cpu_and_reads_weights_only(tmp_path, monkeypatch):
    import datetime
    import pickle

    path = tmp_path / "c.pt"
    # an arbitrary pickled object in the checkpoint is refused (weights_only), not executed
    torch.save({"model": ResGN(1, 4).state_dict(), "blocks": 1, "width": 4, "when": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(pickle.UnpicklingError):
        ResGNCleaner.load(path)
    # a checkpoint written on a GPU is read onto the CPU first
    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k) or real(*a, **k))
    torch.save({"model": ResGN(1, 4).state_dict(), "blocks": 1, "width": 4}, path)
    ResGNCleaner.load(path)
    assert seen == [{"map_location": "cpu", "weights_only": True}]
