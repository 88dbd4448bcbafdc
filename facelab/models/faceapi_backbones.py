"""Building blocks of face-api's face-analysis nets (TF "same" convolutions, NCHW).

* :class:`FaceFeatureExtractor`: 4 dense blocks (faceFeatureExtractor/FaceFeatureExtractor.ts, denseBlock.ts),
  shared by the 68-point landmark net and the expression net; 112x112 input -> [B,256,7,7].
* :class:`TinyXception`: entry/middle/exit flow (xception/TinyXception.ts) of the age/gender net;
  112x112 input -> [B,512,7,7].

Weights come as tfjs HWIO tensors keyed by their tfjs names (``load_faceapi_weights``) and are copied in
with :func:`load_conv` / :meth:`SeparableConv.load`. For CPU speed the nets run channels-last: TF 'same'
padding is done by the convolution where it is symmetric (:func:`conv2d_same`), pointwise convolutions are
one matrix product (:func:`conv1x1`), activations of fresh tensors are in place.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.tf_ops import conv1x1, conv2d_same, max_pool_same

__all__ = ["load_conv", "TFConv", "SeparableConv", "DenseBlock4", "FaceFeatureExtractor", "TinyXception"]


def load_conv(conv: nn.Conv2d, w: dict[str, Tensor], prefix: str, depthwise: bool = False) -> None:
    """Copy tfjs HWIO ``{prefix}/filters`` (+ ``/bias``) into ``conv`` (OIHW)."""
    f = w[f"{prefix}/filters"] if f"{prefix}/filters" in w else w[f"{prefix}/depthwise_filter"]
    f = f.permute(2, 3, 0, 1) if depthwise else f.permute(3, 2, 0, 1)
    if tuple(f.shape) != tuple(conv.weight.shape):
        raise ValueError(f"{prefix}: weight shape {tuple(f.shape)} != expected {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(f)
        if conv.bias is not None:
            conv.bias.copy_(w[f"{prefix}/bias"])


class TFConv(nn.Module):
    """``tf.conv2d(x, filters, stride, 'same') + bias``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.k, self.stride = k, stride
        self.conv = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.k == 1:
            return conv1x1(x, self.conv.weight, self.conv.bias, self.stride)
        return conv2d_same(x, self.conv.weight, self.conv.bias, self.stride)

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        load_conv(self.conv, w, prefix)


class SeparableConv(nn.Module):
    """``tf.separableConv2d(x, depthwise 3x3, pointwise 1x1, stride, 'same') + bias``.

    common/depthwiseSeparableConv.ts.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        dw = self.depthwise.weight
        return conv1x1(conv2d_same(x, dw, None, self.stride, groups=dw.shape[0]), self.pointwise.weight,
                       self.pointwise.bias)

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        load_conv(self.depthwise, w, prefix, depthwise=True)
        pw = w[f"{prefix}/pointwise_filter"].permute(3, 2, 0, 1)
        with torch.no_grad():
            self.pointwise.weight.copy_(pw)
            self.pointwise.bias.copy_(w[f"{prefix}/bias"])


class DenseBlock4(nn.Module):
    """denseBlock4: conv0 (stride 2) then three separable convs with dense (summed) connections."""

    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.first = first
        self.conv0 = TFConv(cin, cout, 3, 2) if first else SeparableConv(cin, cout, 2)
        self.conv1 = SeparableConv(cout, cout)
        self.conv2 = SeparableConv(cout, cout)
        self.conv3 = SeparableConv(cout, cout)

    def forward(self, x: Tensor) -> Tensor:
        out1 = F.relu(self.conv0(x), inplace=True)
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2, inplace=True))
        out4 = self.conv3(F.relu(out1 + (out2 + out3), inplace=True))
        return F.relu(out1 + (out2 + (out3 + out4)), inplace=True)

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        for name in ("conv0", "conv1", "conv2", "conv3"):
            getattr(self, name).load(w, f"{prefix}/{name}")


class FaceFeatureExtractor(nn.Module):
    """dense0..dense3 (32, 64, 128, 256 channels): normalised [B,3,112,112] -> [B,256,7,7]."""

    def __init__(self):
        super().__init__()
        self.dense0 = DenseBlock4(3, 32, first=True)
        self.dense1 = DenseBlock4(32, 64)
        self.dense2 = DenseBlock4(64, 128)
        self.dense3 = DenseBlock4(128, 256)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense3(self.dense2(self.dense1(self.dense0(x))))

    def load(self, w: dict[str, Tensor]) -> None:
        for name in ("dense0", "dense1", "dense2", "dense3"):
            getattr(self, name).load(w, name)


class _ReductionBlock(nn.Module):
    """relu? -> sepconv -> relu -> sepconv -> maxpool 3/2 same, + 1x1 stride-2 expansion conv of the input."""

    def __init__(self, cin: int, cout: int, activate_input: bool = True):
        super().__init__()
        self.activate_input = activate_input
        self.separable_conv0 = SeparableConv(cin, cout)
        self.separable_conv1 = SeparableConv(cout, cout)
        self.expansion_conv = TFConv(cin, cout, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(x) if self.activate_input else x
        out = self.separable_conv1(F.relu(self.separable_conv0(out), inplace=True))
        out = max_pool_same(out, 3, 2)
        return out + self.expansion_conv(x)

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        for name in ("separable_conv0", "separable_conv1", "expansion_conv"):
            getattr(self, name).load(w, f"{prefix}/{name}")


class _MainBlock(nn.Module):
    """Three relu -> sepconv layers with an identity shortcut."""

    def __init__(self, c: int):
        super().__init__()
        self.separable_conv0 = SeparableConv(c, c)
        self.separable_conv1 = SeparableConv(c, c)
        self.separable_conv2 = SeparableConv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        out = self.separable_conv0(F.relu(x))
        out = self.separable_conv1(F.relu(out, inplace=True))
        out = self.separable_conv2(F.relu(out, inplace=True))
        return out + x

    def load(self, w: dict[str, Tensor], prefix: str) -> None:
        for name in ("separable_conv0", "separable_conv1", "separable_conv2"):
            getattr(self, name).load(w, f"{prefix}/{name}")


class TinyXception(nn.Module):
    """TinyXception(num_main_blocks): normalised [B,3,112,112] -> [B,512,7,7] (after the final relu)."""

    def __init__(self, num_main_blocks: int = 2):
        super().__init__()
        self.conv_in = TFConv(3, 32, 3, 2)
        self.reduction_block_0 = _ReductionBlock(32, 64, activate_input=False)
        self.reduction_block_1 = _ReductionBlock(64, 128)
        self.middle_flow = nn.ModuleList(_MainBlock(128) for _ in range(num_main_blocks))
        self.exit_reduction_block = _ReductionBlock(128, 256)
        self.exit_separable_conv = SeparableConv(256, 512)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv_in(x), inplace=True)
        out = self.reduction_block_1(self.reduction_block_0(out))
        for block in self.middle_flow:
            out = block(out)
        out = self.exit_reduction_block(out)
        return F.relu(self.exit_separable_conv(out), inplace=True)

    def load(self, w: dict[str, Tensor]) -> None:
        self.conv_in.load(w, "entry_flow/conv_in")
        self.reduction_block_0.load(w, "entry_flow/reduction_block_0")
        self.reduction_block_1.load(w, "entry_flow/reduction_block_1")
        for i, block in enumerate(self.middle_flow):
            block.load(w, f"middle_flow/main_block_{i}")
        self.exit_reduction_block.load(w, "exit_flow/reduction_block")
        self.exit_separable_conv.load(w, "exit_flow/separable_conv")
