"""Decode the six face-api demo photos once, with Pillow, into raw RGB arrays for the node tool.

Both sides of the comparison see identical pixels: Python decodes ``sample1..6.jpg`` (Pillow,
``.convert("RGB")``, uint8 HWC) and writes ``<name>.rgb`` (raw bytes) plus ``inputs.json`` (shape,
SHA-256 of the pixels, model directory) into ``OUT_DIR``; ``reference.js`` builds
``tf.tensor3d(pixels, [H, W, 3], 'int32')`` from them, so JavaScript never decodes a JPEG.

Usage: ``.venv/bin/python tools/faceapi_reference/make_inputs.py OUT_DIR``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facelab import assets
from facelab.io import atomic_write

PHOTOS = [f"sample{i}" for i in range(1, 7)]


def decode(name: str) -> np.ndarray:
    """The demo photo ``name`` (e.g. ``"sample1"``) as uint8 RGB [H,W,3], decoded by Pillow."""
    with Image.open(assets.path(f"face-api/demo/{name}.jpg")) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for <name>.rgb and inputs.json")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import PIL

    entries = []
    for name in PHOTOS:
        rgb = decode(name)
        with atomic_write(args.out_dir / f"{name}.rgb", "wb") as f:
            f.write(rgb.tobytes())
        entries.append({"name": name, "file": f"{name}.rgb", "shape": list(rgb.shape),
                        "sha256": hashlib.sha256(rgb.tobytes()).hexdigest()})
    meta = {
        "decoder": f"Pillow {PIL.__version__} Image.convert('RGB')",
        "model_dir": str(assets.path("face-api/model/ssd_mobilenetv1_model.bin").parent),
        "photos": entries,
    }
    with atomic_write(args.out_dir / "inputs.json") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {len(entries)} photos to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
