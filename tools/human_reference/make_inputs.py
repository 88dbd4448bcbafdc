"""Decode the face-api demo photos once, with Pillow, into raw RGB arrays for ``reference.js``.

Writes into ``OUT_DIR``: ``<name>.rgb`` (raw uint8 HWC RGB) for the six photos ``sample1..6`` and for face
crops cut from them (the integer ``crop_box`` of the SSD faces in ``tests/golden/faceapi_reference.json``),
plus ``inputs.json`` (names, shapes, SHA-256 of the pixels, the cached model folder). JavaScript never
decodes a JPEG, and both sides see identical pixels.

Usage: ``.venv/bin/python tools/human_reference/make_inputs.py OUT_DIR``
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

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = [f"sample{i}" for i in range(1, 7)]
FACEAPI_GOLDEN = ROOT / "tests" / "golden" / "faceapi_reference.json"
MAX_FACES_PER_PHOTO = 2


def decode(name: str) -> np.ndarray:
    """The demo photo ``name`` as uint8 RGB [H,W,3], decoded by Pillow (as tools/faceapi_reference)."""
    with Image.open(assets.path(f"face-api/demo/{name}.jpg")) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def crops() -> list[tuple[str, str, list[int]]]:
    """(crop name, photo, [x, y, w, h]) of the face crops: up to two SSD faces per photo."""
    golden = json.loads(FACEAPI_GOLDEN.read_text())
    out = []
    for photo in PHOTOS:
        for i, face in enumerate(golden["photos"][photo]["faces"][:MAX_FACES_PER_PHOTO]):
            out.append((f"{photo}_face{i}", photo, [int(v) for v in face["crop_box"]]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import PIL

    def write(name: str, rgb: np.ndarray) -> dict:
        with atomic_write(args.out_dir / f"{name}.rgb", "wb") as f:
            f.write(rgb.tobytes())
        return {"name": name, "file": f"{name}.rgb", "shape": list(rgb.shape),
                "sha256": hashlib.sha256(rgb.tobytes()).hexdigest()}

    photos = {name: decode(name) for name in PHOTOS}
    meta = {
        "decoder": f"Pillow {PIL.__version__} Image.convert('RGB')",
        "model_dir": str(assets.path("human-models/models/blazeface-back.json").parent),
        "photos": [write(name, rgb) for name, rgb in photos.items()],
        "crops": [],
    }
    for name, photo, (x, y, w, h) in crops():
        entry = write(name, np.ascontiguousarray(photos[photo][y:y + h, x:x + w]))
        entry.update(photo=photo, crop_box=[x, y, w, h])
        meta["crops"].append(entry)
    with atomic_write(args.out_dir / "inputs.json") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {len(meta['photos'])} photos and {len(meta['crops'])} face crops to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
