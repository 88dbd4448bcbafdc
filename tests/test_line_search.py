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


def test_naive_search_keeps_going_after_an_image_that_never_flips_and_keeps_dtypes():
    """The never-flipping image first: the later ones are still searched; results as the batched search's, with
    bool ``flipped``, ``passes == forwards`` (one image per pass), and the images' float64 dtype kept."""
    x, d, thr, _, _ = toy()
    order = torch.tensor([4, 0, 1, 2, 3])
    x, d, thr = x[order].double(), d[order].double(), thr[order].double()

    def strict(images, source):  # one source per image, as the searches promise
        assert images.shape[0] == source.shape[0], (images.shape, source.shape)
        return images[:, 0, 0, 0] > thr[source]

    slow = line_search_naive(x, d, strict)
    fast = line_search(x, d, strict)
    assert slow.flipped.dtype == torch.bool and slow.flipped.tolist() == [False, True, True, True, True]
    assert slow.eps.dtype == torch.float64 and slow.images.dtype == torch.float64
    assert torch.equal(slow.images, fast.images) and torch.equal(slow.eps.isinf(), fast.eps.isinf())
    assert slow.passes == slow.forwards > 40


def _counting(thr):
    calls = {"images": 0}

    def is_flipped(images, source):
        assert images.shape[0] == source.shape[0]
        calls["images"] += images.shape[0]
        return images[:, 0, 0, 0] > thr[source]
    return is_flipped, calls


def test_iterative_fgs_defaults_counts_and_the_last_allowed_step():
    """Defaults: 32 steps, 8-bit iterates. ``forwards`` counts every image through the net: image k is seen at
    steps 0..k (flip at step k), the one that never flips 33 times (steps 0..32). A flip at exactly
    ``max_steps`` counts; one step later does not."""
    x, _, thr, is_flipped, _ = toy()
    sign_step = lambda im, src: (im[:, 0, 0, 0] > thr[src], torch.sign(_step_fn(thr)(im, src)[1]))  # noqa: E731
    r = iterative_flip(x, sign_step, is_flipped)
    assert r.steps.tolist() == [4, 1, 18, 2, 33] and r.flipped.dtype == torch.bool
    assert r.forwards == 5 + 2 + 19 + 3 + 33
    r4 = iterative_flip(x, sign_step, is_flipped, max_steps=4)
    assert r4.flipped.tolist() == [True, True, False, True, False] and r4.steps.tolist() == [4, 1, 5, 2, 5]
    assert r4.forwards == 5 + 2 + 5 + 3 + 5
    done = iterative_flip(x[:2], sign_step, is_flipped)  # every image flips before max_steps
    assert done.flipped.all() and done.steps.tolist() == [4, 1] and done.forwards == 5 + 2


def test_iterative_fgs_rounds_every_iterate_to_8_bits():
    """``discrete=True``: x is rounded first, and each iterate too, so a 0.3-grey-level component never moves and
    an off-grid start counts its steps from the rounded image."""
    x, _, thr, is_flipped, _ = toy()
    x_off = x.clone()
    x_off[:, 0, 0, 0] += 0.45 / 255  # rounds back down to x
    r = iterative_flip(x_off, _step_fn(thr), is_flipped, max_steps=32, discrete=True)
    assert r.steps[:4].tolist() == [4, 1, 18, 2]
    assert torch.equal((r.images - x)[:, 1, 1, 1], torch.zeros(5))


def test_iterative_ffa_accepts_a_flip_only_if_its_rounding_flips():
    """``discrete=False``: steps of 0.85 grey levels (pixel 0) against a threshold 3.3 levels up: the 4th iterate (3.4)
    flips but rounds to 3 (no flip), so the search goes on to the 5th (4.25, rounded 4). Starts off the 8-bit grid
    are not rounded, both images flip in the same step, and the net only ever sees images in [0, 1]."""
    x = torch.zeros(2, 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor([10.0, 20.0]) / 255
    x[0, 1, 1, 1] = 0.4 / 255  # + 0.25 levels per step: 0.4 + 5 * 0.25 = 1.65 -> 2 (rounded at the start: 1)
    x[1, 1, 1, 1] = 0.2 / 255  # 0.2 + 1.25 = 1.45 -> 1
    thr = x[:, 0, 0, 0] + 3.3 / 255
    is_flipped, calls = _counting(thr)
    seen = []

    def step(images, source):
        seen.append(images.clone())
        d = torch.zeros_like(images)
        d[:, 0, 0, 0] = 0.85
        d[:, 1, 1, 1] = 0.25
        d[:, 2, 0, 0] = -1.0  # pushes pixel (2, 0, 0) below 0: clamped
        d[:, 2, 3, 3] = 1.0
        return images[:, 0, 0, 0] > thr[source], d

    x[:, 2, 3, 3] = 254.5 / 255  # and this one above 1
    r = iterative_flip(x, step, is_flipped, step=1 / 255, max_steps=32, discrete=False)
    assert r.flipped.all() and r.steps.tolist() == [5, 5]
    assert torch.round((r.images - x)[:, 0, 0, 0] * 255).tolist() == [4.0, 4.0]
    assert is_flipped(r.images, torch.arange(2)).all()
    assert torch.round(r.images[:, 1, 1, 1] * 255).tolist() == [2.0, 1.0]
    allseen = torch.cat(seen)
    assert allseen.min() >= 0 and allseen.max() <= 1
    assert r.images[:, 2, 0, 0].eq(0).all() and r.images[:, 2, 3, 3].eq(1).all()
    # 6 steps seen (0..5) by 2 images + the rounding checks at steps 4 and 5 (2 images each)
    assert r.forwards == 2 * 6 + 2 * 2


def test_line_search_bounds_defaults_and_counts():
    """rounds = 0 (doubling only), points = 2 and doubling_chunk = 1 are valid; the defaults are 2 rounds of an
    8-point search, 4 doubling candidates per pass and 256 images per forward call; the forward count is exact."""
    x, d, thr, is_flipped, calls = toy()
    r0 = line_search(x, d, is_flipped, rounds=0)
    # doubling only: eps = the first flipping power of two (levels 4, 1, 32, 2)
    assert (r0.eps[:4] * 255).round().tolist() == [4.0, 1.0, 32.0, 2.0]
    r2 = line_search(x, d, is_flipped, points=2, doubling_chunk=1)
    assert r2.flipped.tolist() == [True, True, True, True, False]
    # chunk 4 over the 8-step grid: pass 1 = 5 images x 4, pass 2 = image 2 (flips at 32) and image 4 x 4,
    # then 2 rounds x 4 found images x 8 points
    calls["n"] = 0
    dflt = line_search(x, d, is_flipped)
    assert dflt.forwards == 5 * 4 + 2 * 4 + 2 * 4 * 8 and dflt.passes == 4 and calls["n"] == 4
    assert torch.equal(dflt.images, line_search(x, d, is_flipped, rounds=2, points=8, doubling_chunk=4).images)
    # every image flips within the first pass: the search goes straight to the rounds
    early = line_search(x[:4], d[:4], lambda im, src: im[:, 0, 0, 0] > thr[src], doubling_chunk=8)
    assert early.passes == 3 and early.flipped.all()
    # 257 candidates in one pass: two forward calls of at most 256
    big = torch.zeros(257, 3, 1, 1)
    dd = torch.ones_like(big)
    sizes = []

    def f(images, source):
        sizes.append(images.shape[0])
        return images[:, 0, 0, 0] > 0.5
    line_search(big, dd, f, rounds=0, doubling_chunk=1, eps_max=1 / 255)
    assert sizes == [256, 1]
    sizes.clear()
    line_search(big, dd, f, rounds=0, doubling_chunk=1, eps_max=1 / 255, batch_size=100)
    assert sizes == [100, 100, 57]


def test_line_search_without_rounding_stays_continuous_and_in_the_unit_box():
    """rounding=False: the found image is x + eps d clipped to [0, 1], not rounded to 8 bits."""
    x = torch.full((2, 3, 2, 2), 0.3)
    d = torch.zeros_like(x)
    d[:, 0, 0, 0] = 1.0
    x[:, 1, 0, 0], d[:, 1, 0, 0] = 0.01, -1.0    # pushed below 0: clipped
    x[:, 2, 0, 0], d[:, 2, 0, 0] = 0.999, 1.0    # pushed above 1: clipped
    thr = torch.tensor([0.3 + 10.3 / 255, 0.3 + 0.2 / 255])

    def is_flipped(images, source):
        return images[:, 0, 0, 0] > thr[source]
    r = line_search(x, d, is_flipped, rounding=False)
    want = (x + r.eps.view(-1, 1, 1, 1) * d).clamp(0, 1)
    assert torch.equal(r.images, want) and not torch.equal(r.images, quantize(r.images))
    assert r.images[0, 1, 0, 0] == 0 and r.images[0, 2, 0, 0] == 1
    assert (r.eps * 255 > torch.tensor([10.3, 0.2])).all()
    n = line_search_naive(x, d, is_flipped, rounding=False)
    assert torch.equal(n.images, r.images)


def test_line_search_rejects_bad_rounds_and_points_by_name():
    x, d, _, f, _ = toy()
    with pytest.raises(ValueError, match=r"^rounds: must be an int >= 0, got 1.5$"):
        line_search(x, d, f, rounds=1.5)
    with pytest.raises(ValueError, match=r"^points: must be an int >= 2, got 1$"):
        line_search(x, d, f, points=1)


def test_quantize_clips_then_rounds_to_8_bits():
    q = quantize(torch.tensor([-0.3, 0.0, 0.5, 1.0, 1.7, 2.5 / 255]))
    assert torch.equal(q, torch.tensor([0.0, 0.0, 128.0, 255.0, 255.0, 2.0]) / 255)  # half to even: 2.5 -> 2


# -- exact lattices in float64, passes, a flip that does not repeat (mutation survivors) -------------------------
def ramp(thr: float, dtype=torch.float64):
    """One image of zeros moved along +1 (so a candidate's pixel is its eps, exactly); flips at pixel >= thr.
    Records every candidate's eps."""
    x = torch.zeros(1, 1, 1, 1, dtype=dtype)
    seen = []

    def is_flipped(images, source):
        seen.extend(images.reshape(-1).tolist())
        return images.reshape(-1) >= thr
    return x, torch.ones_like(x), is_flipped, seen


def test_line_search_float64_candidates_lie_on_the_exact_lattice():
    """Doubling values eps_min 2^k and search points lo + (hi - lo) j / points, computed in the images' dtype
    (points = 5: fifths are not exact in float32). Flip at 2.3 / 255: doubling finds (2, 4] / 255 (first = 2, so
    lo = the grid's 2 / 255); round 1 tries 2 + 2 j / 5 (j = 1..5) -> (2, 2.4]; round 2 -> 2.32."""
    e = 1 / 255
    x, d, is_flipped, seen = ramp(2.3 * e)
    r = line_search(x, d, is_flipped, eps_min=e, eps_max=8 * e, rounds=2, points=5, rounding=False,
                    doubling_chunk=None)
    assert seen[:4] == [e, 2 * e, 4 * e, 8 * e]
    lo, hi = 2 * e, 4 * e
    tried = []
    for _ in range(2):
        pts = [lo + (hi - lo) * (j / 5) for j in range(1, 6)]
        pts_t = (torch.tensor(lo, dtype=torch.float64) + (torch.tensor(hi - lo, dtype=torch.float64)
                 * (torch.arange(1, 6, dtype=torch.float64) / 5))).tolist()
        assert pts == pytest.approx(pts_t, rel=1e-15)  # (the search computes the points as tensors)
        tried += pts_t
        j = next(i for i, p in enumerate(pts_t) if p >= 2.3 * e)
        lo, hi = (pts_t[j - 1] if j else lo), pts_t[j]
    assert seen[4:] == tried  # the two rounds' points, exactly
    assert r.eps.dtype == torch.float64 and r.eps.item() == hi and r.images.item() == hi
    assert hi == pytest.approx(2.32 * e, rel=1e-12)
    # a flip in (1, 2] / 255 (the grid's second value, first = 1): the search starts from lo = 1/255, not 0
    x1, d1, flips1, _ = ramp(1.3 * e)
    r1 = line_search(x1, d1, flips1, eps_min=e, eps_max=8 * e, rounds=2, points=5, rounding=False)
    assert r1.eps.item() == pytest.approx(1.32 * e, rel=1e-12)  # (1, 2] -> (1.2, 1.4] -> 1.32; from 0: 1.36
    x, d, is_flipped, seen = ramp(2.3 * e)
    n = line_search_naive(x, d, is_flipped, eps_min=e, eps_max=8 * e, rounds=1, points=4, rounding=False)
    assert n.eps.item() == 2.5 * e and n.images.item() == n.eps.item()  # (2, 4] -> 3 -> 2.5, in float64
    assert seen == [e, 2 * e, 4 * e, 3 * e, 2.5 * e]  # every candidate in float64


def test_line_search_passes_when_every_image_flips_early_or_none_flips():
    e = 1 / 255
    x, d, is_flipped, _ = ramp(0.5 * e)
    r = line_search(x, d, is_flipped, eps_min=e, eps_max=128 * e, rounding=False)  # chunk 4: all flip at once
    assert r.flipped.tolist() == [True] and r.passes == 1 + 2 and r.forwards == 4 + 2 * 8
    assert r.eps.item() == e / 2  # first = 0: lo = 0; round 1 hits 4/8 of (0, e]; round 2 keeps it (8/8)
    x, d, is_flipped, seen = ramp(2.0)
    r = line_search(x, d, is_flipped, eps_min=e, eps_max=128 * e)
    assert r.flipped.tolist() == [False] and r.passes == 2 and r.forwards == 8 and len(seen) == 8
    assert r.eps.item() == math.inf and torch.equal(r.images, x)


def test_line_search_keeps_the_doubling_bound_when_no_search_point_flips_again():
    """A flip check that is not repeatable (the doubling pass flips at 4/255, nothing flips afterwards):
    the search keeps hi = 4/255 and lo, in every round."""
    e = 1 / 255
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    state = {"first": True}

    def once(images, source):
        out = (images.reshape(-1) >= 3.5 * e) & state["first"]
        state["first"] = False
        return out
    r = line_search(x, torch.ones_like(x), once, eps_min=e, eps_max=8 * e, rounding=False, doubling_chunk=None)
    assert r.flipped.tolist() == [True] and r.eps.item() == 4 * e and r.images.item() == 4 * e


def test_flip_chunks_of_no_images_is_an_empty_bool_vector():
    from facelab.attacks.line_search import _flip_chunks

    def never_called(images, source):
        raise AssertionError("no images: the check must not run")
    out = _flip_chunks(never_called, torch.zeros(0, 3, 2, 2), torch.zeros(0, dtype=torch.long), 4)
    assert out.shape == (0,) and out.dtype == torch.bool
