"""The smallest flipping perturbation along a direction (line search), and iterative FGS / FFA (Rozsa et al., §3.1).

* :func:`line_search` -- along a fixed direction ``d`` (FGS's sign, FFA's L-inf-unit gradient) try
  ``eps = eps_min, 2 eps_min, 4 eps_min, ...`` (doubling) until the decision flips, then search the last
  interval for the smallest flipping ``eps``. Every candidate image is rounded to 8-bit pixels. **Batched**:
  the doubling candidates of all images go through the net together, ``doubling_chunk`` per image and pass
  (images that flipped drop out of the next pass; ``None``: all in one pass), and the binary search
  is done as ``rounds`` rounds of a ``points``-ary search, each one forward pass over all images' interval
  points (``points = 8``: three bisection steps per pass). :func:`line_search_naive` is the textbook loop
  (one forward per image and step, the same lattice of ``eps`` values) that ``benchmarks/bench_line_search.py``
  and the tests compare it with.
* :func:`iterative_flip` -- steps of L-inf size ``step`` (1/255: one grey level) recomputing the direction at
  each temporary image, until the decision flips or ``max_steps``. ``discrete=True`` (iterative FGS): every
  iterate is rounded to 8-bit pixels. ``discrete=False`` (iterative FFA): iterates stay continuous; an iterate
  that flips is rounded and accepted only if the rounded image still flips (else the steps go on).

Flip checks are a callable ``is_flipped(images [N,...], source [N]) -> BoolTensor [N]`` (``source`` says which
original image each candidate belongs to), so the searches know nothing about nets or attributes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["quantize", "doubling_grid", "LineSearchResult", "IterativeResult", "line_search", "line_search_naive",
           "iterative_flip"]

FlipFn = Callable[[Tensor, Tensor], Tensor]
StepFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def quantize(x: Tensor) -> Tensor:
    """Round to 8-bit pixel values (k / 255) in [0, 1]."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def doubling_grid(eps_min: float, eps_max: float) -> list[float]:
    """``eps_min * 2^k`` for k = 0, 1, ... up to ``eps_max``."""
    if not (eps_min > 0 and eps_max >= eps_min):
        raise ValueError(f"eps_min, eps_max: need 0 < eps_min <= eps_max, got {eps_min}, {eps_max}")
    n = int(math.floor(math.log2(eps_max / eps_min) + 1e-9)) + 1
    return [eps_min * 2 ** k for k in range(n)]


@dataclasses.dataclass
class LineSearchResult:
    """``eps`` [B] (``inf`` where nothing flipped up to ``eps_max``), the adversarial images [B,...] (the original
    where nothing flipped), ``flipped`` [B] bool, and ``forwards``: images passed through the net."""

    eps: Tensor
    images: Tensor
    flipped: Tensor
    forwards: int
    passes: int


def _check(x: Tensor, direction: Tensor, rounds: int, points: int) -> None:
    if x.shape != direction.shape:
        raise ValueError(f"direction: shape {tuple(direction.shape)} differs from the images' {tuple(x.shape)}")
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds: must be an int >= 0, got {rounds!r}")
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"points: must be an int >= 2, got {points!r}")


def _candidates(x: Tensor, d: Tensor, eps: Tensor, rounding: bool) -> Tensor:
    """x [n,...], d [n,...], eps [n,k] -> [n*k,...] images."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    c = x[:, None] + eps.reshape(eps.shape[0], eps.shape[1], *shape[1:]) * d[:, None]
    c = c.reshape(-1, *x.shape[1:])
    return quantize(c) if rounding else c.clamp(0, 1)


def _flip_chunks(is_flipped: FlipFn, images: Tensor, source: Tensor, batch_size: int) -> Tensor:
    outs = [is_flipped(images[i:i + batch_size], source[i:i + batch_size]).reshape(-1).bool()
            for i in range(0, images.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.bool, device=images.device)


def _first_true(m: Tensor) -> tuple[Tensor, Tensor]:
    """(any [n], index of the first True per row [n], 0 where none)."""
    any_ = m.any(1)
    first = torch.where(any_, m.float().argmax(1), torch.zeros_like(any_, dtype=torch.long))
    return any_, first


def line_search(x: Tensor, direction: Tensor, is_flipped: FlipFn, *, eps_min: float = 1 / 255,
                eps_max: float = 128 / 255, rounds: int = 2, points: int = 8, rounding: bool = True,
                batch_size: int = 256, doubling_chunk: int | None = 4) -> LineSearchResult:
    """Doubling then ``points``-ary search for the smallest ``eps`` with ``is_flipped(x + eps d)`` (see module)."""
    _check(x, direction, rounds, points)
    x, d = x.detach(), direction.detach()
    b, dev = x.shape[0], x.device
    grid = torch.tensor(doubling_grid(eps_min, eps_max), dtype=x.dtype, device=dev)
    k = grid.numel()
    chunk = k if doubling_chunk is None else int(doubling_chunk)
    if chunk < 1:
        raise ValueError(f"doubling_chunk: must be >= 1 or None, got {doubling_chunk!r}")
    found = torch.zeros(b, dtype=torch.bool, device=dev)
    first = torch.zeros(b, dtype=torch.long, device=dev)
    forwards = passes = 0
    for k0 in range(0, k, chunk):  # doubling: `chunk` candidates per image and pass, until every image flipped
        todo = (~found).nonzero().view(-1)
        if not todo.numel():
            break
        g = grid[k0:k0 + chunk]
        src = todo.repeat_interleave(g.numel())
        fl = _flip_chunks(is_flipped, _candidates(x[todo], d[todo], g.expand(todo.numel(), -1), rounding), src,
                          batch_size).view(todo.numel(), g.numel())
        forwards, passes = forwards + fl.numel(), passes + 1
        any_, j = _first_true(fl)
        found[todo[any_]] = True
        first[todo[any_]] = k0 + j[any_]
    hi = torch.where(found, grid[first], torch.full((b,), math.inf, dtype=x.dtype, device=dev))
    lo = torch.where(found & (first > 0), grid[(first - 1).clamp_min(0)], torch.zeros(b, dtype=x.dtype, device=dev))
    rows = found.nonzero().view(-1)
    frac = torch.arange(1, points + 1, dtype=x.dtype, device=dev) / points
    for _ in range(rounds if rows.numel() else 0):
        lo_r, hi_r = lo[rows], hi[rows]
        pts = lo_r[:, None] + (hi_r - lo_r)[:, None] * frac[None]  # [n, points]; the last is hi
        src = rows.repeat_interleave(points)
        fl = _flip_chunks(is_flipped, _candidates(x[rows], d[rows], pts, rounding), src, batch_size).view(-1, points)
        forwards, passes = forwards + rows.numel() * points, passes + 1
        any_, j = _first_true(fl)
        j = torch.where(any_, j, torch.full_like(j, points - 1))  # no point flipped on re-evaluation: keep hi
        hi[rows] = pts.gather(1, j[:, None])[:, 0]
        lo[rows] = torch.where(j > 0, pts.gather(1, (j - 1).clamp_min(0)[:, None])[:, 0], lo_r)
    adv = x.clone()
    if rows.numel():
        adv[rows] = _candidates(x[rows], d[rows], hi[rows][:, None], rounding)
    return LineSearchResult(hi, adv, found, forwards, passes)


def line_search_naive(x: Tensor, direction: Tensor, is_flipped: FlipFn, *, eps_min: float = 1 / 255,
                      eps_max: float = 128 / 255, rounds: int = 2, points: int = 8,
                      rounding: bool = True) -> LineSearchResult:
    """The same search as :func:`line_search` done the textbook way: per image, one forward pass per doubling
    step, then ``rounds * log2(points)`` bisection steps (``points`` a power of 2: the same ``eps`` lattice)."""
    _check(x, direction, rounds, points)
    bisect = int(round(math.log2(points)))
    if 2 ** bisect != points:
        raise ValueError(f"points: line_search_naive needs a power of 2, got {points}")
    x, d = x.detach(), direction.detach()
    b, dev = x.shape[0], x.device
    grid = doubling_grid(eps_min, eps_max)
    eps = torch.full((b,), math.inf, dtype=x.dtype, device=dev)
    adv, found = x.clone(), torch.zeros(b, dtype=torch.bool, device=dev)
    forwards = 0

    def flips(i: int, e: float) -> bool:
        nonlocal forwards
        forwards += 1
        c = _candidates(x[i:i + 1], d[i:i + 1], torch.tensor([[e]], dtype=x.dtype, device=dev), rounding)
        return bool(is_flipped(c, torch.tensor([i], device=dev)).reshape(-1)[0])

    for i in range(b):
        lo, hi = 0.0, None
        for e in grid:
            if flips(i, e):
                hi = e
                break
            lo = e
        if hi is None:
            continue
        for _ in range(rounds * bisect):
            mid = lo + (hi - lo) / 2
            if flips(i, mid):
                hi = mid
            else:
                lo = mid
        eps[i], found[i] = hi, True
        adv[i] = _candidates(x[i:i + 1], d[i:i + 1], torch.tensor([[hi]], dtype=x.dtype, device=dev), rounding)[0]
    return LineSearchResult(eps, adv, found, forwards, forwards)


@dataclasses.dataclass
class IterativeResult:
    """Final 8-bit images [B,...] (the original where nothing flipped), ``flipped`` [B], ``steps`` [B] (steps
    taken to the flip; ``max_steps`` + 1 where none) and ``forwards`` (images through the net)."""

    images: Tensor
    flipped: Tensor
    steps: Tensor
    forwards: int


def iterative_flip(x: Tensor, step_fn: StepFn, is_flipped: FlipFn, *, step: float = 1 / 255, max_steps: int = 32,
                   discrete: bool = True) -> IterativeResult:
    """Iterative FGS (``discrete=True``) or FFA (``discrete=False``), see the module docstring.

    ``step_fn(images [n,...], source [n]) -> (flipped [n] bool, direction [n,...])``: from one forward/backward
    pass, whether each current image already flips and the L-inf-unit direction of the next step."""
    if not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"max_steps: must be an int >= 0, got {max_steps!r}")
    if not step > 0:
        raise ValueError(f"step: must be > 0, got {step}")
    x = x.detach()
    b, dev = x.shape[0], x.device
    cur = quantize(x) if discrete else x.clone()
    out = x.clone()
    flipped = torch.zeros(b, dtype=torch.bool, device=dev)
    steps = torch.full((b,), max_steps + 1, dtype=torch.long, device=dev)
    active = torch.arange(b, device=dev)
    forwards = 0
    for s in range(max_steps + 1):
        if not active.numel():
            break
        now, direction = step_fn(cur[active], active)
        now = now.reshape(-1).bool()
        forwards += active.numel()
        done = now.clone()
        if not discrete and now.any():  # accept a continuous flip only if its 8-bit rounding flips too
            who = active[now]
            q = quantize(cur[who])
            ok = is_flipped(q, who).reshape(-1).bool()
            forwards += who.numel()
            done[now] = ok
            cur[who[ok]] = q[ok]
        finished = active[done]
        out[finished] = quantize(cur[finished])
        flipped[finished] = True
        steps[finished] = s
        if s == max_steps:
            break
        keep = ~done
        active, direction = active[keep], direction[keep]
        nxt = cur[active] + step * direction.detach()
        cur[active] = quantize(nxt) if discrete else nxt.clamp(0, 1)
    return IterativeResult(out, flipped, steps, forwards)
