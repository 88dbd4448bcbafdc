"""A reader for TensorFlow.js *graph models* (``model.json`` + ``.bin`` shards) as plain ``nn.Module``.

Why it is written here: the usual chain (``tensorflowjs_converter`` -> SavedModel -> ``tf2onnx`` ->
``onnx2torch``) needs TensorFlow installed and loses the tfjs semantics on the way (quantised weights,
TF 'same' padding, the legacy bilinear resize). The graph models that facelab uses have small op sets,
so the graph is interpreted directly in PyTorch: every node becomes a call of a differentiable torch
function, in topological order. numpy decodes the weight bytes (including IEEE float16).

* **Weights**: :func:`decode_weights` reads the ``weightsManifest`` exactly as tfjs 4.22
  (``io_utils.decodeWeight``): the shards of each group are concatenated and sliced in manifest order;
  ``uint8`` / ``uint16`` quantised floats are ``q * scale + min`` computed in float64 and stored as float32
  (JavaScript numbers are doubles, tfjs writes them into a ``Float32Array``); quantised int32 are
  ``Math.round(q * scale + min)``; ``float16`` is decoded exactly. A missing shard or a shard group whose
  size differs from what the manifest describes raises :class:`GraphModelError` naming the file.
* **Layouts**: the graph is NHWC; the module runs NCHW. Inputs of rank 4 are given as ``[B,C,H,W]``;
  convolution filters are converted to torch layouts once, when the module is built; a value produced by
  a convolution stays channels-first through element-wise ops, reductions (axes remapped), padding,
  concatenation and softmax, and is permuted back to NHWC only where an op needs the logical layout
  (reshape, slicing, matmul...). 4-D outputs are returned ``[B,C,H,W]`` (``channels_first_outputs``). On
  CPU the activations are kept in ``channels_last`` memory (``channels_last=True``): the same NCHW tensors,
  which PyTorch's CPU convolutions run 1.1-1.8x faster. A fused BiasAdd becomes the convolution's bias and
  a fused Relu/Relu6 runs in place on the fresh convolution output.
* **Batches**: placeholders with batch 1 accept any batch; a ``Reshape`` to a fixed shape whose first
  dimension is 1 keeps the input's batch dimension instead (tfjs would fail on such a batch).
* **Errors**: an op the reader does not implement raises :class:`GraphModelError` when the module is
  built, naming the op and the node; so do malformed attributes and a missing weight.

Weights are module parameters (float) or buffers (integer constants), so ``.to(device)``, ``.double()``
and autograd work as for any module. On CUDA, PyTorch's default TF32 convolutions (Ampere and later) move
outputs by ~1e-3; set ``torch.backends.cudnn.allow_tf32 = False`` to match tfjs to float32 precision.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelab.models.tf_ops import same_padding, tf_resize_bilinear

__all__ = ["GraphModelError", "TfjsGraphModel", "decode_weights", "load_graph_model", "SUPPORTED_OPS"]


class GraphModelError(ValueError):
    """A tfjs graph model cannot be read: bad ``model.json``, missing or wrong-size shard, unknown op."""


# -- weights ---------------------------------------------------------------------------------------
_DTYPE_BYTES = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}


def _js_round(x: np.ndarray) -> np.ndarray:
    """JavaScript ``Math.round`` (halves towards +infinity)."""
    return np.floor(x + 0.5)


def _decode_one(spec: Mapping, raw: bytes, where: str) -> np.ndarray:
    name, dtype, shape = spec["name"], spec["dtype"], [int(s) for s in spec["shape"]]
    q = spec.get("quantization")
    if q:
        qd = q.get("dtype")
        if qd in ("uint8", "uint16"):
            if "scale" not in q or "min" not in q:
                raise GraphModelError(f"{where}: weight {name!r} is {qd}-quantised without min and scale")
            vals = np.frombuffer(raw, dtype=np.dtype(qd).newbyteorder("<")).astype(np.float64)
            vals = vals * float(q["scale"]) + float(q["min"])  # doubles, as JavaScript numbers
            if dtype == "float32":
                arr = vals.astype(np.float32)
            elif dtype == "int32":
                arr = _js_round(vals).astype(np.int32)
            else:
                raise GraphModelError(f"{where}: weight {name!r}: {qd} quantisation of dtype {dtype} is not supported")
        elif qd == "float16":
            if dtype != "float32":
                raise GraphModelError(f"{where}: weight {name!r}: float16 quantisation needs dtype float32, got {dtype}")
            arr = np.frombuffer(raw, dtype=np.dtype("<f2")).astype(np.float32)
        else:
            raise GraphModelError(f"{where}: weight {name!r} has unknown quantisation dtype {qd!r}")
    elif dtype == "float32":
        arr = np.frombuffer(raw, dtype=np.dtype("<f4")).astype(np.float32)
    elif dtype == "int32":
        arr = np.frombuffer(raw, dtype=np.dtype("<i4")).astype(np.int32)
    elif dtype == "bool":
        arr = np.frombuffer(raw, dtype=np.uint8).astype(bool)
    else:
        raise GraphModelError(f"{where}: weight {name!r} has unsupported dtype {dtype!r}")
    return arr.reshape(shape)


def _weight_nbytes(spec: Mapping, where: str) -> int:
    n = math.prod(int(s) for s in spec["shape"])
    key = spec.get("quantization", {}).get("dtype") or spec["dtype"]
    if key not in _DTYPE_BYTES:
        raise GraphModelError(f"{where}: weight {spec.get('name')!r} has unsupported dtype {key!r}")
    return n * _DTYPE_BYTES[key]


def decode_weights(manifest: Sequence[Mapping], read_shard: Callable[[str], bytes | None],
                   where: str = "model.json") -> dict[str, np.ndarray]:
    """All weights of a ``weightsManifest``; ``read_shard(path)`` returns a shard's bytes or None if missing.

    As tfjs: the shards of one group are concatenated, and the group's weights are sliced from it in
    order. A missing shard, or a group whose bytes differ in size from what its weights need, raises
    :class:`GraphModelError` naming the shard files and both sizes.
    """
    out: dict[str, np.ndarray] = {}
    for gi, group in enumerate(manifest):
        paths = list(group.get("paths", []))
        parts = []
        for p in paths:
            data = read_shard(p)
            if data is None:
                raise GraphModelError(f"{where}: weight shard {p!r} (group {gi}) is missing")
            parts.append(data)
        blob = b"".join(parts)
        need = sum(_weight_nbytes(s, where) for s in group["weights"])
        if need != len(blob):
            sizes = ", ".join(f"{p} = {len(d)} bytes" for p, d in zip(paths, parts))
            raise GraphModelError(
                f"{where}: weight shards of group {gi} hold {len(blob)} bytes ({sizes}), but the manifest's "
                f"{len(group['weights'])} weights need {need} bytes: wrong or truncated shard")
        offset = 0
        for spec in group["weights"]:
            n = _weight_nbytes(spec, where)
            out[spec["name"]] = _decode_one(spec, blob[offset:offset + n], where)
            offset += n
    return out


# -- attributes ------------------------------------------------------------------------------------
def _attr(node: Mapping, key: str, default=None):
    cache = node.get("_parsed")
    if cache is not None and key in cache:
        v = cache[key]
        return default if v is None else v
    return _parse_attr(node, key, default)


def _parse_attr(node: Mapping, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "type" in a:
        return a["type"]
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    if "shape" in a:
        return [int(d.get("size", -1)) for d in a["shape"].get("dim", [])]
    return default


# -- layouts ---------------------------------------------------------------------------------------
# A value is (tensor, cf): cf=True means a logical NHWC rank-4 tensor stored as NCHW.
_TO_CF = (0, 3, 1, 2)  # NHWC -> NCHW
_TO_NHWC = (0, 2, 3, 1)
_AXIS_CF = {0: 0, 1: 2, 2: 3, 3: 1}  # logical NHWC axis -> physical NCHW dim


def _plain(v: tuple[Tensor, bool]) -> Tensor:
    t, cf = v
    return t.permute(_TO_NHWC) if cf else t


def _cf(v: tuple[Tensor, bool], node: str) -> Tensor:
    t, cf = v
    if cf:
        return t
    if t.dim() != 4:
        raise GraphModelError(f"node {node!r}: expected a rank-4 NHWC tensor, got shape {tuple(t.shape)}")
    return t.permute(_TO_CF)


def _broadcast_cf(t: Tensor) -> Tensor:
    """A plain (NHWC-broadcasting) operand of rank <= 4 made to broadcast against a channels-first tensor."""
    if t.dim() == 0:
        return t
    if t.dim() > 4:
        raise GraphModelError(f"cannot broadcast a rank-{t.dim()} operand against a rank-4 tensor")
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(_TO_CF)


_TF_DTYPES = {"DT_FLOAT": torch.float32, "DT_INT32": torch.int32, "DT_BOOL": torch.bool, "DT_INT64": torch.int64,
              "DT_HALF": torch.float16, "DT_DOUBLE": torch.float64}


# -- the module ------------------------------------------------------------------------------------
class TfjsGraphModel(nn.Module):
    """A tfjs graph model as an ``nn.Module``: ``forward(*inputs)`` -> tuple of the chosen outputs.

    ``topology``: the parsed ``model.json``; ``weights``: ``{const name: array}`` (:func:`decode_weights`).
    ``outputs``: node names (``"name"`` or ``"name:k"``) to return, default the signature's outputs or,
    without one, the nodes nothing consumes (as tfjs). ``inputs``: placeholder names in call order
    (default: all placeholders in graph order). Rank-4 inputs are ``[B,C,H,W]``; rank-4 outputs come back
    ``[B,C,H,W]`` unless ``channels_first_outputs=False`` (then NHWC, as tfjs).
    """

    def __init__(self, topology: Mapping, weights: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
                 inputs: Sequence[str] | None = None, name: str = "model.json",
                 channels_first_outputs: bool = True, channels_last: bool = True) -> None:
        super().__init__()
        self.name = name
        self.channels_first_outputs = channels_first_outputs
        self.channels_last = channels_last
        try:
            nodes = topology["modelTopology"]["node"]
        except (KeyError, TypeError):
            raise GraphModelError(f"{name}: not a tfjs graph model (no modelTopology.node)") from None
        self._nodes: dict[str, dict] = {}
        for n in nodes:
            if "name" not in n or "op" not in n:
                raise GraphModelError(f"{name}: a node without name or op: {json.dumps(n)[:200]}")
            n = dict(n)  # own copy: the parsed attributes are cached in it
            n["_parsed"] = {k: _parse_attr(n, k) for k in n.get("attr", {})}
            self._nodes[n["name"]] = n
        placeholders = [n["name"] for n in nodes if n["op"] == "Placeholder"]
        self.input_names = list(inputs) if inputs is not None else placeholders
        for i in self.input_names:
            if self._nodes.get(i, {}).get("op") != "Placeholder":
                raise GraphModelError(f"{name}: input {i!r} is not a Placeholder node")
        sig = topology.get("signature") or (topology.get("userDefinedMetadata") or {}).get("signature") or {}
        aliases = {k: v.get("name", k) for k, v in (sig.get("outputs") or {}).items()}  # signature key -> tensor
        aliases = {k: (v[:-2] if v.endswith(":0") else v) for k, v in aliases.items()}
        if outputs is not None:  # signature output keys (e.g. "age_output") name their tensors, as in tfjs
            outputs = [aliases.get(o, o) if o.split(":")[0] not in self._nodes else o for o in outputs]
        self.output_names = list(outputs) if outputs is not None else self._default_outputs(topology, nodes)
        for o in self.output_names:
            if o.split(":")[0] not in self._nodes:
                raise GraphModelError(f"{name}: output {o!r} is not a node of the graph")
        self._order = self._toposort()
        # weights: float constants become parameters, integer constants buffers (+ python copies)
        self.params = nn.ParameterDict()
        self.consts = {}  # const name -> key in params or buffers
        self._static: dict[str, list] = {}
        self._buffer_keys: dict[str, str] = {}
        filters = self._filter_uses()
        for nname in self._order:
            node = self._nodes[nname]
            if node["op"] != "Const":
                continue
            if nname not in weights:
                raise GraphModelError(f"{name}: constant node {nname!r} has no weight in the weightsManifest")
            arr = np.asarray(weights[nname])
            t = torch.from_numpy(np.ascontiguousarray(arr).copy())
            key = f"c{len(self.consts)}"
            self.consts[nname] = key
            if t.is_floating_point():
                kind = filters.get(nname)
                if kind == "conv":
                    if t.dim() != 4:
                        raise GraphModelError(f"{name}: filter {nname!r} has shape {tuple(t.shape)}, expected [kh,kw,in,out]")
                    t = t.permute(3, 2, 0, 1).contiguous()
                elif kind == "depthwise":
                    if t.dim() != 4:
                        raise GraphModelError(f"{name}: filter {nname!r} has shape {tuple(t.shape)}, expected [kh,kw,in,mult]")
                    kh, kw, cin, mult = t.shape
                    t = t.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).contiguous()
                self.params[key] = nn.Parameter(t)
            else:
                self.register_buffer(key, t)
                self._static[nname] = t.tolist()
        for nname in self._order:  # unknown ops are reported before anything runs
            op = self._nodes[nname]["op"]
            if op not in _OPS and op not in ("Const", "Placeholder"):
                raise GraphModelError(
                    f"{name}: node {nname!r} has op {op!r}, which the tfjs graph reader does not implement "
                    f"(supported: {', '.join(sorted(SUPPORTED_OPS))})")
        self._last_use = self._last_uses()

    # -- graph structure ---------------------------------------------------------------------------
    def _default_outputs(self, topology: Mapping, nodes: list) -> list[str]:
        sig = topology.get("signature") or (topology.get("userDefinedMetadata") or {}).get("signature") or {}
        outs = [v.get("name", k) for k, v in (sig.get("outputs") or {}).items()]
        outs = [o[:-2] if o.endswith(":0") else o for o in outs]
        if outs and all(o.split(":")[0] in self._nodes for o in outs):
            return outs
        consumed = {self._src(i)[0] for n in nodes for i in n.get("input", [])}
        return [n["name"] for n in nodes if n["name"] not in consumed and n["op"] not in ("Const", "NoOp")]

    @staticmethod
    def _src(ref: str) -> tuple[str, int]:
        if ref.startswith("^"):
            return ref[1:], -1
        base, _, idx = ref.partition(":")
        return base, int(idx) if idx else 0

    def _data_inputs(self, node: Mapping) -> list[tuple[str, int]]:
        refs = node.get("_inputs")
        if refs is None:  # parsed once per node
            refs = node["_inputs"] = [self._src(i) for i in node.get("input", []) if not i.startswith("^")]
        return refs

    def _toposort(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}
        for out in self.output_names:
            stack = [(out.split(":")[0], False)]
            while stack:
                nname, done = stack.pop()
                if done:
                    if state.get(nname) != 2:
                        state[nname] = 2
                        order.append(nname)
                    continue
                if state.get(nname):
                    if state[nname] == 1:
                        continue
                    continue
                if nname not in self._nodes:
                    raise GraphModelError(f"{self.name}: a node refers to input {nname!r}, which is not in the graph")
                state[nname] = 1
                stack.append((nname, True))
                for src, _ in reversed(self._data_inputs(self._nodes[nname])):
                    if state.get(src) != 2:
                        stack.append((src, False))
        return order

    def _filter_uses(self) -> dict[str, str]:
        uses: dict[str, str] = {}
        for nname in self._order:
            node = self._nodes[nname]
            op = node["op"]
            kind = {"Conv2D": "conv", "_FusedConv2D": "conv", "DepthwiseConv2dNative": "depthwise",
                    "FusedDepthwiseConv2dNative": "depthwise", "DepthwiseConv2D": "depthwise"}.get(op)
            if kind is None:
                continue
            src = self._data_inputs(node)[1][0]
            if self._nodes[src]["op"] != "Const":
                raise GraphModelError(f"{self.name}: node {nname!r} ({op}): the filter must be a constant")
            if uses.get(src, kind) != kind:
                raise GraphModelError(f"{self.name}: constant {src!r} is used as two kinds of filter")
            uses[src] = kind
        for nname in self._order:  # a filter used by another op as well: not supported (layout clash)
            for src, _ in self._data_inputs(self._nodes[nname]):
                if src in uses and self._nodes[nname]["op"] not in (
                        "Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
                    raise GraphModelError(f"{self.name}: filter {src!r} is also an input of node {nname!r}")
        return uses

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, nname in enumerate(self._order):
            for src, _ in self._data_inputs(self._nodes[nname]):
                last[src] = i
        for o in self.output_names:
            last[o.split(":")[0]] = len(self._order)
        return last

    # -- running -----------------------------------------------------------------------------------
    def const(self, nname: str) -> Tensor:
        key = self.consts[nname]
        return self.params[key] if key in self.params else getattr(self, key)

    def scalar(self, nname: str, value: tuple[Tensor, bool]) -> int:
        """A scalar (or one-element) integer input as a python int."""
        v = self.static(nname, value)
        while isinstance(v, list):
            if len(v) != 1:
                raise GraphModelError(f"{self.name}: input {nname!r} must be a scalar, got {v}")
            v = v[0]
        return int(v)

    def static(self, nname: str, value: tuple[Tensor, bool]) -> list:
        """A shape-like input as a python list (cached for constants)."""
        base, k = self._src(nname)
        if k == 0 and base in self._static:
            return self._static[base]
        return _plain(value).tolist()

    #: on CPU, a batch whose rank-4 input has more pixels per image than this runs image by image (the
    #: activations of one image stay in cache: CenterNet at 512x512 is ~1.8x faster per image that way)
    cpu_split_pixels: int = 256 * 256

    def forward(self, *inputs: Tensor):
        if (len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].shape[0] > 1 and inputs[0].device.type == "cpu"
                and inputs[0].shape[-2] * inputs[0].shape[-1] > self.cpu_split_pixels):
            parts = [self._forward(inputs[0][i:i + 1]) for i in range(inputs[0].shape[0])]
            if all(o.dim() > 0 and o.shape[0] == 1 for o in parts[0]):  # every output is per image
                return tuple(torch.cat(outs, 0) for outs in zip(*parts))
        return self._forward(*inputs)

    def _forward(self, *inputs: Tensor):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.name}: expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(inputs)}")
        env: dict[str, list[tuple[Tensor, bool]]] = {}
        for iname, x in zip(self.input_names, inputs):
            shape = _attr(self._nodes[iname], "shape") or []
            if x.dim() == 4:
                if len(shape) == 4 and shape[3] > 0 and x.shape[1] != shape[3]:
                    raise ValueError(f"{self.name}: input {iname!r} expects {shape[3]} channels ([B,C,H,W]), "
                                     f"got shape {tuple(x.shape)}")
                if self.channels_last and x.device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                env[iname] = [(x, True)]
            else:
                env[iname] = [(x, False)]
        for i, nname in enumerate(self._order):
            node = self._nodes[nname]
            op = node["op"]
            if op == "Placeholder":
                if nname not in env:
                    raise ValueError(f"{self.name}: placeholder {nname!r} was not given")
                continue
            if op == "Const":
                env[nname] = [(self.const(nname), False)]
                continue
            args = []
            for src, k in self._data_inputs(node):
                vals = env[src]
                if k >= len(vals):
                    raise GraphModelError(f"{self.name}: node {nname!r} reads output {k} of {src!r}, which has {len(vals)}")
                args.append(vals[k])
            try:
                out = _OPS[op](self, node, args)
            except GraphModelError:
                raise
            except Exception as e:  # name the node in any runtime failure
                raise GraphModelError(f"{self.name}: node {nname!r} ({op}) failed: {e}") from e
            env[nname] = out if isinstance(out, list) else [out]
            for src, _ in self._data_inputs(node):  # free what no later node reads
                if self._last_use.get(src, -1) == i and src not in self.consts:
                    env.pop(src, None)
        results = []
        for o in self.output_names:
            src, k = self._src(o)
            v = env[src][k]
            t = v[0] if (v[1] and self.channels_first_outputs) else _plain(v)
            results.append(t)
        return tuple(results)


# -- ops -------------------------------------------------------------------------------------------
Value = tuple[Tensor, bool]
_OPS: dict[str, Callable[[TfjsGraphModel, Mapping, list[Value]], Value | list[Value]]] = {}


def _op(*names: str):
    def deco(fn):
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


def _hw(attr: list[int] | None, default: int = 1) -> tuple[int, int]:
    if not attr:
        return default, default
    if len(attr) == 4:
        return attr[1], attr[2]
    if len(attr) == 2:
        return attr[0], attr[1]
    return attr[0], attr[0]


def _check_nhwc(node: Mapping) -> None:
    fmt = _attr(node, "data_format", "NHWC")
    if fmt not in ("NHWC", None):
        raise GraphModelError(f"node {node['name']!r} ({node['op']}): data_format {fmt!r} is not supported (NHWC only)")


def _pad_amounts(node: Mapping, x: Tensor, k: tuple[int, int], s: tuple[int, int],
                 d: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of TF padding for ``x`` [B,C,H,W]."""
    padding = _attr(node, "padding", "VALID")
    if padding == "VALID":
        return 0, 0, 0, 0
    if padding == "SAME":
        top, bottom = same_padding(x.shape[-2], k[0], s[0], d[0])
        left, right = same_padding(x.shape[-1], k[1], s[1], d[1])
        return top, bottom, left, right
    if padding == "EXPLICIT":
        e = _attr(node, "explicit_paddings", [])
        if len(e) != 8:
            raise GraphModelError(f"node {node['name']!r}: explicit_paddings {e} must have 8 entries")
        return e[2], e[3], e[4], e[5]
    raise GraphModelError(f"node {node['name']!r} ({node['op']}): unknown padding {padding!r}")


def _conv(node: Mapping, x: Tensor, w: Tensor, groups: int, bias: Tensor | None = None) -> Tensor:
    _check_nhwc(node)
    s = _hw(_attr(node, "strides"))
    d = _hw(_attr(node, "dilations"))
    top, bottom, left, right = _pad_amounts(node, x, tuple(w.shape[-2:]), s, d)
    ph, pw = min(top, bottom), min(left, right)
    if (top, bottom, left, right) != (ph, ph, pw, pw):
        x = F.pad(x, (left - pw, right - pw, top - ph, bottom - ph))
    return F.conv2d(x, w, bias, stride=s, padding=(ph, pw), dilation=d, groups=groups)


def _activation(node: Mapping, name: str, x: Tensor, extra: Tensor | None) -> Tensor:
    if name == "Relu":
        return F.relu(x)
    if name == "Relu6":
        return F.relu6(x)
    if name == "Elu":
        return F.elu(x)
    if name == "Sigmoid":
        return torch.sigmoid(x)
    if name == "Tanh":
        return torch.tanh(x)
    if name == "LeakyRelu":
        return F.leaky_relu(x, _attr(node, "leakyrelu_alpha", 0.2))
    if name == "Prelu":
        if extra is None:
            raise GraphModelError(f"node {node['name']!r}: fused Prelu without its alpha argument")
        return torch.where(x < 0, x * extra, x)
    raise GraphModelError(f"node {node['name']!r} ({node['op']}): fused activation {name!r} is not supported")


def _fused(node: Mapping, y: Tensor, args: list[Tensor], channel_dim: int, ops: list[str] | None = None) -> Tensor:
    """tfjs fused BiasAdd + activation; ``args`` are the extra inputs (bias, prelu alpha)."""
    ops = _attr(node, "fused_ops", []) if ops is None else ops
    if not ops:
        return y
    rest = list(ops)
    bias = prelu = None
    i = 0
    if rest[0] == "BiasAdd":
        bias = args[0]
        i = 1
        rest = rest[1:]
    elif rest[0] in ("FusedBatchNorm",):
        raise GraphModelError(f"node {node['name']!r} ({node['op']}): fused FusedBatchNorm is not supported (nor by tfjs)")
    if len(rest) > 1:
        raise GraphModelError(f"node {node['name']!r} ({node['op']}): fused ops {ops} are not supported")

    def per_channel(t: Tensor) -> Tensor:
        if channel_dim == 1 and t.dim() >= 1:
            return t.reshape(-1, 1, 1) if t.numel() > 1 else t.reshape(())
        return t

    if bias is not None:
        y = y + per_channel(bias)
    if rest:
        if rest[0] == "Prelu":
            prelu = per_channel(args[i]) if i < len(args) else None
        y = _activation(node, rest[0], y, prelu)
    return y


@_op("Conv2D")
def _op_conv2d(m, node, a):
    return _keep_channels_last(m, _conv(node, _cf(a[0], node["name"]), a[1][0], 1)), True


def _keep_channels_last(m: TfjsGraphModel, y: Tensor) -> Tensor:
    """On CPU, keep activations channels_last (a 1-channel input makes torch pick the contiguous layout)."""
    if m.channels_last and y.device.type == "cpu":
        return y.contiguous(memory_format=torch.channels_last)
    return y


def _fused_conv(m: TfjsGraphModel, node: Mapping, a: list, groups: int | None) -> Value:
    """Conv + fused BiasAdd (as the convolution's bias) + activation (in place on the fresh output)."""
    x = _cf(a[0], node["name"])
    ops = _attr(node, "fused_ops", [])
    extra = [v[0] for v in a[2:]]
    bias = None
    if ops and ops[0] == "BiasAdd" and extra and extra[0].dim() == 1:
        bias, extra, ops = extra[0], extra[1:], ops[1:]
    y = _conv(node, x, a[1][0], x.shape[1] if groups is None else groups, bias)
    y = _keep_channels_last(m, y)
    if ops == ["Relu"]:
        return F.relu(y, inplace=True), True
    if ops == ["Relu6"]:
        return F.relu6(y, inplace=True), True
    return _fused(node, y, extra, 1, ops), True


@_op("_FusedConv2D")
def _op_fused_conv2d(m, node, a):
    return _fused_conv(m, node, a, 1)


@_op("DepthwiseConv2dNative", "DepthwiseConv2D")
def _op_depthwise(m, node, a):
    x = _cf(a[0], node["name"])
    return _keep_channels_last(m, _conv(node, x, a[1][0], x.shape[1])), True


@_op("FusedDepthwiseConv2dNative")
def _op_fused_depthwise(m, node, a):
    return _fused_conv(m, node, a, None)


@_op("MatMul", "_FusedMatMul", "BatchMatMul", "BatchMatMulV2")
def _op_matmul(m, node, a):
    x, w = _plain(a[0]), _plain(a[1])
    if _attr(node, "transpose_a", False) or _attr(node, "adj_x", False):
        x = x.transpose(-1, -2)
    if _attr(node, "transpose_b", False) or _attr(node, "adj_y", False):
        w = w.transpose(-1, -2)
    y = torch.matmul(x, w)
    if node["op"] == "_FusedMatMul":
        y = _fused(node, y, [_plain(v) for v in a[2:]], -1)
    return y, False


def _binary(fn):
    def run(m, node, a):
        (x, xcf), (y, ycf) = a
        if xcf or ycf:
            x = x if xcf else _broadcast_cf(x)
            y = y if ycf else _broadcast_cf(y)
            return fn(x, y), True
        return fn(x, y), False

    return run


def _floordiv(x, y):
    if x.is_floating_point() or y.is_floating_point():
        return torch.floor(x / y)
    return torch.div(x, y, rounding_mode="floor")


for _names, _fn in [
    (("Add", "AddV2", "BiasAdd"), torch.add),
    (("Sub",), torch.sub),
    (("Mul",), torch.mul),
    (("RealDiv", "Div"), torch.div),
    (("Maximum",), torch.maximum),
    (("Minimum",), torch.minimum),
    (("Pow",), torch.pow),
    (("SquaredDifference",), lambda x, y: (x - y) * (x - y)),
    (("Equal",), torch.eq),
    (("Greater",), torch.gt),
    (("Less",), torch.lt),
    (("FloorDiv",), _floordiv),
    (("FloorMod",), torch.remainder),
]:
    _op(*_names)(_binary(_fn))


@_op("AddN")
def _op_addn(m, node, a):
    if any(cf for _, cf in a):
        ts = [t if cf else _broadcast_cf(t) for t, cf in a]
        cf = True
    else:
        ts, cf = [t for t, _ in a], False
    out = ts[0]
    for t in ts[1:]:
        out = out + t
    return out, cf


def _unary(fn):
    def run(m, node, a):
        t, cf = a[0]
        return fn(t), cf

    return run


for _names, _fn in [
    (("Identity", "StopGradient", "Snapshot"), lambda t: t),
    (("Relu",), F.relu),
    (("Relu6",), F.relu6),
    (("Elu",), F.elu),
    (("Selu",), F.selu),
    (("Sigmoid",), torch.sigmoid),
    (("Tanh",), torch.tanh),
    (("Abs",), torch.abs),
    (("Neg",), torch.neg),
    (("Square",), lambda t: t * t),
    (("Sqrt",), torch.sqrt),
    (("Rsqrt",), torch.rsqrt),
    (("Exp",), torch.exp),
    (("Log",), torch.log),
    (("Floor",), torch.floor),
    (("Round",), torch.round),
    (("Reciprocal",), torch.reciprocal),
    (("Softplus",), F.softplus),
]:
    _op(*_names)(_unary(_fn))


@_op("LeakyRelu")
def _op_leaky(m, node, a):
    t, cf = a[0]
    return F.leaky_relu(t, _attr(node, "alpha", 0.2)), cf


@_op("Prelu")
def _op_prelu(m, node, a):
    (x, xcf), (al, acf) = a
    if xcf and not acf:
        al = _broadcast_cf(al)
    return torch.where(x < 0, x * al, x), xcf


@_op("IdentityN")
def _op_identity_n(m, node, a):
    return list(a)


@_op("Cast")
def _op_cast(m, node, a):
    t, cf = a[0]
    dst = _attr(node, "DstT")
    if dst not in _TF_DTYPES:
        raise GraphModelError(f"node {node['name']!r} (Cast): DstT {dst!r} is not supported")
    return t.to(_TF_DTYPES[dst]), cf


def _reduce(fn):
    def run(m, node, a):
        t, cf = a[0]
        axes = m.static(node["input"][1], a[1])
        axes = [axes] if isinstance(axes, int) else list(axes)
        keep = bool(_attr(node, "keep_dims", False))
        rank = t.dim()
        axes = sorted({ax % rank for ax in axes}) if rank else []
        if cf:
            phys = sorted(_AXIS_CF[ax] for ax in axes)
            y = fn(t, phys, keep)
            if keep:
                return y, True
            remaining_logical = [ax for ax in range(4) if ax not in axes]
            remaining_phys = [p for p in range(4) if p not in phys]
            order = [remaining_phys.index(_AXIS_CF[ax]) for ax in remaining_logical]
            return (y.permute(order) if order != sorted(order) else y), False
        if not axes:
            return t, False
        return fn(t, axes, keep), False

    return run


_op("Sum")(_reduce(lambda t, d, k: torch.sum(t, dim=d, keepdim=k)))
_op("Mean")(_reduce(lambda t, d, k: torch.mean(t, dim=d, keepdim=k)))
_op("Max")(_reduce(lambda t, d, k: torch.amax(t, dim=d, keepdim=k)))
_op("Min")(_reduce(lambda t, d, k: torch.amin(t, dim=d, keepdim=k)))
_op("Prod")(_reduce(lambda t, d, k: _prod(t, d, k)))


def _prod(t: Tensor, dims: list[int], keep: bool) -> Tensor:
    for d in sorted(dims, reverse=True):
        t = torch.prod(t, dim=d, keepdim=keep)
    return t


@_op("Softmax")
def _op_softmax(m, node, a):
    t, cf = a[0]
    return torch.softmax(t, dim=1 if cf else -1), cf


@_op("LogSoftmax")
def _op_log_softmax(m, node, a):
    t, cf = a[0]
    return torch.log_softmax(t, dim=1 if cf else -1), cf


@_op("ArgMax")
def _op_argmax(m, node, a):
    t = _plain(a[0])
    axis = m.scalar(node["input"][1], a[1])
    return torch.argmax(t, dim=axis).to(torch.int32), False


def _pool_windows(node: Mapping, x: Tensor) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    _check_nhwc(node)
    k = _hw(_attr(node, "ksize"))
    s = _hw(_attr(node, "strides"))
    return k, s, _pad_amounts(node, x, k, s, (1, 1))


@_op("MaxPool")
def _op_maxpool(m, node, a):
    x = _cf(a[0], node["name"])
    k, s, (top, bottom, left, right) = _pool_windows(node, x)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, k, s), True


@_op("AvgPool")
def _op_avgpool(m, node, a):
    """TF average pooling: padded cells are not counted (tfjs divides by the number of real cells)."""
    x = _cf(a[0], node["name"])
    k, s, (top, bottom, left, right) = _pool_windows(node, x)
    if not (top or bottom or left or right):
        return F.avg_pool2d(x, k, s), True
    xp = F.pad(x, (left, right, top, bottom))
    ones = F.pad(torch.ones_like(x[:1, :1]), (left, right, top, bottom))
    return F.avg_pool2d(xp, k, s) / F.avg_pool2d(ones, k, s), True


@_op("Pad", "PadV2", "MirrorPad")
def _op_pad(m, node, a):
    t, cf = a[0]
    pads = m.static(node["input"][1], a[1])
    value = 0.0
    if node["op"] == "PadV2":
        value = float(_plain(a[2]).reshape(()).item())
    mode = "constant"
    if node["op"] == "MirrorPad":
        mode = {"REFLECT": "reflect", "SYMMETRIC": None}.get(_attr(node, "mode", "REFLECT"))
        if mode is None:
            raise GraphModelError(f"node {node['name']!r} (MirrorPad): SYMMETRIC mode is not supported")
    if cf:
        pads = [pads[i] for i in _TO_CF]
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    if mode == "constant":
        return F.pad(t, flat, value=value), cf
    return F.pad(t, flat, mode=mode), cf


@_op("ResizeBilinear")
def _op_resize_bilinear(m, node, a):
    x = _cf(a[0], node["name"])
    size = [int(v) for v in m.static(node["input"][1], a[1])]
    if _attr(node, "half_pixel_centers", False):
        if _attr(node, "align_corners", False):
            raise GraphModelError(f"node {node['name']!r}: align_corners with half_pixel_centers is invalid")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False), True
    return tf_resize_bilinear(x, tuple(size), align_corners=bool(_attr(node, "align_corners", False))), True


@_op("ResizeNearestNeighbor")
def _op_resize_nearest(m, node, a):
    x = _cf(a[0], node["name"])
    size = [int(v) for v in m.static(node["input"][1], a[1])]
    if _attr(node, "align_corners", False) or _attr(node, "half_pixel_centers", False):
        raise GraphModelError(f"node {node['name']!r}: ResizeNearestNeighbor supports only the legacy mode")
    return F.interpolate(x, size=size, mode="nearest"), True


@_op("ConcatV2", "Concat")
def _op_concat(m, node, a):
    if node["op"] == "ConcatV2":
        vals, axis = a[:-1], m.scalar(node["input"][-1], a[-1])
    else:
        vals, axis = a[1:], m.scalar(node["input"][0], a[0])
    if any(cf for _, cf in vals) and all(v[0].dim() == 4 for v in vals):
        return torch.cat([_cf(v, node["name"]) for v in vals], dim=_AXIS_CF[axis % 4]), True
    return torch.cat([_plain(v) for v in vals], dim=axis), False


@_op("Reshape")
def _op_reshape(m, node, a):
    t = _plain(a[0])
    shape = [int(v) for v in m.static(node["input"][1], a[1])]
    n = t.numel()
    if -1 not in shape and math.prod(shape) != n and shape and shape[0] == 1 and t.dim() > 0 \
            and math.prod(shape) * t.shape[0] == n:
        shape[0] = t.shape[0]  # a fixed batch-1 reshape keeps the batch (see the module docstring)
    return t.reshape(shape), False


@_op("Squeeze")
def _op_squeeze(m, node, a):
    t = _plain(a[0])
    dims = _attr(node, "squeeze_dims", []) or _attr(node, "axis", [])
    if not dims:
        return t.squeeze(), False
    for d in sorted((d % t.dim() for d in dims), reverse=True):
        if t.shape[d] != 1:
            raise GraphModelError(f"node {node['name']!r} (Squeeze): dimension {d} of shape {tuple(t.shape)} is not 1")
        t = t.squeeze(d)
    return t, False


@_op("ExpandDims")
def _op_expand_dims(m, node, a):
    t = _plain(a[0])
    axis = m.scalar(node["input"][1], a[1])
    if axis < 0:
        axis += t.dim() + 1
    return t.unsqueeze(axis), False


@_op("Transpose")
def _op_transpose(m, node, a):
    return _plain(a[0]).permute([int(p) for p in m.static(node["input"][1], a[1])]), False


@_op("Pack")
def _op_pack(m, node, a):
    return torch.stack([_plain(v) for v in a], dim=_attr(node, "axis", 0)), False


@_op("Unpack")
def _op_unpack(m, node, a):
    return [(t, False) for t in torch.unbind(_plain(a[0]), dim=_attr(node, "axis", 0))]


@_op("Split")
def _op_split(m, node, a):
    axis = m.scalar(node["input"][0], a[0])
    t, cf = a[1]
    n = _attr(node, "num_split")
    if cf:
        return [(p, True) for p in torch.chunk(t, n, dim=_AXIS_CF[axis % 4])]
    return [(p, False) for p in torch.chunk(t, n, dim=axis)]


@_op("SplitV")
def _op_splitv(m, node, a):
    t, cf = a[0]
    sizes = [int(s) for s in m.static(node["input"][1], a[1])]
    axis = m.scalar(node["input"][2], a[2])
    dim = _AXIS_CF[axis % 4] if cf else axis
    if -1 in sizes:
        sizes[sizes.index(-1)] = t.shape[dim] - (sum(sizes) + 1)
    return [(p, cf) for p in torch.split(t, sizes, dim=dim)]


@_op("StridedSlice")
def _op_strided_slice(m, node, a):
    t = _plain(a[0])
    begin, end, strides = (m.static(node["input"][i], a[i]) for i in (1, 2, 3))
    bm, em = _attr(node, "begin_mask", 0), _attr(node, "end_mask", 0)
    elm, nam, sam = _attr(node, "ellipsis_mask", 0), _attr(node, "new_axis_mask", 0), _attr(node, "shrink_axis_mask", 0)
    index: list = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides)):
        if elm >> i & 1:
            index.append(Ellipsis)
        elif nam >> i & 1:
            index.append(None)
        elif sam >> i & 1:
            index.append(int(b))
        else:
            if s <= 0:
                raise GraphModelError(f"node {node['name']!r} (StridedSlice): stride {s} is not supported (positive only)")
            index.append(slice(None if bm >> i & 1 else int(b), None if em >> i & 1 else int(e), int(s)))
    return t[tuple(index)], False


@_op("Slice")
def _op_slice(m, node, a):
    t = _plain(a[0])
    begin, size = (m.static(node["input"][i], a[i]) for i in (1, 2))
    index = tuple(slice(int(b), None if int(n) == -1 else int(b) + int(n)) for b, n in zip(begin, size))
    return t[index], False


@_op("GatherV2")
def _op_gather(m, node, a):
    t = _plain(a[0])
    idx = _plain(a[1]).long()
    axis = m.scalar(node["input"][2], a[2]) % t.dim()
    if _attr(node, "batch_dims", 0):
        raise GraphModelError(f"node {node['name']!r} (GatherV2): batch_dims is not supported")
    out = torch.index_select(t, axis, idx.reshape(-1))
    return out.reshape(t.shape[:axis] + idx.shape + t.shape[axis + 1:]), False


@_op("TopKV2")
def _op_topk(m, node, a):
    """Top k of the last axis, ties broken by the lower index first (as tfjs)."""
    t = _plain(a[0])
    k = m.scalar(node["input"][1], a[1])
    order = torch.sort(t, dim=-1, descending=True, stable=True)
    return [(order.values[..., :k], False), (order.indices[..., :k].to(torch.int32), False)]


@_op("Tile")
def _op_tile(m, node, a):
    return _plain(a[0]).repeat([int(v) for v in m.static(node["input"][1], a[1])]), False


@_op("Shape")
def _op_shape(m, node, a):
    t = _plain(a[0])
    return torch.tensor(list(t.shape), dtype=torch.int32, device=t.device), False


@_op("ZerosLike")
def _op_zeros_like(m, node, a):
    t, cf = a[0]
    return torch.zeros_like(t), cf


@_op("OnesLike")
def _op_ones_like(m, node, a):
    t, cf = a[0]
    return torch.ones_like(t), cf


@_op("NoOp")
def _op_noop(m, node, a):
    return []


SUPPORTED_OPS: frozenset[str] = frozenset(_OPS) | {"Const", "Placeholder"}


# -- loading ---------------------------------------------------------------------------------------
def load_graph_model(model_json: str | Path | Mapping, read_shard: Callable[[str], bytes | None] | None = None,
                     **kwargs) -> TfjsGraphModel:
    """Build a :class:`TfjsGraphModel` from a ``model.json`` path (shards read beside it) or a parsed dict.

    ``read_shard(path)`` overrides how shard files are read (it returns None for a missing one); keyword
    arguments go to :class:`TfjsGraphModel` (``outputs``, ``inputs``, ``name``, ``channels_first_outputs``).
    """
    if isinstance(model_json, Mapping):
        topology = model_json
        where = kwargs.pop("name", "model.json")
        if read_shard is None:
            raise GraphModelError(f"{where}: a parsed model.json needs read_shard to find its weight shards")
    else:
        path = Path(model_json)
        where = kwargs.pop("name", str(path))
        try:
            topology = json.loads(path.read_text())
        except FileNotFoundError:
            raise GraphModelError(f"{where}: file not found") from None
        except json.JSONDecodeError as e:
            raise GraphModelError(f"{where}: not valid JSON ({e})") from None
        if read_shard is None:
            def read_shard(p: str, _dir=path.parent) -> bytes | None:
                f = _dir / p
                return f.read_bytes() if f.is_file() else None
    if not isinstance(topology, Mapping) or "weightsManifest" not in topology or "modelTopology" not in topology:
        raise GraphModelError(f"{where}: not a tfjs graph model (needs modelTopology and weightsManifest)")
    fmt = topology.get("format")
    if fmt not in (None, "graph-model"):
        raise GraphModelError(f"{where}: format {fmt!r} is not a graph model (layers models are not supported)")
    weights = decode_weights(topology["weightsManifest"], read_shard, where)
    return TfjsGraphModel(topology, weights, name=where, **kwargs)
