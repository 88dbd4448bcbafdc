"""Intervals for small-sample results: a bootstrap over *units* (faces, identities, photos), not instances.

A chapter's default run judges a few distinct faces seen in several augmented views; the views of one face
are not independent. Every metric is therefore computed from per-unit count columns (a :class:`UnitTable`:
e.g. true positives, false positives and counted faces of each face), and its interval comes from
resampling units with replacement (the cluster bootstrap, Efron & Tibshirani 1993, §6.7 / Field & Welsh
2007). Tables of several settings evaluated on the same units are resampled *together* (paired), so a
ratio "patched recall / clean recall" gets the interval of the ratio, not of its parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["UnitTable", "Interval", "bootstrap", "percentile_interval"]


@dataclass(frozen=True)
class UnitTable:
    """Count columns ``{name: [U]}`` over the same ``units`` (in that order)."""

    units: tuple[str, ...]
    columns: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        for k, v in self.columns.items():
            if np.shape(v) != (len(self.units),):
                raise ValueError(f"UnitTable column {k!r}: shape {np.shape(v)}, expected ({len(self.units)},)")

    def total(self, name: str) -> float:
        return float(np.sum(self.columns[name]))

    def aligned(self, units: Sequence[str]) -> UnitTable:
        """The same counts over ``units`` (units missing here count 0)."""
        pos = {u: i for i, u in enumerate(self.units)}
        idx = np.array([pos.get(u, -1) for u in units])
        cols = {k: np.where(idx >= 0, np.asarray(v, dtype=np.float64)[np.maximum(idx, 0)], 0.0)
                for k, v in self.columns.items()}
        return UnitTable(tuple(units), cols)


@dataclass(frozen=True)
class Interval:
    """A point value with a bootstrap percentile interval at ``level``."""

    value: float
    lo: float
    hi: float
    level: float

    def as_list(self, digits: int = 4) -> list[float | None]:
        return [None if not math.isfinite(x) else round(x, digits) for x in (self.value, self.lo, self.hi)]

    def fmt(self, pct: bool = True, digits: int = 1) -> str:
        f = (lambda x: "–" if not math.isfinite(x) else (f"{100 * x:.{digits}f}" if pct else f"{x:.{digits + 2}f}"))
        return f"{f(self.value)} [{f(self.lo)}, {f(self.hi)}]" + (" %" if pct else "")


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def bootstrap(tables: Mapping[str, UnitTable], stat: Callable[[Mapping[str, Mapping[str, np.ndarray]]], np.ndarray],
              n_boot: int = 2000, seed: int = 0, level: float = 0.9) -> Interval:
    """``stat`` on the totals of ``tables`` with a paired cluster-bootstrap interval.

    ``stat(totals)`` gets ``{table: {column: array}}`` of column sums (arrays of shape [1] for the point
    value, [n_boot] for the resamples) and returns an array of the same shape. All tables must share
    their units; the same resampled units are used for every table. ``n_boot = 0``: no interval (NaN).
    """
    if not tables:
        raise ValueError("bootstrap: no tables")
    units = next(iter(tables.values())).units
    for name, t in tables.items():
        if t.units != units:
            raise ValueError(f"bootstrap: table {name!r} has other units than the first table; use .aligned()")
    point = {n: {k: np.array([np.sum(v)], dtype=np.float64) for k, v in t.columns.items()} for n, t in tables.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.asarray(stat(point))[0])
    if n_boot <= 0 or not units:
        return Interval(value, math.nan, math.nan, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(units), size=(n_boot, len(units)))
    counts = np.zeros((n_boot, len(units)))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)  # multiplicity of each unit per resample
    boot = {n: {k: counts @ np.asarray(v, dtype=np.float64) for k, v in t.columns.items()} for n, t in tables.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = percentile_interval(np.asarray(stat(boot)), level)
    return Interval(value, lo, hi, level)
