"""The book's gallery page is generated from the annotations and listed in the table of contents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from facelab.data.faces import all_faces

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("make_gallery", ROOT / "tools" / "make_gallery.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gallery_page_up_to_date_and_in_toc():
    tool = _tool()
    assert tool.main(["--check"]) == 0, "book/gallery.md is stale: run tools/make_gallery.py"
    text = (ROOT / "book" / "gallery.md").read_text()
    fs = all_faces()
    assert all(f"| `{f.face_id}` | {f.identity} |" in text for f in fs.faces)
    assert all(f"| `{p.photo_id}` |" in text for p in fs.photos)
    assert "**17 photos, 40 faces, 37 identities**" in text
    assert (ROOT / "book" / "gallery_faces.jpg").stat().st_size > 10_000
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "book/gallery" in files
