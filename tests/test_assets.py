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


def test_wheel_asset_from_installed_package(isolated_home):
    # facenet-pytorch 2.5.3 is a dependency: its weights are copied from the installed wheel, verified
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
