"""Browser check of the built book: build the HTML from the current sources, serve it on 127.0.0.1 and
open pages in Debian's headless Chromium (installed by tools/setup_system.sh). Asserts on the rendered
DOM and saves screenshots to test-artifacts/ (gitignored)."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest

from facelab.book import build as book_build

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_S = 90
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--virtual-time-budget=8000"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.environ.get("FACELAB_NO_APT") == "1":
        pytest.skip("no headless Chromium and FACELAB_NO_APT=1 (tools/setup_system.sh installs Debian's chromium)")
    pytest.fail("no headless Chromium found: run `bash tools/setup_system.sh` (apt-get install chromium)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The book built now from the current sources, served on a free port of 127.0.0.1."""
    out = tmp_path_factory.mktemp("book")
    assert book_build.build(ROOT, out, quiet=True) == 0, "facelab book failed (see the output above)"
    html = out / "_build" / "html"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest's output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", html
    finally:
        server.shutdown()
        server.server_close()


def _browser(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless Chromium did not finish within {TIMEOUT_S} s: {' '.join(cmd)}")


def render(url: str, tmp_path: Path, shot: str) -> str:
    """The DOM after scripts ran, and a screenshot in test-artifacts/<shot>.png."""
    dom = _browser(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0 and "<html" in dom.stdout, f"chromium failed on {url}: {dom.stderr[-2000:]}"
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / f"{shot}.png"
    png.unlink(missing_ok=True)
    shot_run = _browser([f"--screenshot={png}", "--window-size=1280,1400", url], tmp_path)
    assert png.is_file() and png.stat().st_size > 5000, f"no screenshot of {url}: {shot_run.stderr[-2000:]}"
    return dom.stdout


def _main(dom: str) -> str:
    m = re.search(r'<main[^>]*id="main-content".*?</main>', dom, flags=re.S)
    return m.group(0) if m else dom


def test_intro_renders(site, tmp_path):
    url, html = site
    dom = render(f"{url}/book/intro.html", tmp_path, "book-intro")
    assert "<title>" in dom and "facelab" in dom
    main = _main(dom)
    assert re.search(r"<h1[^>]*>\s*facelab: adversarial attacks and defenses on face systems", main)
    assert "Universal adversarial patch" in main and "Purification defense" in main
    assert "Part 1 · Universal adversarial patches" in dom  # the navigation lists the parts
    assert 'href="../book/references.html' in dom or 'href="references.html' in dom  # citations resolve


def test_status_page_renders(site, tmp_path):
    url, _ = site
    dom = render(f"{url}/book/status.html", tmp_path, "book-status")
    assert re.search(r"<h1[^>]*>\s*Replication status", _main(dom))


CHAPTER_1 = ROOT / "notebooks" / "01_universal_patches.ipynb"


@pytest.fixture(scope="module")
def chapter_1(site, tmp_path_factory) -> str:
    """The rendered DOM of chapter 1 (rendered once; screenshot test-artifacts/book-chapter-1.png)."""
    if not CHAPTER_1.is_file():
        pytest.skip("chapter 1 (notebooks/01_universal_patches.ipynb) has not landed yet")
    url, _ = site
    return render(f"{url}/notebooks/01_universal_patches.html", tmp_path_factory.mktemp("chromium"), "book-chapter-1")


def test_chapter_1_renders_with_a_figure(chapter_1):
    nb = nbformat.read(str(CHAPTER_1), as_version=4)
    title = next(line.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                 for line in c.source.splitlines() if line.startswith("# "))
    main = _main(chapter_1)
    plain = re.sub(r"<[^>]+>", "", main).replace("¶", "").replace("#", "")
    assert title.replace("`", "") in plain.replace("\n", " ") or title in main, f"title {title!r} not rendered"
    assert re.search(r"<img[^>]+src=\"[^\"]+\"", main), "chapter 1 renders no figure"


def test_chapter_1_maths_is_typeset_offline(chapter_1):
    """The maths is typeset by the local MathJax (the test machine has no network): SVG, no raw TeX left."""
    main = _main(chapter_1)
    maths = len(re.findall(r'class="math[ "]', main))
    assert maths > 0, "chapter 1 has no maths any more; move this check to a page with maths"
    assert main.count("<mjx-container") >= maths, f"MathJax typeset {main.count('<mjx-container')} of {maths} formulas"
    assert re.search(r"<mjx-container[^>]*>\s*<svg", main), "MathJax output is not SVG"
    prose = re.sub(r"<pre.*?</pre>", "", main, flags=re.S)  # code cells may legitimately show backslashes
    assert "\\(" not in prose and "\\[" not in prose, "raw TeX left in chapter 1 (MathJax did not run)"


def test_mathjax_is_the_local_pinned_copy(site):
    """Every page that loads MathJax loads the verified copy in _static/, none loads it from a CDN."""
    from facelab import assets

    _, html = site
    local = html / "_static" / book_build.MATHJAX_ASSET
    assert local.is_file() and assets.sha256_of(local) == assets.REGISTRY[book_build.MATHJAX_ASSET].sha256
    loaders = 0
    for page in html.rglob("*.html"):
        srcs = re.findall(r'<script[^>]*\bsrc="([^"]*mathjax[^"]*)"', page.read_text(encoding="utf-8"), flags=re.I)
        assert all("://" not in u and not u.startswith("//") for u in srcs), f"{page.name} loads MathJax remotely: {srcs}"
        for u in srcs:
            assert u.split("?")[0].endswith("_static/" + book_build.MATHJAX_ASSET), f"{page.name}: unexpected {u}"
            assert (page.parent / u.split("?")[0]).resolve() == local.resolve()
        loaders += len(srcs) == 1
    assert loaders > 0, "no page loads MathJax"
