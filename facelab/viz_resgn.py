"""Figures of chapter 5 (ResGN cleaning for face verification); nothing is shown or saved here.

* :func:`cleaning_grid` -- Fig. 2: reference, legitimate, adversarial and cleaned probes with their distances
  to the reference;
* :func:`accuracy_bars` -- Table 1 as grouped bars with intervals, the paper's values as ticks;
* :func:`cross_table` -- Table 2 as two heat maps (train ε × test ε);
* :func:`training_curves` -- the loss terms of each ResGN training;
* :func:`resgn_explorer` -- an ipywidgets explorer: pair, ε and loss combination -> images and distances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from facelab.viz import to_hwc

__all__ = ["cleaning_grid", "accuracy_bars", "cross_table", "training_curves", "resgn_explorer"]


def cleaning_grid(examples: Sequence[Mapping[str, Any]], size: float = 1.6) -> plt.Figure:
    """One row per example (:meth:`facelab.experiments.resgn.ResGNExperiment.example`): reference, legitimate,
    adversarial, cleaned; each probe titled with its distance to the reference (red: the wrong decision)."""
    cols = ("reference", "legitimate", "adversarial", "cleaned")
    fig, axes = plt.subplots(len(examples), 4, figsize=(4 * size, len(examples) * (size + 0.35)), squeeze=False)
    for r, ex in enumerate(examples):
        for c, name in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(to_hwc(ex[name]))
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "reference":
                kind = "genuine (dodging)" if ex["same"] else "impostor (imperson.)"
                ax.set_title(f"reference\n{kind}", fontsize=7)
                continue
            d = ex["d"][name]
            wrong = (d < ex["eta"]) != ex["same"]
            ax.set_title(f"{name}\nd = {d:.3f}", fontsize=7, color="red" if wrong else "black")
    fig.suptitle(f"η = {examples[0]['eta']:.3f}; a genuine pair must stay below η, an impostor pair above",
                 fontsize=7, y=1.0)
    fig.tight_layout()
    return fig


def accuracy_bars(rows: Sequence[Mapping[str, Any]], paper: Mapping[str, Sequence[float]],
                  columns: Sequence[str] = ("dodging", "impersonation", "legitimate")) -> plt.Figure:
    """Grouped bars: accuracy (%) of each row (``{"name", col: [value, lo, hi]}``) per column, 90 % intervals
    as error bars, the paper's value as a black tick."""
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    n, k = len(rows), len(columns)
    width = 0.8 / k
    colors = ("tab:blue", "tab:orange", "tab:green")
    for j, col in enumerate(columns):
        xs = np.arange(n) + (j - (k - 1) / 2) * width
        v = np.array([100 * (r[col][0] if r[col][0] is not None else np.nan) for r in rows])
        lo = np.array([100 * (r[col][1] if r[col][1] is not None else np.nan) for r in rows])
        hi = np.array([100 * (r[col][2] if r[col][2] is not None else np.nan) for r in rows])
        err = np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)])
        ax.bar(xs, v, width, yerr=err, capsize=2, color=colors[j % 3], label=col, alpha=0.85)
        pv = [paper.get(r["name"], (np.nan,) * k)[j] for r in rows]
        ax.scatter(xs, pv, marker="_", s=60, color="black", zorder=3, label="paper" if j == 0 else None)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([r["name"].replace("+", "+\n") for r in rows], fontsize=7)
    ax.set_ylabel("verification accuracy (%)", fontsize=8)
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, ncol=4, loc="lower left")
    fig.tight_layout()
    return fig


def cross_table(values: Mapping[str, Mapping[tuple[float, float], float]],
                paper: Mapping[str, Mapping[tuple[float, float], float]] | None = None) -> plt.Figure:
    """Heat maps of accuracy (%) per kind: rows test ε, columns train ε; cells "ours (paper)"."""
    kinds = list(values)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.3 * len(kinds), 2.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        grid = sorted({k[0] for k in values[kind]} | {k[1] for k in values[kind]})
        m = np.array([[100 * values[kind].get((tr, te), np.nan) for tr in grid] for te in grid])
        ax.imshow(m, vmin=0, vmax=100, cmap="RdYlGn")
        for i, te in enumerate(grid):
            for j, tr in enumerate(grid):
                p = (paper or {}).get(kind, {}).get((round(tr, 2), round(te, 2)))
                ax.text(j, i, f"{m[i, j]:.0f}" + (f"\n({p:.0f})" if p is not None else ""), ha="center",
                        va="center", fontsize=7)
        ax.set_xticks(range(len(grid)))
        ax.set_xticklabels([f"{g:g}" for g in grid], fontsize=7)
        ax.set_yticks(range(len(grid)))
        ax.set_yticklabels([f"{g:g}" for g in grid], fontsize=7)
        ax.set_xlabel("train ε", fontsize=8)
        ax.set_ylabel("test ε", fontsize=8)
        ax.set_title(f"{kind} accuracy % (paper)", fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(logs: Mapping[str, Sequence[Mapping[str, float]]]) -> plt.Figure:
    """Each training's weighted joint loss per step, divided by its first value (log scale)."""
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    for name, hist in logs.items():
        y = np.array([h["joint"] for h in hist])
        if len(y) and y[0] > 0:
            ax.plot(np.arange(1, len(y) + 1), y / y[0], label=name, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("loss / first loss", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def resgn_explorer(example: Callable[[int, float, str], Mapping[str, Any]], n: int, eps_values: Sequence[float],
                   combos: Sequence[str], labels: Sequence[str] | None = None):
    """ipywidgets explorer: pick a test pair, ε and a loss combination; ``example(j, eps, combo)`` gives the
    images and distances shown (:func:`cleaning_grid`). Nothing is computed until a control changes or the
    button is pressed; returns None when ipywidgets is unavailable, so headless runs are unaffected."""
    try:
        import ipywidgets as w
    except Exception:  # pragma: no cover - optional
        return None
    out = w.Output()
    options = [(labels[j] if labels else str(j), j) for j in range(n)]
    s_pair = w.Dropdown(options=options, value=0, description="pair")
    s_eps = w.Dropdown(options=list(eps_values), value=eps_values[0], description="ε")
    s_combo = w.Dropdown(options=list(combos), value=combos[-1], description="loss")

    def update(*_):
        ex = example(s_pair.value, s_eps.value, s_combo.value)
        with out:
            out.clear_output(wait=True)
            fig = cleaning_grid([ex], size=2.0)
            plt.show()
            plt.close(fig)

    for s in (s_pair, s_eps, s_combo):
        s.observe(update, names="value")
    button = w.Button(description="show")
    button.on_click(lambda _: update())
    return w.VBox([w.HBox([s_pair, s_eps, s_combo, button]), out])
