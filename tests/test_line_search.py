"""Line search (doubling + batched search) and iterative FGS / FFA on a toy threshold model."""

from __future__ import annotations

import math

import pytest
import torch

from facelab.attacks.line_search import (doubling_grid, iterative_flip, line_search, line_search_naive, quantize)


def toy(b: int = 5, seed: int = 0):
    """Images on the 8-bit grid; the 'net' flips when the mean of pixel 0 rises above a per-image threshold."""
    g = torch.Generator().manual_seed(seed)
    x = quantize(torch.rand(b, 3, 4, 4, generator=g) * 0.5)
    d = torch.zeros_like(x)
    d[:, 0, 0, 0] = 1.0
    thr = x[:, 0, 0, 0] + torch.tensor([3.5, 0.4, 17.2, 1.0, 300.0])[:b] / 255  # the last never flips (> 128)
    calls = {"n": 0, "images": 0}

    def is_flipped(images, source):
        calls["n"] += 1
        calls["images"] += images.shape[0]
        return images[:, 0, 0, 0] > thr[source]
    return x, d, thr, is_flipped, calls


def test_doubling_grid():
    assert doubling_grid(1, 128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert doubling_grid(1, 100) == [1, 2, 4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="eps_min"):
        doubling_grid(0, 1)


def test_line_search_finds_the_smallest_flipping_grey_level():
    x, d, thr, is_flipped, calls = toy()
    r = line_search(x, d, is_flipped)
    # 8-bit rounding: eps flips once round(255 eps) >= ceil(255 margin) (margin 3.5 -> 4, 0.4 -> 1, 17.2 -> 18, 1.0 -> 2)
    levels = torch.round((r.images - x)[:4, 0, 0, 0] * 255)
    assert levels.tolist() == [4.0, 1.0, 18.0, 2.0]
    # eps is the smallest searched value whose rounding gives that level (to the search's resolution)
    assert ((r.eps[:4] * 255 > levels - 1) & (r.eps[:4] * 255 <= levels + 0.5)).all()
    assert r.flipped.tolist() == [True, True, True, True, False]
    assert math.isinf(float(r.eps[4])) and torch.equal(r.images[4], x[4])  # nothing flipped: original kept
    assert torch.equal(r.images, quantize(r.images))  # 8-bit images
    assert (is_flipped(r.images[:4], torch.arange(4))).all()
    # the change is along d only, by the found level
    diff = (r.images - x)[:4]
    assert diff.flatten(1)[:, 1:].abs().max() == 0


def test_batched_equals_naive_with_fewer_passes():
    x, d, _, f1, c1 = toy()
    fast = line_search(x, d, f1, doubling_chunk=None)
    x2, d2, _, f2, c2 = toy()
    slow = line_search_naive(x2, d2, f2)
    assert torch.equal(fast.flipped, slow.flipped)
    torch.testing.assert_close(fast.eps[:4], slow.eps[:4])
    assert torch.equal(fast.images, slow.images)
    assert c1["n"] == fast.passes == 3  # one doubling pass + 2 search rounds, for all images at once
    assert c2["n"] == slow.forwards > 40  # one call per image and step
    chunked = line_search(x, d, toy()[3])
    assert torch.equal(chunked.images, fast.images) and chunked.passes <= 4


def test_line_search_errors_name_the_parameter():
    x, d, _, f, _ = toy()
    with pytest.raises(ValueError, match="direction"):
        line_search(x, d[:, :2], f)
    with pytest.raises(ValueError, match="rounds"):
        line_search(x, d, f, rounds=-1)
    with pytest.raises(ValueError, match="points"):
        line_search(x, d, f, points=1)
    with pytest.raises(ValueError, match="points"):
        line_search_naive(x, d, f, points=6)
    with pytest.raises(ValueError, match="doubling_chunk"):
        line_search(x, d, f, doubling_chunk=0)


def _step_fn(thr, direction_scale=1.0):
    def step(images, source):
        flipped = images[:, 0, 0, 0] > thr[source]
        d = torch.zeros_like(images)
        d[:, 0, 0, 0] = direction_scale
        d[:, 1, 1, 1] = 0.3 * direction_scale  # a second, smaller component (FFA-like, continuous)
        return flipped, d
    return step


def test_iterative_fgs_takes_one_grey_level_per_step_until_the_flip():
    x, _, thr, is_flipped, _ = toy()
    r = iterative_flip(x, lambda im, src: (im[:, 0, 0, 0] > thr[src], torch.sign(_step_fn(thr)(im, src)[1])),
                       is_flipped, max_steps=32, discrete=True)
    assert r.flipped.tolist() == [True, True, True, True, False]
    assert r.steps[:4].tolist() == [4, 1, 18, 2]
    assert r.steps[4] == 33 and torch.equal(r.images[4], x[4])
    assert torch.equal(r.images, quantize(r.images))
    assert ((r.images - x).abs().flatten(1).amax(1)[:4] * 255).round().tolist() == [4, 1, 18, 2]


def test_iterative_ffa_is_continuous_and_rounded_at_the_end():
    x, _, thr, is_flipped, _ = toy()
    r = iterative_flip(x, _step_fn(thr), is_flipped, max_steps=32, discrete=False)
    assert r.flipped[:4].all() and not r.flipped[4]
    assert torch.equal(r.images, quantize(r.images))
    # the second component moved 0.3 grey levels per step: continuous during the steps, rounded at the end
    moved = (r.images - x)[:4, 1, 1, 1] * 255
    assert torch.allclose(moved, torch.round(0.3 * r.steps[:4].float()))
    assert is_flipped(r.images[:4], torch.arange(4)).all()


def test_zero_steps_change_nothing():
    x, _, thr, is_flipped, _ = toy()
    r = iterative_flip(x, _step_fn(thr), is_flipped, max_steps=0, discrete=True)
    assert torch.equal(r.images, x) and not r.flipped.any()
    with pytest.raises(ValueError, match="max_steps"):
        iterative_flip(x, _step_fn(thr), is_flipped, max_steps=-1)
    with pytest.raises(ValueError, match="step"):
        iterative_flip(x, _step_fn(thr), is_flipped, step=0.0)
