"""Read face-api (tfjs) weights: ``*-weights_manifest.json`` + ``*.bin``.

Tensors are stored in manifest order; float32 tensors are little-endian raw, uint8-quantized tensors
dequantize as ``q * scale + min`` (the tfjs ``quantization`` entry), computed in float64 and rounded
to float32 as tfjs does (a float32 sum differs by one rounding step in most weights). No unpickling is involved.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from facelab import assets

__all__ = ["load_faceapi_weights"]

_DTYPES = {"float32": np.float32, "int32": np.int32}


def load_faceapi_weights(model: str) -> dict[str, torch.Tensor]:
    """All tensors of face-api model ``model`` (e.g. ``"ssd_mobilenetv1_model"``) by their tfjs names."""
    manifest = json.loads(assets.open_bytes(f"face-api/model/{model}-weights_manifest.json").read())
    blob = assets.open_bytes(f"face-api/model/{model}.bin").getvalue()
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for group in manifest:
        for spec in group["weights"]:
            shape = spec["shape"]
            n = int(np.prod(shape)) if shape else 1
            q = spec.get("quantization")
            if q:
                qdtype = np.dtype(q["dtype"])
                raw = np.frombuffer(blob, dtype=qdtype, count=n, offset=offset)
                offset += n * qdtype.itemsize
                # tfjs computes q*scale+min in float64 and stores float32: do the same, bit for bit
                arr = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
            else:
                dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
                arr = np.frombuffer(blob, dtype=dtype, count=n, offset=offset).astype(dtype.newbyteorder("="))
                offset += n * dtype.itemsize
            out[spec["name"]] = torch.from_numpy(arr.reshape(shape).copy())
    if offset != len(blob):
        raise ValueError(f"face-api model {model}: manifest describes {offset} bytes, .bin has {len(blob)}")
    return out
