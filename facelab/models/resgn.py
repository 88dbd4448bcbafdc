"""The three nets of the ResGN training framework (Su et al., Fig. 1): the residual generator (a), the
texture network (b, VGG-Face's fc7 in the paper) and the verification network (c, FaceNet).

* :class:`ResGN` (Fig. 1a, §3.1): a head convolution, ``blocks`` residual blocks (each two 3×3 convolutions
  with ``width`` maps, batch normalisation, ReLU after the first, an identity shortcut, as SRResNet
  (Ledig et al.), which §3.1 follows), a convolution + BN closing the block stack with a skip from the head,
  and a 3-map output convolution added to the input (the *global skip*): ``clean(x) = clamp(x + r(x), 0, 1)``.
  The output convolution starts at zero, so an untrained ResGN is the identity. The paper: 24 blocks, 64
  maps; the default here is a small CPU net.
* :class:`PenultimateFeatures`: the texture features of Eq. 4 from a second pretrained face net of the zoo —
  ``mobilefacenet`` (the 512-D global depthwise-conv output before its embedding layer), ``faceres`` (the
  1024-D pooled features), ``face_recognition`` (the 256-D pooled features before its last linear layer) —
  or ``vggface`` (:class:`VGGFaceFC7`, the paper's 4096-D fc7, weights by path).
* :class:`FaceNetEmbedder` (Fig. 1c): facenet-pytorch's ``InceptionResnetV1`` (the paper's FaceNet,
  Inception-ResNet-v1 trained on MS-Celeb-1M) with weights read from a file given by path; 512-D unit-norm
  embeddings of 160×160 crops.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.base import FaceEmbedder, check_images

__all__ = ["ResidualBlock", "ResGN", "PenultimateFeatures", "VGGFaceFC7", "FaceNetEmbedder", "TEXTURE_NETS",
           "VGGFACE_MEAN_RGB"]

#: VGG-Face's mean pixel (RGB, 0..255) subtracted before the first convolution (Parkhi et al. 2015)
VGGFACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)
#: texture nets :class:`PenultimateFeatures` knows
TEXTURE_NETS = ("expression", "mobilefacenet", "faceres", "face_recognition", "vggface")


class ResidualBlock(nn.Module):
    """conv3×3 – BN – ReLU – conv3×3 – BN, plus the input (SRResNet's block, §3.1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResGN(nn.Module):
    """Residual generative network (Fig. 1a): images ``[B,3,H,W]`` in [0,1] -> cleaned images in [0,1].

    ``blocks`` residual blocks of ``width`` maps (paper: 24 and 64). Any ``H, W`` (fully convolutional).
    """

    def __init__(self, blocks: int = 24, width: int = 64) -> None:
        super().__init__()
        for name, v in (("blocks", blocks), ("width", width)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ResGN: {name} must be an integer >= 1, got {v!r}")
        self.blocks, self.width = blocks, width
        self.head = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.body_end = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.tail = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def residual(self, images: Tensor) -> Tensor:
        """The residual ``r(x)`` that the global skip adds to the input."""
        f = self.head(images * 2 - 1)
        return self.tail(f + self.body_end(self.body(f)))

    def forward(self, images: Tensor) -> Tensor:
        check_images(images)
        return (images + self.residual(images)).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, width={self.width}"


class VGGFaceFC7(nn.Module):
    """VGG-Face (Parkhi et al. 2015; Fig. 1b) up to fc7: crops ``[B,3,H,W]`` in [0,1] -> 4096-D relu7 features.

    Preprocessing inside: bilinear resize to 224, ×255, minus :data:`VGGFACE_MEAN_RGB`. Weights from a state
    dict at ``weights`` (e.g. a PyTorch conversion of the Caffe model): its 4-D tensors in file order are
    conv1_1 .. conv5_3 and its first two 2-D tensors fc6 and fc7, each followed by a bias.
    """

    input_size = 224
    _CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in self._CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.fc6, self.fc7 = nn.Linear(512 * 7 * 7, 4096), nn.Linear(4096, 4096)
        self.register_buffer("mean", torch.tensor(VGGFACE_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.load_weights(weights)

    def forward(self, images: Tensor) -> Tensor:
        x = check_images(images)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.features(x * 255.0 - self.mean).flatten(1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))

    def load_weights(self, path: str | os.PathLike) -> VGGFaceFC7:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"vggface_weights {path}: file not found") from None
        except Exception as e:  # noqa: BLE001 - name the file
            raise ValueError(f"vggface_weights {path}: not a readable weights-only state dict "
                             f"({type(e).__name__})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"vggface_weights {path}: expected a state dict, got {type(state).__name__}")
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        targets = convs + [self.fc6, self.fc7]
        w4 = [k for k, v in state.items() if isinstance(v, Tensor) and v.dim() == 4][: len(convs)]
        w2 = [k for k, v in state.items() if isinstance(v, Tensor) and v.dim() == 2][:2]
        keys = w4 + w2
        if len(keys) < len(targets):
            raise ValueError(f"vggface_weights {path}: {len(w4)} conv and {len(w2)} linear weight tensors; VGG-Face "
                             f"up to fc7 needs {len(convs)} and 2")
        with torch.no_grad():
            for mod, wk in zip(targets, keys):
                bk = wk[: -len("weight")] + "bias" if wk.endswith("weight") else None
                w = state[wk].reshape(mod.weight.shape) if state[wk].numel() == mod.weight.numel() else None
                if w is None or bk not in state:
                    raise ValueError(f"vggface_weights {path}: {wk} has shape {tuple(state[wk].shape)} (bias {bk!r} "
                                     f"{'found' if bk in state else 'missing'}); expected {tuple(mod.weight.shape)}")
                mod.weight.copy_(w)
                mod.bias.copy_(state[bk].reshape(-1))
        return self


class PenultimateFeatures(nn.Module):
    """Texture features (Eq. 4) of a pretrained face net: crops ``[B,3,H,W]`` in [0,1] -> ``[B,N_t]``.

    ``name``: one of :data:`TEXTURE_NETS`; ``vggface`` needs ``weights`` (the VGG-Face file). The net is frozen.
    """

    def __init__(self, name: str = "expression", device: str = "cpu", weights: str | None = None) -> None:
        super().__init__()
        if name not in TEXTURE_NETS:
            raise ValueError(f"texture net: must be one of {list(TEXTURE_NETS)}, got {name!r}")
        if (name == "vggface") != bool(weights):
            raise ValueError("texture net: vggface needs its weights file (vggface_weights), and only vggface takes one"
                             f"; got {name!r} with weights {weights!r}")
        self.name = name
        if name == "vggface":
            self.net = VGGFaceFC7(weights)
        elif name == "expression":
            from facelab import models

            self.net = _ExpressionFeatures(models.load("expression"))
        elif name == "mobilefacenet":
            from facelab.models.human import HumanEmbedder, load_human_graph

            graph = load_human_graph("mobilefacenet", outputs=["MobileFaceNet/Logits/SeparableConv2d/depthwise"])
            self.net = HumanEmbedder("mobilefacenet", 1.0, graph=graph)
        elif name == "faceres":
            from facelab import models

            self.net = models.load("faceres")
        else:
            from facelab import models

            rec = models.load("face_recognition")
            rec.fc = nn.Identity()  # the 256-D mean-pooled features that its last linear layer maps to 128-D
            self.net = rec
        self.net.eval().requires_grad_(False).to(device)

    def train(self, mode: bool = True) -> PenultimateFeatures:
        super().train(mode)
        self.net.eval()  # frozen
        return self

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).flatten(1)


class _ExpressionFeatures(nn.Module):
    """face-api's FaceExpressionNet without its last linear layer: the 256-D pooled backbone features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        from facelab.models.faceapi_crop import to_net_input

        x, _ = to_net_input(check_images(images), self.net.input_size)
        return F.avg_pool2d(self.net.backbone(x), 7, 2).flatten(1)


class FaceNetEmbedder(FaceEmbedder):
    """facenet-pytorch's ``InceptionResnetV1`` (Fig. 1c) with weights from ``weights`` (a state dict, e.g. the
    VGGFace2 or CASIA-WebFace release saved with ``torch.save(model.state_dict())``): crops in [0,1] ->
    512-D unit-norm embeddings. Preprocessing inside: resize to 160, ``(x·255 − 127.5) / 128`` (facenet-pytorch's
    ``fixed_image_standardization``). ``threshold`` 1.1 on the squared Euclidean distance, as the paper."""

    metric = "squared_euclidean"
    normalize = True
    input_size = 160

    def __init__(self, weights: str | os.PathLike, threshold: float = 1.1) -> None:
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        self.net = InceptionResnetV1(pretrained=None, classify=False)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"facenet_weights {weights}: file not found") from None
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"facenet_weights {weights}: not a readable weights-only state dict "
                             f"({type(e).__name__})") from None
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        missing, _ = self.net.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"facenet_weights {weights}: {len(missing)} InceptionResnetV1 tensors missing, e.g. "
                             f"{missing[:3]}")
        self.threshold = float(threshold)

    def forward(self, images: Tensor) -> Tensor:
        x = check_images(images)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net((x * 255.0 - 127.5) / 128.0)
