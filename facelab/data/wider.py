"""WIDER FACE in its official layout (Yang et al., CVPR 2016), read by our own strict parser.

Layout under ``root`` (as the official zips unpack)::

    wider_face_split/wider_face_{train,val}_bbx_gt.txt
    WIDER_{train,val}/images/<event>/<file>.jpg

Ground-truth file format, per image: the relative path line (``<event>/<file>.jpg``), a face-count line,
then ``count`` lines ``x1 y1 w h blur expression illumination invalid occlusion pose``. An image with
count 0 is followed by one line of ten zeros (which is consumed and ignored).

Evaluation files (``eval_tools/ground_truth``): ``wider_face_val.mat`` (all faces) and
``wider_{easy,medium,hard}_val.mat`` (with ``gt_list``: the faces that count in that setting).
:func:`load_wider_mat` returns plain Python structures, the type agreed with facelab.metrics::

    dict[event_name, dict[file_name_without_ext, dict(boxes=np.ndarray [N, 4] float64 x y w h,
                                                     keep=np.ndarray [K] int64 of 1-based face indices
                                                          (gt_list) or None when the file has no gt_list)]]

(``keep`` may be empty: an image with no face counted in that setting.) Predictions are written and read
in the official per-image text format by :func:`write_wider_predictions` (read back with :func:`facelab.metrics.widerface.read_predictions`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset

from facelab.data._text import load_listed_image, parse_int, read_lines, require_image
from facelab.data.errors import DatasetFormatError
from facelab.io import atomic_write

__all__ = ["WIDER_FLAGS", "WiderRecord", "WiderFace", "load_wider_mat", "write_wider_predictions"]

WIDER_FLAGS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


@dataclasses.dataclass
class WiderRecord:
    """One image of the ground-truth file."""

    rel_path: str  # "<event>/<file>.jpg"
    line: int  # 1-based line of the path in the gt file
    boxes_xywh: np.ndarray  # [N, 4] float64
    flags: np.ndarray  # [N, 6] int64, columns WIDER_FLAGS

    @property
    def event(self) -> str:
        return self.rel_path.split("/")[0]

    @property
    def name(self) -> str:
        return Path(self.rel_path).stem


def parse_wider_gt(file: str | os.PathLike) -> list[WiderRecord]:
    """Parse ``wider_face_{split}_bbx_gt.txt`` strictly (errors name the file and line)."""
    file = Path(file)
    lines = read_lines(file, "WIDER FACE ground-truth file")
    records: list[WiderRecord] = []
    i, n = 0, len(lines)
    while i < n:
        if not lines[i].strip():
            if all(not s.strip() for s in lines[i:]):
                break  # trailing blank lines
            raise DatasetFormatError(file, i + 1, "unexpected blank line (expected an image path)")
        rel = lines[i].strip()
        path_line = i + 1
        if not rel.lower().endswith((".jpg", ".jpeg", ".png")) or "/" not in rel:
            raise DatasetFormatError(file, path_line, f"expected an image path '<event>/<file>.jpg', got {rel!r}")
        if i + 1 >= n:
            raise DatasetFormatError(file, path_line, f"file ends after image path {rel!r} (face count missing)")
        count = parse_int(lines[i + 1].strip(), file, i + 2, "face count")
        if count < 0:
            raise DatasetFormatError(file, i + 2, f"face count must be >= 0, got {count}")
        rows = max(count, 1)  # count 0 is followed by one placeholder line of zeros
        if i + 2 + rows > n:
            raise DatasetFormatError(file, n, f"file ends inside the face list of {rel!r} (line {path_line}): "
                                              f"expected {rows} face line(s)")
        vals = []
        for k in range(i + 2, i + 2 + rows):
            tok = lines[k].split()
            if len(tok) != 10:
                raise DatasetFormatError(file, k + 1, f"expected 10 numbers 'x1 y1 w h blur expression illumination "
                                                      f"invalid occlusion pose', got {len(tok)} fields: {lines[k]!r}")
            try:
                vals.append([float(t) for t in tok])
            except ValueError:
                raise DatasetFormatError(file, k + 1, f"non-numeric field in {lines[k]!r}") from None
        arr = np.asarray(vals, dtype=np.float64).reshape(-1, 10)
        if count == 0:
            arr = arr[:0]
        if (arr[:, 2:4] < 0).any():
            k = int(np.nonzero((arr[:, 2:4] < 0).any(1))[0][0])
            raise DatasetFormatError(file, i + 3 + k, "negative box width/height")
        records.append(WiderRecord(rel, path_line, arr[:, :4].copy(), arr[:, 4:].astype(np.int64)))
        i += 2 + rows
    return records


class WiderFace(Dataset):
    """WIDER FACE train or val split from the official layout.

    ``ds[i]`` -> ``(image [3, H, W] float RGB in [0, 1], boxes [N, 4] float32 x1 y1 x2 y2 (x + w, y + h),
    info)`` with ``info = {"event", "file", "rel_path", "boxes_xywh" [N, 4], and one int64 tensor [N] per
    flag in WIDER_FLAGS}``. Every listed image must exist (checked at construction unless
    ``check_images=False``); errors name the gt file and line.
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", *, check_images: bool = True) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"WiderFace: split must be 'train' or 'val', got {split!r}")
        self.root = Path(root)
        self.split = split
        self.gt_file = self.root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        self.image_dir = self.root / f"WIDER_{split}" / "images"
        self.records = parse_wider_gt(self.gt_file)
        if check_images:
            for r in self.records:
                require_image(self.image_dir / r.rel_path, self.gt_file, r.line)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int):
        r = self.records[idx]
        image = load_listed_image(self.image_dir / r.rel_path, self.gt_file, r.line)
        xywh = torch.from_numpy(r.boxes_xywh).float()
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        info = {"event": r.event, "file": Path(r.rel_path).name, "rel_path": r.rel_path, "boxes_xywh": xywh}
        info.update({name: torch.from_numpy(r.flags[:, k].copy()) for k, name in enumerate(WIDER_FLAGS)})
        return image, boxes, info


def _mat_str(x, file: Path, what: str) -> str:
    a = np.asarray(x)
    while a.dtype == object and a.size == 1:
        a = np.asarray(a.reshape(-1)[0])
    if a.dtype.kind not in "US" or a.size != 1:
        raise DatasetFormatError(file, None, f"{what}: expected a string, got {a.dtype} array of shape {a.shape}")
    return str(a.reshape(-1)[0])


def load_wider_mat(path: str | os.PathLike) -> dict[str, dict[str, dict[str, np.ndarray | None]]]:
    """Read an official WIDER FACE evaluation ``.mat`` (see module docstring for the returned type)."""
    file = Path(path)
    if not file.is_file():
        raise DatasetFormatError(file, None, "WIDER FACE .mat file not found")
    try:
        m = scipy.io.loadmat(str(file))
    except Exception as e:  # scipy raises several types for corrupt files
        raise DatasetFormatError(file, None, f"cannot read .mat file ({type(e).__name__}: {e})") from None
    for key in ("event_list", "file_list", "face_bbx_list"):
        if key not in m:
            raise DatasetFormatError(file, None, f"variable {key!r} missing (has: {sorted(k for k in m if not k.startswith('__'))})")
    events, files, bbx = m["event_list"], m["file_list"], m["face_bbx_list"]
    gt = m.get("gt_list")
    n_ev = events.shape[0]
    for key, arr in (("file_list", files), ("face_bbx_list", bbx)) + ((("gt_list", gt),) if gt is not None else ()):
        if arr.shape[0] != n_ev:
            raise DatasetFormatError(file, None, f"{key} has {arr.shape[0]} events, event_list has {n_ev}")
    out: dict[str, dict[str, dict[str, np.ndarray | None]]] = {}
    for e in range(n_ev):
        ev = _mat_str(events[e][0], file, f"event_list[{e}]")
        f_e = files[e][0].reshape(-1)
        b_e = bbx[e][0].reshape(-1)
        g_e = gt[e][0].reshape(-1) if gt is not None else None
        if len(b_e) != len(f_e) or (g_e is not None and len(g_e) != len(f_e)):
            raise DatasetFormatError(file, None, f"event {ev!r}: file_list has {len(f_e)} images but face_bbx_list "
                                                 f"{len(b_e)}" + (f" and gt_list {len(g_e)}" if g_e is not None else ""))
        images: dict[str, dict[str, np.ndarray | None]] = {}
        for i in range(len(f_e)):
            name = _mat_str(f_e[i], file, f"file_list[{e}][{i}]")
            boxes = np.asarray(b_e[i], dtype=np.float64)
            if boxes.size == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise DatasetFormatError(file, None, f"{ev}/{name}: face_bbx_list entry has shape {boxes.shape}, expected [N, 4]")
            keep = None
            if g_e is not None:
                keep = np.asarray(g_e[i]).reshape(-1).astype(np.int64)
                if keep.size and (keep.min() < 1 or keep.max() > len(boxes)):
                    raise DatasetFormatError(file, None, f"{ev}/{name}: gt_list index out of 1..{len(boxes)}")
            images[name] = {"boxes": boxes, "keep": keep}
        out[ev] = images
    return out


def write_wider_predictions(out_dir: str | os.PathLike, event: str, name: str, boxes_xywh, scores) -> Path:
    """Write ``<out_dir>/<event>/<name>.txt`` in the official format: name line, count line, then
    ``x y w h score`` lines (atomically). ``name`` is the image file name without extension."""
    b = np.asarray(boxes_xywh.detach().cpu() if isinstance(boxes_xywh, torch.Tensor) else boxes_xywh, dtype=np.float64)
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).reshape(-1)
    b = b.reshape(-1, 4) if b.size else b.reshape(0, 4)
    if len(b) != len(s):
        raise ValueError(f"write_wider_predictions({event}/{name}): {len(b)} boxes but {len(s)} scores")
    name = Path(name).stem if name.lower().endswith((".jpg", ".jpeg", ".png")) else name
    path = Path(out_dir) / event / f"{name}.txt"
    with atomic_write(path) as f:
        f.write(f"{name}\n{len(b)}\n")
        for (x, y, w, h), sc in zip(b, s):
            f.write(f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {sc:.4f}\n")
    return path


