"""TensorFlow(.js) operations whose exact semantics the face-api ports need, in differentiable torch.

* :func:`tf_resize_bilinear` -- ``tf.image.resizeBilinear(x, size, alignCorners=false,
  halfPixelCenters=false)``: the *legacy* TF resize, ``src = dst * in/out`` with no half-pixel
  offset and no antialiasing (``F.interpolate(align_corners=False)`` uses half-pixel centres and
  differs).
* :func:`pad_same` / :func:`conv2d_same` / :func:`max_pool_same` -- TF ``padding='same'``: the total
  padding ``max((ceil(n/s)-1)*s + k - n, 0)`` is split with the smaller half *before*; with stride 2
  it is asymmetric (e.g. 0 top/left, 1 bottom/right), which torch's symmetric ``padding=`` cannot express.
* :func:`pad_to_square` -- face-api's ``padToSquare`` (zeros appended at the bottom or right).
* :func:`tfjs_conv_weight` / :func:`tfjs_depthwise_weight` -- tfjs filter layouts to torch layouts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "tf_resize_bilinear",
    "same_padding",
    "pad_same",
    "conv2d_same",
    "max_pool_same",
    "pad_to_square",
    "tfjs_conv_weight",
    "tfjs_depthwise_weight",
    "js_round",
    "reshaped_dims",
]


def js_round(v: float) -> int:
    """JavaScript ``Math.round`` (halves round up; Python's ``round`` rounds halves to even)."""
    return math.floor(v + 0.5)


def reshaped_dims(height: int, width: int, input_size: int) -> tuple[int, int]:
    """face-api ``computeReshapedDimensions``: (h, w) of the image inside the ``input_size`` square."""
    scale = input_size / max(height, width)
    return js_round(height * scale), js_round(width * scale)


def _legacy_coords(n_in: int, n_out: int, align_corners: bool, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices (lo, hi) and fraction for TF's legacy bilinear resize along one axis.

    Mirrors tfjs-backend-cpu ``resizeBilinear`` (float64 coordinates): ``ratio = in/out`` (or
    ``(in-1)/(out-1)`` with align_corners), ``src = ratio * i``, ``lo = floor(src)``,
    ``hi = min(in-1, ceil(src))``, ``frac = src - lo``.
    """
    if align_corners and n_out > 1:
        ratio = (n_in - 1) / (n_out - 1)
    else:
        ratio = n_in / n_out
    src = torch.arange(n_out, dtype=torch.float64) * ratio
    lo = torch.clamp(torch.floor(src), min=0)
    frac = src - lo
    hi = torch.clamp(torch.ceil(src), max=n_in - 1)
    lo = torch.clamp(lo, max=n_in - 1)
    return lo.long().to(device), hi.long().to(device), frac.to(device)


def tf_resize_bilinear(x: Tensor, size: tuple[int, int] | int, align_corners: bool = False) -> Tensor:
    """``tf.image.resizeBilinear`` (legacy, ``halfPixelCenters=false``) of ``x`` [B,C,H,W] to ``size`` (h, w).

    Differentiable w.r.t. ``x`` (gathers + lerps); interpolation order as in tfjs: first along x
    (``top = tl + (tr - tl) * fx``), then along y (``top + (bottom - top) * fy``).
    """
    if isinstance(size, int):
        size = (size, size)
    if x.dim() != 4:
        raise ValueError(f"tf_resize_bilinear: expected x of shape [B,C,H,W], got {tuple(x.shape)}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"tf_resize_bilinear: size must be positive, got {size}")
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return x
    y0, y1, fy = _legacy_coords(in_h, out_h, align_corners, x.device)
    x0, x1, fx = _legacy_coords(in_w, out_w, align_corners, x.device)
    fy = fy.to(x.dtype).view(1, 1, -1, 1)
    fx = fx.to(x.dtype).view(1, 1, 1, -1)
    top_rows = x.index_select(2, y0)
    bot_rows = x.index_select(2, y1)
    tl, tr = top_rows.index_select(3, x0), top_rows.index_select(3, x1)
    bl, br = bot_rows.index_select(3, x0), bot_rows.index_select(3, x1)
    top = tl + (tr - tl) * fx
    bottom = bl + (br - bl) * fx
    return top + (bottom - top) * fy


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'same' padding (before, after) of one axis of length ``n``."""
    k = (kernel - 1) * dilation + 1
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: int | tuple[int, int], stride: int | tuple[int, int],
             dilation: int = 1, value: float = 0.0) -> Tensor:
    """Pad ``x`` [B,C,H,W] as TF ``padding='same'`` would for this kernel/stride (asymmetric for stride 2)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    top, bottom = same_padding(x.shape[-2], kh, sh, dilation)
    left, right = same_padding(x.shape[-1], kw, sw, dilation)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def conv2d_same(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, groups: int = 1) -> Tensor:
    """``tf.conv2d`` / ``tf.depthwiseConv2d`` with ``padding='same'`` (torch weight layout)."""
    x = pad_same(x, tuple(weight.shape[-2:]), stride)
    return F.conv2d(x, weight, bias, stride=stride, groups=groups)


def max_pool_same(x: Tensor, kernel: int, stride: int) -> Tensor:
    """``tf.maxPool(x, k, s, 'same')``: padded cells never win (padding with -inf)."""
    x = pad_same(x, kernel, stride, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


def pad_to_square(x: Tensor, value: float = 0.0) -> Tensor:
    """face-api ``padToSquare(img, isCenterImage=false)``: append ``value`` rows/cols at the bottom/right."""
    h, w = x.shape[-2:]
    if h == w:
        return x
    if h > w:
        return F.pad(x, (0, h - w, 0, 0), value=value)
    return F.pad(x, (0, 0, 0, w - h), value=value)


def tfjs_conv_weight(w: Tensor) -> Tensor:
    """tfjs conv2d filters [kh,kw,in,out] -> torch [out,in,kh,kw]."""
    if w.dim() != 4:
        raise ValueError(f"tfjs_conv_weight: expected [kh,kw,in,out], got {tuple(w.shape)}")
    return w.permute(3, 2, 0, 1).contiguous()


def tfjs_depthwise_weight(w: Tensor) -> Tensor:
    """tfjs depthwise filters [kh,kw,in,mult] -> torch grouped conv [in*mult,1,kh,kw] (channel c*mult+m)."""
    if w.dim() != 4:
        raise ValueError(f"tfjs_depthwise_weight: expected [kh,kw,in,mult], got {tuple(w.shape)}")
    kh, kw, cin, mult = w.shape
    return w.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).contiguous()
