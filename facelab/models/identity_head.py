"""A face recognition system (FRS) by transfer learning: a frozen pretrained backbone + a trained head.

The *Dark Arts* blog froze VGG16's 13 convolutional layers, taken from VGG-Face, and trained the fully
connected layers over 30 PubFig identities. :class:`IdentityClassifier` is that construction for any
backbone: ``logits = head(standardise(backbone(crops)))``, a :class:`~facelab.models.base.FaceClassifier`
over the identity names. The backbone stays frozen; only the head is trained (:func:`train_head`, on
features computed once with :func:`embed`, which is the same as training end to end with the backbone frozen
and no augmentation inside the loop).

Backbones (:func:`load_backbone`):

* ``"face_recognition"`` (default) -- face-api's ResNet-34-like recognition net, 128-D descriptors;
* ``"mobilefacenet"`` -- the Human library's MobileFaceNet, 192-D;
* ``"vgg16"`` -- :class:`VGG16Features`, the 13 conv layers of VGG16 with the VGG-Face weights read from a
  file given by path (``weights=``), flattened pool5 features (25,088-D at 224x224), VGG-Face preprocessing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import FaceClassifier, check_images

__all__ = ["IdentityClassifier", "VGG16Features", "load_backbone", "embed", "train_head", "accuracy",
           "VGGFACE_MEAN_RGB"]

#: VGG-Face's mean pixel (RGB, 0..255) subtracted before the first convolution (Parkhi et al. 2015)
VGGFACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Features(nn.Module):
    """VGG16's 13 conv layers (+ ReLU, 5 max-pools): crops ``[B,3,H,W]`` in [0,1] -> pool5 flattened.

    Preprocessing (inside, differentiable): resize to ``input_size`` (bilinear), ×255, minus
    :data:`VGGFACE_MEAN_RGB`. :meth:`load_conv_weights` reads a VGG-Face checkpoint.
    """

    input_size = 224

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(VGGFACE_MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = check_images(images)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.features(x * 255.0 - self.mean).flatten(1)

    def load_conv_weights(self, path: str | os.PathLike) -> VGG16Features:
        """The 13 conv layers from a state dict at ``path`` (e.g. a PyTorch conversion of VGG-Face): its 4-D
        weight tensors in file order are conv1_1 .. conv5_3, each followed by its bias. Any other layout, or a
        shape that does not match VGG16's, raises ``ValueError`` naming the file."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"backbone_weights {path}: file not found") from None
        except Exception as e:  # noqa: BLE001 - name the file, not a traceback
            raise ValueError(f"backbone_weights {path}: not a readable weights-only state dict ({type(e).__name__})"
                             ) from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"backbone_weights {path}: expected a state dict, got {type(state).__name__}")
        keys = list(state)
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        wkeys = [k for k in keys if isinstance(state[k], Tensor) and state[k].dim() == 4][: len(convs)]
        if len(wkeys) < len(convs):
            raise ValueError(f"backbone_weights {path}: {len(wkeys)} conv weight tensors, VGG16 needs {len(convs)}")
        with torch.no_grad():
            for conv, wk in zip(convs, wkeys):
                bk = wk[: -len("weight")] + "bias" if wk.endswith("weight") else None
                if tuple(state[wk].shape) != tuple(conv.weight.shape) or bk not in state:
                    raise ValueError(f"backbone_weights {path}: {wk} has shape {tuple(state[wk].shape)} (bias "
                                     f"{bk!r} {'found' if bk in state else 'missing'}); expected "
                                     f"{tuple(conv.weight.shape)}")
                conv.weight.copy_(state[wk])
                conv.bias.copy_(state[bk].reshape(-1))
        return self


def load_backbone(name: str, device: str = "cpu", weights: str | None = None) -> nn.Module:
    """A frozen backbone in eval mode: ``"face_recognition"``, ``"mobilefacenet"`` or ``"vgg16"`` (needs
    ``weights``, the VGG-Face file); any other zoo name is loaded with :func:`facelab.models.load`."""
    if name == "vgg16":
        if not weights:
            raise ValueError("backbone vgg16: give the VGG-Face weights file (backbone_weights); none are bundled")
        net: nn.Module = VGG16Features().load_conv_weights(weights)
    else:
        from facelab import models

        if weights:
            raise ValueError(f"backbone {name!r}: backbone_weights is only for vgg16 (zoo nets carry their weights)")
        net = models.load(name, device)
    return net.eval().requires_grad_(False).to(device)


class IdentityClassifier(FaceClassifier):
    """Frozen ``backbone`` + trainable head over ``labels``: ``head((backbone(x) − mean) / std)``.

    ``hidden = 0``: a linear head; ``hidden > 0``: Linear–ReLU–Linear (the blog's fully connected layers).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, labels: Sequence[str], hidden: int = 0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if len(labels) < 2:
            raise ValueError(f"labels: need at least 2 identities, got {len(labels)}")
        if hidden < 0:
            raise ValueError(f"hidden: must be >= 0, got {hidden}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.labels = list(labels)
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))
        k = len(self.labels)
        self.head = (nn.Linear(feature_dim, k) if hidden == 0 else
                     nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, hidden), nn.ReLU(),
                                   nn.Dropout(dropout), nn.Linear(hidden, k)))

    def train(self, mode: bool = True) -> IdentityClassifier:
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm / dropout never train
        return self

    def features(self, images: Tensor) -> Tensor:
        return (self.backbone(check_images(images)) - self.feat_mean) / self.feat_std

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


@torch.no_grad()
def embed(backbone: nn.Module, images: Tensor, batch_size: int = 64, device: str | None = None) -> Tensor:
    """Backbone features ``[N,D]`` (CPU) of ``images`` ``[N,3,H,W]``, ``batch_size`` at a time."""
    dev = device or next(backbone.parameters()).device
    out = [backbone(images[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def train_head(model: IdentityClassifier, features: Tensor, labels: Tensor, epochs: int = 45, lr: float = 0.01,
               weight_decay: float = 1e-3, batch_size: int = 64, seed: int = 0) -> list[float]:
    """Train ``model.head`` with Adam on backbone ``features`` ``[N,D]`` and ``labels`` ``[N]`` (cross-entropy,
    seeded shuffles); the standardisation is fitted on these features first. Returns the mean loss per epoch."""
    if features.dim() != 2 or labels.dim() != 1 or len(features) != len(labels):
        raise ValueError(f"features [N,D] and labels [N] expected, got {tuple(features.shape)}, {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
        raise ValueError(f"labels: must lie in 0..{model.num_classes - 1}")
    if epochs < 0:
        raise ValueError(f"epochs: must be >= 0, got {epochs}")
    dev = model.feat_mean.device
    f, y = features.to(dev).float(), labels.to(dev)
    with torch.no_grad():
        model.feat_mean.copy_(f.mean(0))
        model.feat_std.copy_(f.std(0).clamp_min(1e-6) if len(f) > 1 else torch.ones_like(f[0]))
        fz = (f - model.feat_mean) / model.feat_std
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for p in model.head.modules():
            if isinstance(p, nn.Linear):
                p.reset_parameters()
    model.head.requires_grad_(True)
    opt = torch.optim.Adam(model.head.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(fz), generator=g).to(dev)
        tot = 0.0
        for i in range(0, len(fz), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model.head(fz[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / len(fz))
    model.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def accuracy(model: IdentityClassifier, features: Tensor, labels: Tensor) -> Tensor:
    """Per-sample correctness ``[N]`` (bool) of the head on precomputed backbone ``features``."""
    dev = model.feat_mean.device
    logits = model.head((features.to(dev) - model.feat_mean) / model.feat_std)
    return (logits.argmax(-1).cpu() == labels.cpu())
