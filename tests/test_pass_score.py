"""PASS: ECC homography alignment + SSIM; failed ECC handled and counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from facelab.metrics.pass_score import pass_score, pass_scores


def face_like(seed: int = 0, size: int = 64) -> torch.Tensor:
    """A smooth textured image (blobs), so ECC has structure to align."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.zeros(3, size, size)
    for _ in range(12):
        cx, cy, s = (torch.rand(3, generator=g) * torch.tensor([1.6, 1.6, 0.1]) + torch.tensor([-0.8, -0.8, 0.05]))
        col = torch.rand(3, 1, 1, generator=g)
        img += col * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s ** 2))
    return (img / img.max()).clamp(0, 1)


def test_identical_images_score_one():
    x = face_like()
    r = pass_score(x, x)
    assert r.score == 1.0 and r.ecc_converged


def test_alignment_forgives_a_shift_that_ssim_alone_punishes():
    x = face_like(1, 96)
    shifted = torch.nn.functional.pad(x[None, :, :, :-3], (3, 0, 0, 0), mode="replicate")[0]  # 3 px right
    r = pass_score(shifted, x)
    plain = structural_similarity(x.permute(1, 2, 0).numpy(), shifted.permute(1, 2, 0).numpy(), channel_axis=-1,
                                  data_range=1.0)
    assert r.ecc_converged
    assert r.score > 0.97 and r.score > plain + 0.02
    assert abs(abs(float(r.homography[0, 2])) - 3.0) < 0.5  # the homography found the 3-pixel shift


def test_pass_falls_with_the_perturbation_size():
    x = face_like(2)
    g = torch.Generator().manual_seed(0)
    s = torch.sign(torch.randn(x.shape, generator=g))
    scores = [pass_score((x + e / 255 * s).clamp(0, 1), x).score for e in (1, 4, 16)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_failed_ecc_is_handled_and_counted():
    flat = torch.full((3, 32, 32), 0.5)
    bumped = flat.clone()
    bumped[:, 5, 5] = 0.6
    r = pass_score(bumped, flat)  # no gradient to align on: ECC fails, scored without alignment
    assert not r.ecc_converged and np.array_equal(r.homography, np.eye(3, dtype=np.float32))
    assert 0.9 < r.score < 1.0
    x = face_like(3, 32)
    scores, failed = pass_scores(torch.stack([bumped, x]), torch.stack([flat, x]))
    assert failed.tolist() == [True, False] and scores[1] == 1.0


def test_bad_input_is_named():
    x = face_like()
    with pytest.raises(ValueError, match="adv, orig"):
        pass_score(x, x[:, :10])
    with pytest.raises(ValueError, match="adv"):
        pass_score(x[:2], x[:2])
    with pytest.raises(ValueError, match="adv, orig"):
        pass_scores(x[None], x[None, :, :10])
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        pass_score(bad, x)


def test_identical_images_give_pass_1_and_the_identity_warp_and_batch_shapes_are_checked():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    r = pass_score(x, x)
    assert r.score == 1.0 and r.ecc_converged
    assert r.homography.dtype == np.float32 and np.array_equal(r.homography, np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"^adv, orig: expected two \[B,3,H,W\] batches of one shape, got "
                                         r"\(2, 3, 8, 8\) and \(2, 3, 8, 9\)$"):
        pass_scores(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))
