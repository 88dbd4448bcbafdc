"""Image files <-> float tensors.

Convention (whole project): an image is a float32 tensor ``[3, H, W]``, RGB, values in ``[0, 1]``.
Files are read with Pillow. The EXIF orientation tag **is applied** (``ImageOps.exif_transpose``), so
the tensor is the image the way a viewer shows it; boxes in the annotation files refer to that view.
Grayscale, palette, RGBA/LA (alpha dropped, no compositing), CMYK and 16-bit images are converted to RGB.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from facelab import assets
from facelab.data.errors import DatasetFormatError
from facelab.io import atomic_write

__all__ = ["ImageReadError", "load_image", "load_asset_image", "image_from_pil", "to_uint8", "save_image"]


class ImageReadError(DatasetFormatError):
    """A file is missing or cannot be decoded as an image (message names the file)."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(file, None, message)


def image_from_pil(img: Image.Image, *, exif_transpose: bool = True) -> torch.Tensor:
    """A Pillow image -> ``[3, H, W]`` float32 RGB in ``[0, 1]``."""
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.array(img, dtype=np.float32)
        arr = arr / (65535.0 if arr.max() > 255 else 255.0)
        t = torch.from_numpy(arr).clamp(0, 1)
        return t.unsqueeze(0).expand(3, -1, -1).contiguous()
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def _decode(data: bytes | Path, name: str) -> torch.Tensor:
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(src) as img:
            img.load()
            return image_from_pil(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(name, f"cannot read image ({type(e).__name__}: {e})") from e


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file -> ``[3, H, W]`` float32 RGB in ``[0, 1]`` (EXIF orientation applied)."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(str(p), "image file not found")
    return _decode(p, str(p))


def load_asset_image(name: str) -> torch.Tensor:
    """A bundled photo by asset name (e.g. ``"face-api/demo/sample1.jpg"``), sha256-verified."""
    return _decode(assets.open_bytes(name).getvalue(), f"asset {name}")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in ``[0, 1]`` -> ``[H, W, 3]`` uint8 numpy (rounded, clipped)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"to_uint8: expected image [3, H, W], got shape {tuple(image.shape)}")
    arr = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).contiguous().numpy()


def save_image(path: str | os.PathLike, image: torch.Tensor, **pil_kwargs) -> Path:
    """Write ``[3, H, W]`` float image atomically; format from the suffix (PNG is lossless)."""
    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"save_image: unknown image suffix {p.suffix!r} in {p}")
    img = Image.fromarray(to_uint8(image))
    with atomic_write(p, "wb") as f:
        img.save(f, format=fmt, **pil_kwargs)
    return p
