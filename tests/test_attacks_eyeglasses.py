"""Adversarial eyeglasses: the frame mask, painting, TV / NPS, EOT poses and the attack's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
