"""face-api face-analysis nets (face_recognition, age_gender, expression, landmarks68) and face-api's crop.

Golden tests compare with tests/golden/faceapi_reference.json, written by tools/faceapi_reference (the
original @vladmandic/face-api 1.7.15 run in node on the Pillow-decoded demo photos, SSD boxes as input).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab import assets
from facelab.models import MODELS, load
from facelab.models.expression import LABELS
from facelab.models.faceapi_crop import clip_box, crop_face, pad_to_square, to_net_input

GOLDEN = Path(__file__).parent / "golden" / "faceapi_reference.json"
NETS = ["face_recognition", "age_gender", "expression", "landmarks68"]
PHOTOS = [f"sample{i}" for i in range(1, 7)]

# tolerances of the task: descriptor max abs, age years, probabilities, landmark pixels
TOL_DESC, TOL_AGE, TOL_PROB, TOL_LM = 1e-4, 0.01, 1e-4, 0.05


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {name: load(name) for name in NETS}


def _golden() -> dict:
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} missing: run tools/faceapi_reference (node) to create it")
    ref = json.loads(GOLDEN.read_text())
    if not ref.get("complete"):
        pytest.skip(f"{GOLDEN} is incomplete (per-face fields not written yet)")
    return ref


def _photo(name: str) -> tuple[torch.Tensor, str]:
    """Demo photo decoded with Pillow as the reference tool does: RGB uint8 -> float /255 [3,H,W]; + sha256."""
    from PIL import Image

    with Image.open(assets.path(f"face-api/demo/{name}.jpg")) as im:
        rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, hashlib.sha256(rgb.tobytes()).hexdigest()


# ----------------------------------------------------------------------------- golden (original JS)


@pytest.mark.parametrize("photo", PHOTOS)
def test_golden_against_faceapi(nets, photo):
    ref = _golden()
    entry = ref["photos"][photo]
    image, sha = _photo(photo)
    assert sha == entry["sha256"], f"{photo}: Pillow decodes different pixels than the reference saw"
    assert list(image.shape[1:]) == entry["shape"][:2]
    faces = entry["faces"]
    assert len(faces) == len(entry["ssd"]) and len(faces) > 0
    labels = ref["expression_labels"]
    assert tuple(labels) == LABELS
    with torch.no_grad():
        for k, (det, face) in enumerate(zip(entry["ssd"], faces)):
            box = det["box"]
            where = f"{photo} face {k} box {box}"
            if face.get("empty_crop"):
                with pytest.raises(ValueError, match="empty crop"):
                    clip_box(box, image.shape[2], image.shape[1])
                continue
            assert list(clip_box(box, image.shape[2], image.shape[1])) == face["crop_box"], where
            desc = nets["face_recognition"].describe(image, box)
            err = (desc - torch.tensor(face["descriptor"])).abs().max().item()
            assert err <= TOL_DESC, f"{where}: descriptor max abs error {err:.3g}"
            age, p_male = nets["age_gender"].predict(image, box)
            assert abs(age - face["age"]) <= TOL_AGE, f"{where}: age {age} vs {face['age']}"
            ref_male = face["genderProbability"] if face["gender"] == "male" else 1 - face["genderProbability"]
            assert abs(p_male - ref_male) <= TOL_PROB, f"{where}: p_male {p_male} vs {ref_male}"
            assert ("male" if p_male > 0.5 else "female") == face["gender"], where
            expr = nets["expression"].predict(image, box)
            err = (expr - torch.tensor(face["expressions"])).abs().max().item()
            assert err <= TOL_PROB, f"{where}: expression max abs error {err:.3g}"
            lm = nets["landmarks68"].predict(image, box)
            err = (lm - torch.tensor(face["landmarks"])).abs().max().item()
            assert err <= TOL_LM, f"{where}: landmarks max abs error {err:.3g} px"


# ----------------------------------------------------------------------------- crop / input pipeline


def test_registry_builders_eval_and_frozen(nets):
    for name in NETS:
        assert name in MODELS
        m = nets[name]
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())


def test_clip_box_matches_faceapi_rules():
    # floor of x, y, w, h separately (w = right - x); not floor(x2) - floor(x1)
    assert clip_box([10.7, 20.2, 31.3, 40.1], 100, 100) == (10, 20, 20, 19)
    # clipped at the left/top: x = max(x1, 0), w = right - x
    assert clip_box([-3.2, -1.5, 17.3, 10.0], 100, 100) == (0, 0, 17, 10)
    # clipped at the right/bottom: w = W - x
    assert clip_box([90.5, 95.2, 130.0, 140.0], 100, 100) == (90, 95, 9, 4)
    for bad in ([120, 10, 150, 50], [10, 10, 10, 50], [10, 10, 5, 50], [0, 0, 0.5, 10]):
        with pytest.raises(ValueError, match="empty crop"):
            clip_box(bad, 100, 100)
    with pytest.raises(ValueError, match="4 finite"):
        clip_box([1, 2, 3], 100, 100)
    with pytest.raises(ValueError, match="4 finite"):
        clip_box([0, 0, math.nan, 4], 100, 100)


def test_pad_to_square_centred_js_round():
    x = torch.ones(1, 3, 4, 7)  # diff 3: round(1.5) = 2 rows after, 1 before
    y = pad_to_square(x)
    assert y.shape[-2:] == (7, 7)
    assert y[0, 0, :, 0].tolist() == [0, 1, 1, 1, 1, 0, 0]
    x = torch.ones(1, 3, 9, 4)  # diff 5: 3 columns after, 2 before
    y = pad_to_square(x)
    assert y[0, 0, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]
    assert pad_to_square(torch.ones(1, 3, 5, 5)).shape[-2:] == (5, 5)


def test_to_net_input_legacy_resize_and_normalisation():
    torch.manual_seed(1)
    crop = torch.rand(1, 3, 224, 224)
    x, dims = to_net_input(crop, 112)
    assert dims == [(224, 224)]
    # legacy resize with an exact factor 2 picks every second pixel (src = dst * 2)
    mean = torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)
    expect = (crop[:, :, ::2, ::2] * 255 - mean) / 255
    assert torch.allclose(x, expect, atol=1e-5)


def test_crop_face_is_a_view_with_faceapi_box():
    image = torch.rand(3, 50, 60)
    crop, (x, y, w, h) = crop_face(image, [10.9, 5.5, 30.2, 40.0])
    assert (x, y, w, h) == (10, 5, 19, 34)
    assert torch.equal(crop, image[:, 5:39, 10:29])


# ----------------------------------------------------------------------------- behaviour


def _face_crop() -> torch.Tensor:
    from PIL import Image

    with Image.open(assets.path("insightface/Tom_Hanks_54745.png")) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def test_batching_and_lists_match_single(nets):
    torch.manual_seed(2)
    a, b = torch.rand(3, 90, 70), torch.rand(3, 90, 70)
    c = torch.rand(3, 60, 81)
    with torch.no_grad():
        for name in NETS:
            m = nets[name]
            batch = m(torch.stack([a, b]))
            single = m(a[None])
            listed = m([a, c])
            alone_c = m(c[None])
            first = (lambda o: o[0]) if isinstance(batch, tuple) else (lambda o: o)
            assert torch.allclose(first(batch)[:1], first(single), atol=1e-5), name
            assert torch.allclose(first(listed)[:1], first(single), atol=1e-5), name
            assert torch.allclose(first(listed)[1:], first(alone_c), atol=1e-5), name


def test_outputs_are_sane_on_a_real_face(nets):
    face = _face_crop()
    h, w = face.shape[1:]
    with torch.no_grad():
        desc = nets["face_recognition"](face[None])[0]
        age, gender = nets["age_gender"](face[None])
        expr = nets["expression"](face[None])[0]
        lm = nets["landmarks68"](face[None])[0]
    assert desc.shape == (128,) and torch.isfinite(desc).all() and 0.1 < desc.norm() < 10
    assert 1 < float(age[0]) < 100
    assert torch.allclose(gender.sum(1), torch.ones(1)) and torch.allclose(expr.sum(), torch.tensor(1.0))
    assert lm.shape == (68, 2)
    inside = (lm[:, 0] > -0.1 * w) & (lm[:, 0] < 1.1 * w) & (lm[:, 1] > -0.1 * h) & (lm[:, 1] < 1.1 * h)
    assert inside.all(), "landmarks fall outside the face crop"
    # the jaw (0..16) spans left to right; eyes (36..47) lie above the mouth (48..67)
    assert lm[0, 0] < lm[16, 0] and lm[36:48, 1].mean() < lm[48:68, 1].mean()
    # a slightly shifted crop of the same face is the same person (face-api match threshold 0.6),
    # a flipped-colour image is not close
    with torch.no_grad():
        shifted = nets["face_recognition"](face[None, :, 3:, 2:])[0]
        other = nets["face_recognition"]((1 - face)[None])[0]
    assert (desc - shifted).norm() < 0.6 < (desc - other).norm()


def test_pipeline_shifts_landmarks_by_box(nets):
    face = _face_crop()
    canvas = torch.zeros(3, face.shape[1] + 40, face.shape[2] + 70)
    canvas[:, 30 : 30 + face.shape[1], 50 : 50 + face.shape[2]] = face
    box = [50.0, 30.0, 50.0 + face.shape[2], 30.0 + face.shape[1]]
    with torch.no_grad():
        lm_img = nets["landmarks68"].predict(canvas, box)
        lm_crop = nets["landmarks68"](face[None])[0]
        desc_img = nets["face_recognition"].describe(canvas, box)
        desc_crop = nets["face_recognition"](face[None])[0]
    assert torch.allclose(lm_img, lm_crop + torch.tensor([50.0, 30.0]), atol=1e-3)
    assert torch.allclose(desc_img, desc_crop, atol=1e-6)


@pytest.mark.parametrize("name", NETS)
def test_gradient_reaches_input_pixels(nets, name):
    torch.manual_seed(3)
    image = torch.rand(3, 80, 100, requires_grad=True)
    m = nets[name]
    if name == "face_recognition":
        out = m.describe(image, [10, 5, 90, 75]).sum()
    elif name == "age_gender":
        age, gender = m(image[None, :, 5:75, 10:90])
        out = age.sum() + gender[:, 0].sum()
    elif name == "expression":
        out = m.predict(image, [10, 5, 90, 75])[1]
    else:
        out = m.predict(image, [10, 5, 90, 75]).sum()
    out.backward()
    g = image.grad
    assert g is not None and torch.isfinite(g).all()
    assert g[:, 5:75, 10:90].abs().sum() > 0
    assert g[:, :5].abs().sum() == 0 and g[:, :, :10].abs().sum() == 0  # outside the crop


@pytest.mark.parametrize("name", NETS)
def test_bad_input_errors(nets, name):
    m = nets[name]
    call = m.describe if name == "face_recognition" else m.predict
    good = torch.rand(3, 40, 40)
    with pytest.raises(ValueError, match="grayscale"):
        m(torch.rand(1, 1, 40, 40))
    with pytest.raises(ValueError, match="RGBA"):
        m(torch.rand(1, 4, 40, 40))
    with pytest.raises(TypeError, match="uint8|float"):
        m(torch.randint(0, 255, (1, 3, 40, 40), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        m(torch.rand(1, 3, 40, 40) * 255)
    with pytest.raises(ValueError, match="images\\[1\\]"):
        m([good, torch.rand(1, 40, 40)])
    with pytest.raises(ValueError, match="empty crop"):
        call(good, [50, 50, 80, 80])  # outside the image
    with pytest.raises(ValueError, match="empty crop"):
        call(good, [10, 10, 10, 30])  # zero width
    with pytest.raises(ValueError, match="grayscale"):
        call(torch.rand(1, 40, 40), [0, 0, 20, 20])


def test_module_level_shortcuts(nets):
    """The module-level shortcuts are the pretrained nets' own methods on the crop of ``box`` (values, not shapes)."""
    from facelab.models import age_gender, expression, face_recognition, landmarks68
    from facelab.models.faceapi_crop import crop_face

    torch.manual_seed(5)
    image = torch.rand(3, 60, 50)
    box = [5, 5, 45, 55]
    crop = crop_face(image, box)[0][None]
    with torch.no_grad():
        desc = face_recognition.describe(image, box)
        assert torch.allclose(desc, nets["face_recognition"](crop)[0], atol=1e-6)
        assert torch.allclose(face_recognition.describe(image, box, model=nets["face_recognition"]), desc, atol=1e-6)
        age, p = age_gender.predict(image, box)
        ref_age, ref_gender = nets["age_gender"](crop)
        assert isinstance(age, float) and age == pytest.approx(float(ref_age[0]), abs=1e-4)
        assert p == pytest.approx(float(ref_gender[0, 0]), abs=1e-6) and 0 <= p <= 1
        probs = expression.predict(image, box)
        assert torch.allclose(probs, nets["expression"](crop)[0], atol=1e-6)
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
        lm = landmarks68.predict(image, box)
        # landmarks come back in image pixels: the crop's own landmarks shifted by the box corner
        assert torch.allclose(lm, nets["landmarks68"](crop)[0] + torch.tensor([5.0, 5.0]), atol=1e-4)
        assert torch.allclose(landmarks68.predict(image, box, model=nets["landmarks68"]), lm, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(nets):
    torch.manual_seed(4)
    x = torch.rand(2, 3, 70, 60)
    for name in NETS:
        cpu = nets[name](x)
        gpu = load(name, device="cuda")(x.cuda())
        cpu, gpu = (cpu[0], gpu[0]) if isinstance(cpu, tuple) else (cpu, gpu)
        assert torch.allclose(cpu, gpu.cpu(), atol=1e-3), name
