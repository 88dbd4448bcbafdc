"""TensorFlow(.js) operations whose exact semantics the face-api ports need, in differentiable torch.

* :func:`tf_resize_bilinear` -- ``tf.image.resizeBilinear(x, size, alignCorners=false,
  halfPixelCenters=false)``: the *legacy* TF resize, ``src = dst * in/out`` with no half-pixel
  offset and no antialiasing (``F.interpolate(align_corners=False)`` uses half-pixel centres and
  differs). Computed as banded interpolation-matrix products ``Ry @ x @ Rx^T`` with tfjs' exact
  weights; an optional zero ``pad`` (e.g. face-api's pad-to-square) is folded into the weights.
* :func:`conv1x1` -- a 1x1 convolution as one matrix product over channels-last pixels.
* :func:`pad_same` / :func:`conv2d_same` / :func:`max_pool_same` -- TF ``padding='same'``: the total
  padding ``max((ceil(n/s)-1)*s + k - n, 0)`` is split with the smaller half *before*; with stride 2
  it is asymmetric (e.g. 0 top/left, 1 bottom/right), which torch's symmetric ``padding=`` cannot express.
* :func:`pad_to_square` -- face-api's ``padToSquare`` (zeros appended at the bottom or right).
* :func:`tfjs_conv_weight` / :func:`tfjs_depthwise_weight` -- tfjs filter layouts to torch layouts.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "tf_resize_bilinear",
    "greedy_nms",
    "same_padding",
    "pad_same",
    "conv2d_same",
    "conv1x1",
    "max_pool_same",
    "pad_to_square",
    "square_padding",
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


#: output rows per band of the banded interpolation matmuls (see :func:`tf_resize_bilinear`)
_BAND = 64


@functools.lru_cache(maxsize=256)
def _interp_bands(n_in: int, n_out: int, align_corners: bool, before: int, after: int,
                  dtype: torch.dtype, device: torch.device) -> tuple[tuple[int, int, int, int, Tensor], ...]:
    """Legacy-TF interpolation matrix of one axis, cut into bands ``(o0, o1, i0, i1, R[o0:o1, i0:i1])``.

    ``R`` [n_out, n_in] maps the axis *after* zero padding ``before``/``after`` (as ``F.pad``) to the
    output, restricted to the ``n_in`` real entries (padded entries are 0 and drop out). Row ``o`` holds
    ``1 - frac`` at ``lo`` and ``frac`` at ``hi`` (summed when ``lo == hi``), the weights of
    tfjs ``resizeBilinear``. Each band keeps only the input range its rows touch.
    """
    n_pad = n_in + before + after
    lo, hi, frac = _legacy_coords(n_pad, n_out, align_corners, torch.device("cpu"))
    with torch.inference_mode(False), torch.no_grad():  # cached constants must be usable under autograd
        r = torch.zeros(n_out, n_pad, dtype=torch.float64)
        rows = torch.arange(n_out)
        r.index_put_((rows, lo), 1 - frac, accumulate=True)
        r.index_put_((rows, hi), frac, accumulate=True)
        r = r[:, before:before + n_in]
        bands = []
        for o0 in range(0, n_out, _BAND):
            o1 = min(o0 + _BAND, n_out)
            nz = torch.nonzero(r[o0:o1].abs().sum(0)).flatten()
            if nz.numel() == 0:  # rows that only see padding
                bands.append((o0, o1, 0, 0, r.new_zeros(0)))
                continue
            i0, i1 = int(nz[0]), int(nz[-1]) + 1
            bands.append((o0, o1, i0, i1, r[o0:o1, i0:i1].to(dtype=dtype, device=device).contiguous()))
    return tuple(bands)


def _resize_last(x: Tensor, bands: tuple, n_out: int) -> Tensor:
    """Apply one axis' banded interpolation matrix to the last dim of ``x`` (``x @ R.T``)."""
    parts = []
    for o0, o1, i0, i1, m in bands:
        if i1 == i0:
            parts.append(x.new_zeros(*x.shape[:-1], o1 - o0))
        else:
            parts.append(torch.matmul(x[..., i0:i1], m.t()))
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


def _resize_rows(x: Tensor, bands: tuple, n_out: int) -> Tensor:
    """Apply one axis' banded interpolation matrix to dim -2 of ``x`` (``R @ x``)."""
    parts = []
    for o0, o1, i0, i1, m in bands:
        if i1 == i0:
            parts.append(x.new_zeros(*x.shape[:-2], o1 - o0, x.shape[-1]))
        else:
            parts.append(torch.matmul(m, x[..., i0:i1, :]))
    return parts[0] if len(parts) == 1 else torch.cat(parts, -2)


def tf_resize_bilinear(x: Tensor, size: tuple[int, int] | int, align_corners: bool = False,
                       pad: tuple[int, int, int, int] | None = None) -> Tensor:
    """``tf.image.resizeBilinear`` (legacy, ``halfPixelCenters=false``) of ``x`` [B,C,H,W] to ``size`` (h, w).

    ``pad`` = (left, right, top, bottom) zero padding applied before resizing, as ``F.pad`` (folded into
    the interpolation weights, so the padded image is never built). Computed as two interpolation-matrix
    products ``Ry @ x @ Rx^T`` holding exactly tfjs' weights (``1 - frac`` and ``frac`` at ``lo``/``hi``),
    banded so that each block of output rows only multiplies the input rows it uses; differentiable
    w.r.t. ``x``. Equals tfjs' lerps up to float32 rounding.
    """
    if isinstance(size, int):
        size = (size, size)
    if x.dim() != 4:
        raise ValueError(f"tf_resize_bilinear: expected x of shape [B,C,H,W], got {tuple(x.shape)}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"tf_resize_bilinear: size must be positive, got {size}")
    left, right, top, bottom = (0, 0, 0, 0) if pad is None else (int(p) for p in pad)
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"tf_resize_bilinear: pad must be non-negative, got {pad}")
    in_h, in_w = x.shape[-2:]
    if not x.is_floating_point():
        raise TypeError(f"tf_resize_bilinear: expected a float tensor, got {x.dtype}")
    resize_h = (in_h + top + bottom, top, bottom) != (out_h, 0, 0)
    resize_w = (in_w + left + right, left, right) != (out_w, 0, 0)
    if resize_h and resize_w:  # apply the axis that shrinks the work most first
        first_h = out_h * in_w * (in_h + out_w) <= in_h * out_w * (in_w + out_h)
    else:
        first_h = resize_h
    order = ("h", "w") if first_h else ("w", "h")
    for axis in order:
        if axis == "h" and resize_h:
            x = _resize_rows(x, _interp_bands(in_h, out_h, align_corners, top, bottom, x.dtype, x.device), out_h)
        elif axis == "w" and resize_w:
            x = _resize_last(x, _interp_bands(in_w, out_w, align_corners, left, right, x.dtype, x.device), out_w)
    return x


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'same' padding (before, after) of one axis of length ``n``."""
    n = int(n)  # a traced size (torch.onnx.export / jit.trace) becomes a constant, so pads and kernels stay static
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


def _lead_zeros(weight: Tensor, rows: int, cols: int) -> Tensor:
    """``weight`` [O,I,kh,kw] with ``rows`` zero rows and ``cols`` zero columns prepended (``F.pad``'s result;
    built by concatenation with static sizes so that torch.onnx.export still sees the kernel's shape)."""
    o, i, kh, kw = (int(n) for n in weight.shape)
    if cols:
        weight = torch.cat([weight.new_zeros(o, i, kh, cols), weight], -1)
    if rows:
        weight = torch.cat([weight.new_zeros(o, i, rows, kw + cols), weight], -2)
    return weight


def conv2d_same(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, groups: int = 1) -> Tensor:
    """``tf.conv2d`` / ``tf.depthwiseConv2d`` with ``padding='same'`` (torch weight layout).

    The symmetric part of the padding is done by the convolution itself. TF's asymmetric case (stride 2:
    one more row/column after than before) is, for depthwise convolutions, a kernel with one extra
    leading zero row/column and symmetric padding ``after`` -- the same windows and products, no padded
    copy of the input; other convolutions pad the extra row/column explicitly.
    """
    kh, kw = weight.shape[-2:]
    top, bottom = same_padding(x.shape[-2], kh, stride)
    left, right = same_padding(x.shape[-1], kw, stride)
    if (groups > 1 and groups == x.shape[1] and 0 <= bottom - top <= 1 and 0 <= right - left <= 1
            and (bottom, right) != (top, left)):
        weight = _lead_zeros(weight, bottom - top, right - left)
        return F.conv2d(x, weight, bias, stride=stride, padding=(bottom, right), groups=groups)
    ph, pw = min(top, bottom), min(left, right)
    if (top, bottom, left, right) != (ph, ph, pw, pw):
        x = F.pad(x, (left - pw, right - pw, top - ph, bottom - ph))
    return F.conv2d(x, weight, bias, stride=stride, padding=(ph, pw), groups=groups)


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1) -> Tensor:
    """1x1 convolution (``weight`` [out,in,1,1]) as one matrix product over the channels-last pixels.

    Returns a channels_last tensor [B,out,H',W'] (its memory is the [B*H'*W', out] product), so on a
    channels_last input no layout copies happen; torch's own CPU path for batch-1 1x1 convolutions
    is several times slower in that layout. TF 'same' with a 1x1 kernel needs no padding; stride
    ``s`` samples rows/columns 0, s, 2s, ...
    """
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view when x is channels_last
    w2 = weight.reshape(weight.shape[0], c).t()
    out = torch.mm(rows, w2) if bias is None else torch.addmm(bias, rows, w2)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def _torch_pool_out(n: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of ``F.max_pool2d(..., padding=pad, ceil_mode=True)`` along an axis of length ``n``."""
    out = -(-(n + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= n + pad:  # the last window must start inside the input or the left padding
        out -= 1
    return out


def max_pool_same(x: Tensor, kernel: int, stride: int) -> Tensor:
    """``tf.maxPool(x, k, s, 'same')``: padded cells never win (padding with -inf).

    When torch's implicit -inf padding (``padding`` = TF's leading pad, ``ceil_mode`` for the trailing
    one) gives the same windows, no padded copy is built; otherwise the input is padded explicitly.
    """
    (top, bottom), (left, right) = (same_padding(n, kernel, stride) for n in x.shape[-2:])
    if top <= kernel // 2 and left <= kernel // 2 and all(
            _torch_pool_out(n, kernel, stride, p) == -(-n // stride) for n, p in zip(x.shape[-2:], (top, left))):
        return F.max_pool2d(x, kernel, stride, padding=(top, left), ceil_mode=True)
    x = pad_same(x, kernel, stride, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


def square_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of :func:`pad_to_square` for an image ``height x width``."""
    return (0, max(height - width, 0), 0, max(width - height, 0))


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


def greedy_nms(boxes: Tensor, scores: Tensor, max_output: int, iou_threshold: float, score_threshold: float,
               suppress_equal: bool) -> Tensor:
    """The greedy NMS of tfjs and face-api, in double precision as JS compares float32 values.

    Candidates with score > ``score_threshold`` by descending score (lower index first on ties); a candidate is
    dropped when its IoU with a kept box is >= ``iou_threshold`` (``suppress_equal``, tfjs-core
    ``nonMaxSuppressionImpl_``) or > it (face-api's SSD). IoU is 0 for a box of non-positive area; ``boxes``
    [N,4] in any consistent corner order. Returns the kept indices (long) on ``boxes.device``.
    """
    s = scores.detach().float().cpu().double()
    b = boxes.detach().float().cpu().double()
    cand = torch.nonzero(s > score_threshold).flatten()
    cand = cand[torch.sort(s[cand], descending=True, stable=True).indices]
    lo = torch.minimum(b[:, :2], b[:, 2:])
    hi = torch.maximum(b[:, :2], b[:, 2:])
    area = (hi - lo).prod(-1)
    selected: list[int] = []
    for i in cand.tolist():
        if len(selected) >= max_output:
            break
        if selected:
            sel = torch.tensor(selected)
            wh = (torch.minimum(hi[sel], hi[i]) - torch.maximum(lo[sel], lo[i])).clamp(min=0)
            inter = wh.prod(-1)
            iou = inter / (area[sel] + area[i] - inter)
            iou = torch.where((area[sel] <= 0) | (area[i] <= 0), torch.zeros_like(iou), iou)
            if bool(((iou >= iou_threshold) if suppress_equal else (iou > iou_threshold)).any()):
                continue
        selected.append(i)
    return torch.tensor(selected, dtype=torch.long, device=boxes.device)
