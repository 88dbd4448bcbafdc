"""Adversarial eyeglasses: the frame mask, painting, TV / NPS, EOT poses and the attack's rules."""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelab.attacks.eyeglasses import (
    DEFAULT_PALETTE, EyeglassAttack, eyeglass_attack, glasses_mask, non_printability_score, random_pose,
    total_variation, wear_glasses,
)


def face_landmarks(size: int = 32, shift: float = 0.0) -> np.ndarray:
    """68 points of a schematic frontal face in a ``size``² image, mirror-symmetric about the centre column:
    eyes at y = 0.42·size, 0.375·size apart, jaw points 0 / 16 at the sides, nose root 27 between the eyes."""
    s = size / 32
    c = (size - 1) / 2
    p = np.zeros((68, 2))
    p[:17, 0] = c + np.linspace(-13, 13, 17) * s  # jaw, 0 = image left, 16 = image right
    p[:17, 1] = 15 * s
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    ring = np.stack([2 * np.cos(ang), 0.8 * np.sin(ang)], -1) * s
    p[36:42] = ring * [-1, 1] + [c - 6 * s, 13.5 * s]  # mirrored rings: the two eyes are mirror images
    p[42:48] = ring + [c + 6 * s, 13.5 * s]
    p[27] = (c, 12.5 * s)
    p[:, 0] += shift
    return p


class Tiny(nn.Module):
    """conv-relu-pool-linear classifier of 32x32 images into 3 classes (seeded)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return 10 * self.fc(torch.relu(nn.functional.avg_pool2d(self.conv(x), 4)).flatten(1))


# -- exact values (issue 19; first, so that a mutant fails fast) ---------------------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden" / "eyeglasses_masks.json"


def _rotated(p: np.ndarray, deg: float, centre: tuple[float, float]) -> np.ndarray:
    a = math.radians(deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (p - centre) @ rot.T + centre


def mask_cases() -> dict[str, tuple[np.ndarray, tuple[int, int], dict]]:
    """Landmarks, size and options of the golden frame masks: narrow lenses (a visible bridge over the nose root),
    defaults, a wide jaw (long arms), a tilted face on a
    non-square image, other rim/thickness options without arms, and a nose root too far from the eyes (the bridge
    then joins the rims at the eye line)."""
    far_nose = face_landmarks(64)
    far_nose[27] = (31.5, 50.0)
    wide = face_landmarks(64)
    wide[:17, 0] = np.linspace(3.0, 59.0, 17)  # a wide jaw: long temple arms (jaw points 0 and 16 at x = 3, 59)
    wide[:17, 1] = np.linspace(24.0, 34.0, 17)
    bridge = face_landmarks(96)
    bridge[27] = (47.5, 34.0)  # the nose root 6.5 px above the eye line (y = 40.5): a bridge arched above it
    return {
        "bridge_narrow_lenses_96": (bridge, (96, 96), dict(lens_width=0.6, thickness=0.08)),
        "wide_jaw_arms_64": (wide, (64, 64), {}),
        "default_64": (face_landmarks(64), (64, 64), {}),
        "tilted_72x96": (_rotated(face_landmarks(64, shift=10.0), 17.0, (40.0, 30.0)), (72, 96), {}),
        "options_80": (face_landmarks(80), (80, 80), dict(thickness=0.2, lens_width=1.1, lens_height=0.5, arms=False)),
        "far_nose_64": (far_nose, (64, 64), {}),
    }


def _pack(m: torch.Tensor) -> dict:
    a = m[0, 0].numpy().astype(bool)
    return {"shape": list(a.shape), "bits": base64.b64encode(np.packbits(a).tobytes()).decode(), "sum": int(a.sum())}


def _unpack(d: dict) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(d["bits"]), dtype=np.uint8))[:math.prod(d["shape"])]
    return torch.from_numpy(bits.reshape(d["shape"]).astype(np.float32))


def test_frame_masks_equal_the_reviewed_golden_masks():
    """Golden masks (``tests/golden/eyeglasses_masks.json``, written by ``python tests/test_attacks_eyeglasses.py
    --write-golden`` from the version whose masks were looked at in chapter 3's figures). OpenCV draws with integer
    arithmetic and the 4x area-downsample is exact, so the masks are compared pixel for pixel."""
    golden = json.loads(GOLDEN.read_text())["cases"]
    assert sorted(golden) == sorted(mask_cases())
    for name, (lm, size, kw) in mask_cases().items():
        got = glasses_mask(lm, size, **kw)
        want = _unpack(golden[name])
        diff = int((got[0, 0] != want).sum())
        assert diff == 0, f"{name}: {diff} of {want.numel()} pixels differ from the golden mask ({golden[name]['sum']} set)"


def test_mask_arguments_bounds_and_messages():
    lm = face_landmarks(32)
    assert glasses_mask(lm, (1, 40)).shape == (1, 1, 1, 40) and glasses_mask(lm, (40, 1)).shape == (1, 1, 40, 1)
    for size in ((0, 32), (32, 0), (-1, 32)):
        with pytest.raises(ValueError, match=r"^size: must be positive"):
            glasses_mask(lm, size)
    for lw, lh in ((0.0, 0.6), (1.0, 0.0)):
        with pytest.raises(ValueError, match=r"^lens_width, lens_height: must be > 0"):
            glasses_mask(lm, 32, lens_width=lw, lens_height=lh)
    close = lm.copy()
    close[42:48] = close[36:42] + [1.0, 0.0]  # eyes one pixel apart: a tiny frame, not an error
    assert glasses_mask(close, 32).shape == (1, 1, 32, 32)
    nan = lm.copy()
    nan[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^landmarks: not finite$"):
        glasses_mask(nan, 32)
    t = torch.tensor(lm, dtype=torch.float32, requires_grad=True)  # a tensor that needs grad is read too
    torch.testing.assert_close(glasses_mask(t, 32), glasses_mask(lm.astype(np.float32), 32))


def test_wear_glasses_exact_colour_and_messages():
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    m = torch.zeros(2, 1, 4, 5, dtype=torch.float64)
    m[:, :, 1, 2] = 1.0
    y = wear_glasses(x, m, (0.1, 0.2, 0.3))
    assert y.dtype == torch.float64 and y[:, :, 1, 2].tolist() == [[0.1, 0.2, 0.3]] * 2
    for bad in (torch.zeros(2, 2, 4, 5), torch.zeros(2, 1, 4, 6), torch.zeros(2, 1, 5, 5), torch.zeros(1, 4, 5)):
        with pytest.raises(ValueError, match=r"^wear_glasses: images \[B,3,H,W\] and mask \[B,1,H,W\] of the same "
                                             rf"size expected, got \(2, 3, 4, 5\) and {re.escape(str(tuple(bad.shape)))}$"):
            wear_glasses(x, bad)
    with pytest.raises(ValueError, match="wear_glasses"):
        wear_glasses(x[0], m)


def test_tv_and_nps_per_image_hand_values_with_partial_masks():
    """Two images, a frame that is part of the image: per-image values, frame pixels only, divided by the frame
    pixel count (1 here for the second image)."""
    x = torch.zeros(2, 3, 3, 3)
    x[0, 0, 0, 1] = 1.0          # image 0: as the hand case above, red at (0, 1)
    x[1, 1, 1, 0] = 0.5          # image 1: green 0.5 below (0, 0)
    m = torch.zeros(2, 1, 3, 3)
    m[0] = 1.0
    m[1, 0, 0, 0] = m[1, 0, 0, 1] = m[1, 0, 1, 0] = 1.0  # (0,0) and both its neighbours: only (0,0) is counted
    tv = total_variation(x, m)
    assert tv.shape == (2,)
    assert tv[0].item() == pytest.approx((1 + 2 ** 0.5) / 9, abs=1e-4)  # (sqrt(1e-8) at flat pixels)
    assert tv[1].item() == pytest.approx(0.5 / 3, abs=1e-4)  # sqrt(0² + 0.5²) at (0,0), over 3 frame pixels
    one = torch.zeros(2, 1, 3, 3)
    one[:, 0, 0, 0] = 1.0
    assert total_variation(x, one)[1].item() == pytest.approx(0.0, abs=1e-3)
    pal = [(0.0, 0.0, 0.0)]  # one colour: NPS = mean distance to black over the frame
    nps = non_printability_score(x, one, pal)
    assert nps.shape == (2,) and nps.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    two = torch.zeros(2, 1, 3, 3)
    two[:, 0, 1, 0] = 1.0
    two[:, 0, 2, 2] = 1.0
    assert non_printability_score(x, two, pal).tolist() == pytest.approx([0.0, 0.25], abs=1e-5)
    with pytest.raises(ValueError, match="palette"):
        non_printability_score(x, two, torch.zeros(0, 3))


def _pose_reference(x, n, seed, rotate, scale, shift, brightness):
    """The documented pose: r ~ U(-1, 1)^5 per sample, rotation r0·rotate degrees, scale 1 + r1·scale, shift
    (r2, r3)·shift of the side (2·shift in grid units), brightness × (1 + r4·brightness), border pixels repeated."""
    b = x.shape[0]
    r = torch.rand((n * b, 5), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    out = []
    for k in range(n * b):
        a, s = math.radians(float(r[k, 0]) * rotate), 1 + float(r[k, 1]) * scale
        theta = torch.tensor([[math.cos(a) / s, -math.sin(a) / s, float(r[k, 2]) * 2 * shift],
                              [math.sin(a) / s, math.cos(a) / s, float(r[k, 3]) * 2 * shift]])[None]
        xi = x[k % b][None]
        grid = F.affine_grid(theta, list(xi.shape), align_corners=False)
        o = F.grid_sample(xi, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out.append((o * (1 + float(r[k, 4]) * brightness)).clamp(0, 1))
    return torch.cat(out)


def test_random_pose_equals_the_documented_transform_and_defaults():
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(5)) * 0.2 + 0.8  # bright: clamping at 1
    x[:, :, :, :3] = 0.0  # a dark border column: the border mode repeats it
    for kw in (dict(rotate=5.0, scale=0.05, shift=0.03, brightness=0.1), dict(rotate=20.0, scale=0.3, shift=0.2,
                                                                             brightness=0.5)):
        got = random_pose(x, 3, torch.Generator().manual_seed(2), **kw)
        torch.testing.assert_close(got, _pose_reference(x, 3, 2, **kw), atol=1e-5, rtol=0)
    dflt = random_pose(x, 2, torch.Generator().manual_seed(4))
    torch.testing.assert_close(dflt, _pose_reference(x, 2, 4, 5.0, 0.05, 0.03, 0.1), atol=1e-5, rtol=0)
    assert random_pose(x, 1, torch.Generator().manual_seed(0)).shape == (2, 3, 12, 16)  # n = 1 is allowed


def _const_model(logits):
    class Const(nn.Module):
        def forward(self, x):
            return torch.as_tensor(logits, dtype=x.dtype).expand(x.shape[0], -1) + 0 * x.mean((1, 2, 3))[:, None]
    return Const()


def test_attack_defaults_batch_mask_and_a_single_image_at_a_time():
    """Defaults: 100 steps, no NPS; a mask of batch 1 serves every image; attacking a batch equals attacking
    each image alone (the softmax is over classes, not over the batch); EOT averages over each image's poses."""
    model, x, m, y = _setup()
    t = (y + 1) % 3
    x3, y3, t3 = torch.cat([x, x[:1]]), torch.cat([y, y[:1]]), torch.cat([t, t[:1]])
    adv, steps = eyeglass_attack(model, x3, y3, m[:1], t3, alpha=1 / 255, stop_confidence=None, return_steps=True)
    assert steps.tolist() == [100, 100, 100] and steps.dtype == torch.long
    expl = eyeglass_attack(model, x3, y3, m[:1], t3, steps=100, alpha=1 / 255, stop_confidence=None, nps_weight=0.0)
    assert torch.equal(adv, expl)
    for i in range(2):
        alone = eyeglass_attack(model, x[i:i + 1], y[i:i + 1], m[:1], t[i:i + 1], steps=6, alpha=0.02,
                                stop_confidence=None)
        both = eyeglass_attack(model, x, y, m, t, steps=6, alpha=0.02, stop_confidence=None)
        torch.testing.assert_close(both[i:i + 1], alone, atol=1e-6, rtol=0)
    # EOT with 3 poses of 2 images: the objective is averaged over the poses of each image ([3, 2] -> [2])
    eot, steps = eyeglass_attack(model, x, y, m, t, steps=2, alpha=0.02, stop_confidence=None, eot_samples=3,
                                 generator=torch.Generator().manual_seed(0), return_steps=True)
    assert steps.tolist() == [2, 2] and torch.equal(eot[~m.expand_as(x).bool()], x[~m.expand_as(x).bool()])


def test_attack_stop_rule_ties_and_dodging_direction():
    """Impersonation stops at p_target >= c (a tie at exactly c stops at once); dodging stops at p_true <= 1 - c
    only, so a confident true class keeps being attacked."""
    model, x, m, y = _setup()
    t = (y + 1) % 3
    x0 = wear_glasses(x, m)
    p_t = torch.softmax(model(x0), -1).gather(1, t[:, None])[:, 0]
    c = float(p_t[0])
    adv, steps = eyeglass_attack(model, x[:1], y[:1], m[:1], t[:1], steps=5, alpha=0.05, stop_confidence=c,
                                 return_steps=True)
    assert steps.tolist() == [0] and torch.equal(adv, x0[:1])
    p_y = torch.softmax(model(x0), -1).gather(1, y[:, None])[:, 0]
    c = 1 - float(p_y[0])
    adv, steps = eyeglass_attack(model, x[:1], y[:1], m[:1], None, steps=5, alpha=0.05, stop_confidence=c,
                                 return_steps=True)
    assert steps.tolist() == [0] and torch.equal(adv, x0[:1])
    assert float(p_y.max()) > 0.3  # the true class is not yet below 0.1: dodging at c = 0.9 must move
    adv, steps = eyeglass_attack(model, x, y, m, None, steps=3, alpha=0.05, stop_confidence=0.9, return_steps=True)
    assert steps.tolist() == [3, 3] and not torch.equal(adv, x0)
    assert eyeglass_attack(model, x, y, m, t, steps=0, stop_confidence=1.0).shape == x.shape  # c = 1 allowed
    with pytest.raises(ValueError, match=r"^stop_confidence: must be in \(0, 1\] or None, got 0"):
        eyeglass_attack(model, x, y, m, t, stop_confidence=0.0)
    with pytest.raises(ValueError, match=r"^images: expected \[B,3,H,W\], got \(2, 1, 32, 32\)$"):
        eyeglass_attack(model, x[:, :1], y, m, t)


def test_attack_init_colour_and_nps_pull_towards_the_given_palette():
    """With a classifier that ignores the image, only the NPS term moves the frame: towards the given palette
    colour (here magenta-ish, from a gray start), and the default palette (which holds gray) would not move it."""
    model = _const_model([0.0, 1.0, 2.0])
    _, x, m, y = _setup()
    gray = (0.5, 0.5, 0.5)
    z = eyeglass_attack(model, x, y, m, None, steps=0, init_color=gray)
    assert torch.equal(z, wear_glasses(x, m, gray))
    pal = [(0.9, 0.1, 0.9)]
    adv = eyeglass_attack(model, x, y, m, None, steps=3, alpha=0.05, stop_confidence=None, init_color=gray,
                          nps_weight=1.0, palette=pal)
    inside = m[:, 0].bool()
    r, g, b = (adv[:, k][inside] for k in range(3))
    assert torch.allclose(r, torch.full_like(r, 0.65)) and torch.allclose(g, torch.full_like(g, 0.35))
    assert torch.allclose(b, torch.full_like(b, 0.65))
    assert (non_printability_score(adv, m, pal) < non_printability_score(z, m, pal)).all()



# -- behaviour ---------------------------------------------------------------------------------------------

def test_mask_is_a_frame_around_the_eyes():
    m = glasses_mask(face_landmarks(64), 64)
    assert m.shape == (1, 1, 64, 64) and set(m.unique().tolist()) == {0.0, 1.0}
    # the pupils and the forehead/mouth are not covered; the rim below each eye and the bridge are
    assert m[0, 0, 27, 20] == 0 and m[0, 0, 27, 44] == 0 and m[0, 0, 5, 32] == 0 and m[0, 0, 55, 32] == 0
    assert m[0, 0, 22:35, 32].sum() > 0  # bridge crosses the nose column
    assert 0.03 < float(m.mean()) < 0.3
    # a symmetric face gives a (nearly) mirror-symmetric frame
    assert float((m - m.flip(-1)).abs().mean()) < 0.02
    # moving the face moves the frame
    m2 = glasses_mask(face_landmarks(64, shift=6.0), 64)
    assert torch.equal(m2[..., 6:], m[..., :-6]) or float((m2[..., 6:] - m[..., :-6]).abs().mean()) < 0.01


def test_mask_batches_and_rejects_bad_landmarks():
    b = np.stack([face_landmarks(32), face_landmarks(32, 2.0)])
    assert glasses_mask(b, (32, 40)).shape == (2, 1, 32, 40)
    with pytest.raises(ValueError, match="landmarks: expected"):
        glasses_mask(np.zeros((5, 2)), 32)
    bad = face_landmarks(32)
    bad[42:48] = bad[36:42]
    with pytest.raises(ValueError, match="eyes coincide"):
        glasses_mask(bad, 32)
    with pytest.raises(ValueError, match="thickness"):
        glasses_mask(face_landmarks(32), 32, thickness=0)


def test_wear_glasses_paints_only_the_frame():
    x = torch.rand(2, 3, 32, 32)
    m = glasses_mask(np.stack([face_landmarks()] * 2), 32)
    y = wear_glasses(x, m)
    inside = m.expand_as(x).bool()
    assert torch.equal(y[~inside], x[~inside])
    assert torch.equal(y[:, 0][m[:, 0].bool()], torch.ones(int(m.sum()))) and float(y[:, 2][m[:, 0].bool()].max()) == 0
    with pytest.raises(ValueError, match="color"):
        wear_glasses(x, m, (1.0, 2.0, 0.0))


def test_total_variation_hand_value_and_zero_on_flat_frame():
    m = torch.ones(1, 1, 3, 3)
    x = torch.zeros(1, 3, 3, 3)
    assert float(total_variation(x, m)) < 1e-3
    x[0, 0, 0, 1] = 1.0  # one red pixel right of the top-left one
    # pixels (i,j) with both neighbours in the mask: (0,0),(0,1),(1,0),(1,1) -> only (0,0): dx = 1, and (0,1): dx=-1... 
    # (0,0): dx=x[0,1]-x[0,0]=1, dy=0 -> 1 ; (0,1): dx=x[0,2]-x[0,1]=-1, dy=x[1,1]-x[0,1]=-1 -> sqrt(2); others 0
    expected = (1 + 2 ** 0.5) / 9
    assert abs(float(total_variation(x, m)) - expected) < 1e-3


def test_nps_zero_on_palette_colours_and_hand_value():
    m = torch.ones(1, 1, 1, 2)
    c = DEFAULT_PALETTE[4]
    x = torch.tensor(c).view(1, 3, 1, 1).expand(1, 3, 1, 2).clone()
    assert float(non_printability_score(x, m)) < 1e-5
    pal = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
    x = torch.full((1, 3, 1, 2), 0.5)
    # each pixel: |0.5 - 0| * |0.5 - 1| over 3 channels = sqrt(0.75) * sqrt(0.75) = 0.75
    assert abs(float(non_printability_score(x, m, pal)) - 0.75) < 1e-5
    with pytest.raises(ValueError, match="palette"):
        non_printability_score(x, m, [(0.0, 0.0)])


def test_random_pose_with_zero_ranges_is_the_identity_and_seeded():
    x = torch.rand(2, 3, 16, 16)
    y = random_pose(x, 3, torch.Generator().manual_seed(0), rotate=0, scale=0, shift=0, brightness=0)
    assert y.shape == (6, 3, 16, 16) and torch.allclose(y, x.repeat(3, 1, 1, 1), atol=1e-5)
    a = random_pose(x, 2, torch.Generator().manual_seed(1))
    b = random_pose(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, x.repeat(2, 1, 1, 1), atol=1e-3)
    with pytest.raises(ValueError, match="n: must be"):
        random_pose(x, 0)


def _setup():
    model = Tiny().eval().requires_grad_(False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    m = glasses_mask(np.stack([face_landmarks()] * 2), 32)
    y = model(x).argmax(-1)
    return model, x, m, y


def test_attack_changes_only_the_frame_and_zero_steps_is_yellow():
    model, x, m, y = _setup()
    t = (y + 1) % 3
    adv = eyeglass_attack(model, x, y, m, t, steps=5, alpha=0.1, stop_confidence=None)
    outside = ~m.expand_as(x).bool()
    assert torch.equal(adv[outside], x[outside])
    assert not torch.equal(adv, wear_glasses(x, m))  # it moved inside the frame
    assert torch.equal(eyeglass_attack(model, x, y, m, t, steps=0), wear_glasses(x, m))
    kept = eyeglass_attack(model, adv, y, m, t, steps=0, init_color=None)
    assert torch.equal(kept, adv)  # init_color=None continues from the glasses it is given


def test_attack_reaches_the_target_and_stops_at_the_threshold():
    model, x, m, y = _setup()
    t = (y + 1) % 3
    p0 = torch.softmax(model(wear_glasses(x, m)), -1).gather(1, t[:, None])[:, 0]
    thr = float(p0.max()) + 0.1
    adv, steps = eyeglass_attack(model, x, y, m, t, steps=60, alpha=0.02, stop_confidence=thr, return_steps=True)
    p = torch.softmax(model(adv), -1).gather(1, t[:, None])[:, 0]
    assert bool((p >= thr).all())
    assert bool((steps < 60).all()) and bool((steps >= 1).all())
    # one step fewer would not have reached it: the image stopped at the first step that crossed the threshold
    adv_less = eyeglass_attack(model, x, y, m, t, steps=int(steps.max()) - 1, alpha=0.02, stop_confidence=thr)
    p_less = torch.softmax(model(adv_less), -1).gather(1, t[:, None])[:, 0]
    assert bool((p_less < thr).any())


def test_dodging_lowers_the_true_class():
    model, x, m, y = _setup()
    p0 = torch.softmax(model(wear_glasses(x, m)), -1).gather(1, y[:, None])[:, 0]
    adv = eyeglass_attack(model, x, y, m, None, steps=20, alpha=0.05, stop_confidence=None)
    p = torch.softmax(model(adv), -1).gather(1, y[:, None])[:, 0]
    assert bool((p < p0).all())


def test_tv_and_nps_terms_and_eot_run_and_change_the_result():
    model, x, m, y = _setup()
    t = (y + 1) % 3
    plain = eyeglass_attack(model, x, y, m, t, steps=4, alpha=0.05, stop_confidence=None)
    tv = eyeglass_attack(model, x, y, m, t, steps=4, alpha=0.05, stop_confidence=None, tv_weight=100.0)
    nps = eyeglass_attack(model, x, y, m, t, steps=4, alpha=0.05, stop_confidence=None, nps_weight=100.0)
    assert not torch.equal(plain, tv) and not torch.equal(plain, nps)
    assert float(total_variation(tv, m).mean()) < float(total_variation(plain, m).mean())
    e1 = eyeglass_attack(model, x, y, m, t, steps=3, alpha=0.05, stop_confidence=None, eot_samples=2,
                         generator=torch.Generator().manual_seed(0))
    e2 = eyeglass_attack(model, x, y, m, t, steps=3, alpha=0.05, stop_confidence=None, eot_samples=2,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(e1, e2)
    wrapped = EyeglassAttack(model, steps=4, alpha=0.05, stop_confidence=None)(x, y, m, t)
    assert torch.equal(wrapped, plain)


def test_attack_rejects_bad_arguments():
    model, x, m, y = _setup()
    with pytest.raises(ValueError, match="targets: expected 2"):
        eyeglass_attack(model, x, y, m, torch.tensor([0]))
    with pytest.raises(ValueError, match="labels: expected 2"):
        eyeglass_attack(model, x, y[:1], m)
    with pytest.raises(ValueError, match="mask: expected"):
        eyeglass_attack(model, x, y, m[:, :, :16])
    with pytest.raises(ValueError, match="stop_confidence"):
        eyeglass_attack(model, x, y, m, stop_confidence=1.5)
    with pytest.raises(ValueError, match="tv_weight"):
        eyeglass_attack(model, x, y, m, tv_weight=-1)
    with pytest.raises(ValueError, match="eot_samples"):
        eyeglass_attack(model, x, y, m, eot_samples=-1)



# -- the objective, term by term (mutation survivors) ----------------------------------------------------------
def _reference_attack(model, x, y, m, t, steps, alpha, tv_weight=0.0, nps_weight=0.0, palette=DEFAULT_PALETTE,
                      eot_samples=0, eot_kwargs=None, seed=0):
    """The documented objective written out: sign·log p_cls (averaged over the EOT poses of each image), minus
    tv_weight·TV and nps_weight·NPS, ascended by I-FGSM inside the frame (eps = 1) from the yellow frame."""
    from facelab.attacks.fgsm import ifgsm
    b = x.shape[0]
    mm = m.expand(b, -1, -1, -1)
    cls, sign = (t, 1.0) if t is not None else (y, -1.0)
    g = torch.Generator().manual_seed(seed)

    def loss(z):
        if eot_samples:
            zs = random_pose(z, eot_samples, g, **(eot_kwargs or {}))
            logp = torch.log_softmax(model(zs), 1)[torch.arange(eot_samples * b), cls.repeat(eot_samples)]
            obj = sign * logp.reshape(eot_samples, b).mean(0)
        else:
            obj = sign * torch.log_softmax(model(z), 1)[torch.arange(b), cls]
        return obj - tv_weight * total_variation(z, mm) - nps_weight * non_printability_score(z, mm, palette)

    return ifgsm(wear_glasses(x, mm), loss, eps=1.0, steps=steps, alpha=alpha, mask=mm)


@pytest.mark.parametrize("targeted", [True, False])
def test_attack_equals_the_documented_objective_with_tv_nps_and_eot(targeted):
    """The classification term's weight (±1) against TV and NPS, the softmax over classes (not over the batch or
    the poses), the mean over the poses of each image and the EOT options reaching random_pose."""
    model, x, m, y = _setup()
    t = (y + 1) % 3 if targeted else None
    kw = dict(steps=3, alpha=0.03, tv_weight=0.02, nps_weight=0.002)
    got = eyeglass_attack(model, x, y, m, t, stop_confidence=None, **kw)
    want = _reference_attack(model, x, y, m, t, **kw)
    assert torch.allclose(got, want, atol=1e-6), "objective without EOT"
    for w in (dict(tv_weight=0.0), dict(tv_weight=0.04), dict(nps_weight=0.0)):  # the terms' balance matters
        assert not torch.allclose(_reference_attack(model, x, y, m, t, **{**kw, **w}), want, atol=1e-6), w
    ekw = dict(rotate=20.0, brightness=0.3)
    got = eyeglass_attack(model, x, y, m, t, stop_confidence=None, eot_samples=3, eot_kwargs=ekw,
                          generator=torch.Generator().manual_seed(5), **kw)
    want = _reference_attack(model, x, y, m, t, eot_samples=3, eot_kwargs=ekw, seed=5, **kw)
    assert torch.allclose(got, want, atol=1e-6), "objective with EOT"
    assert not torch.allclose(_reference_attack(model, x, y, m, t, eot_samples=3, seed=5, **kw), want, atol=1e-6)


def test_attack_mask_shapes_stop_bound_and_messages():
    model, x, m, y = _setup()
    x3, y3 = torch.cat([x, x[:1]]), torch.cat([y, y[:1]])
    one = eyeglass_attack(model, x3, y3, m[:1], None, steps=1, alpha=0.05, stop_confidence=None)  # batch-1 mask
    assert torch.equal(one, eyeglass_attack(model, x3, y3, m[:1].expand(3, -1, -1, -1), None, steps=1, alpha=0.05,
                                            stop_confidence=None))
    bad = {"batch 2 for 3 images": (x3, y3, m),
           "two channels": (x, y, m.expand(-1, 2, -1, -1)),
           "five dims": (x, y, m[:1, None])}
    for why, (xi, yi, mi) in bad.items():
        with pytest.raises(ValueError, match=rf"^mask: expected \[B,1,H,W\] matching the images, got "
                                             rf"{re.escape(str(tuple(mi.shape)))}$"):
            eyeglass_attack(model, xi, yi, mi)
    with pytest.raises(ValueError, match=r"^images: expected \[B,3,H,W\], got \(1, 3, 32\)$"):
        eyeglass_attack(model, x[:1, :, 0], y[:1], m[:1])
    with pytest.raises(ValueError, match=r"^stop_confidence: must be in \(0, 1\] or None, got 1.0001$"):
        eyeglass_attack(model, x, y, m, stop_confidence=1.0001)
    # stop_confidence = 1: impersonation stops only at p_target = 1 exactly
    t = (y + 1) % 3
    _, steps = eyeglass_attack(model, x, y, m, t, steps=2, alpha=0.01, stop_confidence=1.0, return_steps=True)
    assert steps.tolist() == [2, 2]


def test_nps_and_tv_palette_dtype_and_pixel_count_rules():
    x = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 3, 4).clone()
    mask = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    mask[0, 0, 1, 2] = 1  # one frame pixel: NPS is that pixel's distance, divided by 1 (not by 2)
    pal = [(0.1, 0.3, 0.7)]  # one colour is a valid palette
    got = non_printability_score(x, mask, pal)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(math.sqrt(0.1 ** 2 + 0.1 ** 2 + 0.1 ** 2 + 1e-12), rel=1e-12)
    assert non_printability_score(x.float(), mask, pal).dtype == torch.float32  # the mask takes the images' dtype
    assert total_variation(x.float(), mask).dtype == torch.float32
    with pytest.raises(ValueError, match=r"^palette: expected \[P,3\] RGB colours, got shape \(0, 3\)$"):
        non_printability_score(x, mask, torch.zeros(0, 3))
    # TV over a 1 x 4 frame strip of a ramp: (W - 1) inner pixels with both neighbours... none below: TV 0
    ramp = torch.linspace(0, 0.3, 4, dtype=torch.float64).view(1, 1, 1, 4).expand(1, 3, 3, 4).clone()
    full = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    # every 2x2 block: dx = 0.1 in 3 channels, dy = 0: sqrt(3 * 0.01 + 1e-8) per pixel of the 2 x 3 interior
    want = 6 * math.sqrt(3 * 0.01 + 1e-8) / 12
    assert total_variation(ramp, full).item() == pytest.approx(want, rel=1e-12)
    assert total_variation(ramp.transpose(-1, -2).contiguous(), full.transpose(-1, -2)).item() == pytest.approx(
        want, rel=1e-12)  # the same ramp down the columns: dy


def test_mask_dtype_landmark_dtype_and_the_thinnest_rim():
    lm = face_landmarks(64)
    m64 = glasses_mask(lm, 64)
    assert m64.dtype == torch.float32
    m32 = glasses_mask(torch.tensor(lm, dtype=torch.float32), 64)
    assert m32.dtype == torch.float32
    from facelab.attacks.eyeglasses import _landmarks
    assert _landmarks(torch.tensor(lm, dtype=torch.float32)).dtype == np.float64
    assert _landmarks(lm.astype(np.float32).tolist()).dtype == np.float64
    d = 24.0  # the schematic face's eye distance at 64 px
    thin = glasses_mask(lm, 64, thickness=1e-6, arms=False)       # round(t d 4) = 0 -> 1 px at 4x
    two = glasses_mask(lm, 64, thickness=1.6 / (4 * d), arms=False)  # round(1.6 ... ) = 2 px at 4x
    one = glasses_mask(lm, 64, thickness=1.2 / (4 * d), arms=False)  # round(1.2 ...) = 1 px at 4x
    assert torch.equal(thin, one) and not torch.equal(thin, two)
    assert thin.sum() < two.sum()  # a 1 px rim at 4x hardly survives the half-cover threshold; 2 px do


def test_wear_glasses_bool_mask_and_random_pose_dtype_and_range():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    m = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    m[..., 4:6, 2:14] = True
    worn = wear_glasses(x, m, (0.0, 1.0, 0.0))
    assert torch.equal(worn, wear_glasses(x, m.float(), (0.0, 1.0, 0.0)))
    assert worn[:, 1][m[:, 0].expand(2, -1, -1)].eq(1).all()
    x64 = x.double()
    poses = random_pose(x64, 3, torch.Generator().manual_seed(0))
    assert poses.dtype == torch.float64 and poses.shape == (6, 3, 16, 16)
    # brightness above 1 can draw a negative factor: the poses are still clipped to [0, 1]
    dark = random_pose(x, 8, torch.Generator().manual_seed(0), brightness=2.0)
    assert dark.min() == 0 and dark.max() <= 1


def test_attack_stop_ties_exactly_and_float64():
    """A classifier with equal logits: p = 1/2 exactly. Impersonation stops at p_target >= c, dodging at
    p_true <= 1 - c: with c = 1/2 both hold with equality, so neither takes a step."""
    _, x, m, y = _setup()
    half = _const_model([0.0, 0.0])
    y2, t2 = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    for t in (t2, None):
        _, steps = eyeglass_attack(half, x, y2, m, t, steps=3, alpha=0.05, stop_confidence=0.5, return_steps=True)
        assert steps.tolist() == [0, 0], t
    model = Tiny().double().eval().requires_grad_(False)
    x64 = x.double()
    adv = eyeglass_attack(model, x64, y, m, (y + 1) % 3, steps=2, alpha=0.05, stop_confidence=None)
    assert adv.dtype == torch.float64 and not torch.equal(adv, wear_glasses(x64, m))


def test_mask_bridge_at_exactly_half_the_eye_distance():
    """The bridge arches over the nose root only when it is closer than d/2 to the eye line's midpoint; at exactly
    d/2 (here 12 px, every number exact) the bridge stays on the eye line."""
    p = face_landmarks(64)
    p[36:42], p[42:48] = (20.0, 30.0), (44.0, 30.0)  # eye centres exactly 24 px apart, midpoint (32, 30)
    masks = {}
    for name, y in (("tie", 18.0), ("far", 17.5), ("near", 18.5)):
        q = p.copy()
        q[27] = (32.0, y)
        masks[name] = glasses_mask(q, 64, arms=False)
    assert torch.equal(masks["tie"], masks["far"]) and not torch.equal(masks["tie"], masks["near"])

if __name__ == "__main__" and "--write-golden" in sys.argv:
    GOLDEN.write_text(json.dumps({"produced_by": "python tests/test_attacks_eyeglasses.py --write-golden",
                                  "cases": {k: _pack(glasses_mask(lm, size, **kw))
                                            for k, (lm, size, kw) in mask_cases().items()}}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
