"""Figures of chapter 3 (adversarial eyeglasses, saliency-mask defense); nothing is shown or saved here.

* :func:`impostor_rows` -- attackers wearing the glasses above the identity each is classified as (the blog's
  two rows, after Sharif et al.'s figure);
* :func:`image_rows` -- rows of images (saliency maps, defended images) with titles;
* :func:`mask_stages_figure` -- one image: saliency, threshold μ, morphology n, contour filter φ, defended;
* :func:`goodness_heatmap` -- goodness over the (μ, n, φ) grid, one panel per n;
* :func:`mask_explorer` -- ipywidgets sliders for μ, n, φ on one adversarial image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from facelab.viz import to_hwc

__all__ = ["impostor_rows", "image_rows", "mask_stages_figure", "goodness_heatmap", "mask_explorer"]


def _off(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def impostor_rows(attackers: Sequence[Tensor], classified_as: Sequence[Tensor], top_titles: Sequence[str],
                  bottom_titles: Sequence[str], size: float = 1.6) -> plt.Figure:
    """Top row: the attackers with their glasses; bottom row: an image of the identity each is classified as."""
    n = len(attackers)
    if n == 0 or len(classified_as) != n or len(top_titles) != n or len(bottom_titles) != n:
        raise ValueError("impostor_rows: attackers, classified_as and both title lists need the same non-zero length")
    fig, axes = plt.subplots(2, n, figsize=(size * n, size * 2.5), squeeze=False)
    for j in range(n):
        for i, (img, title) in enumerate(((attackers[j], top_titles[j]), (classified_as[j], bottom_titles[j]))):
            ax = axes[i, j]
            ax.imshow(to_hwc(img))
            ax.set_title(title, fontsize=7)
            _off(ax)
    axes[0, 0].set_ylabel("attacker", fontsize=8)
    axes[1, 0].set_ylabel("classified as", fontsize=8)
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, Sequence[Any]], titles: Sequence[Sequence[str]] | None = None,
               size: float = 1.5, cmap: str = "gray") -> plt.Figure:
    """A grid: one row per entry of ``rows`` (name -> images [3,H,W] or maps [H,W]), optional titles per image."""
    names = list(rows)
    ncol = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), ncol, figsize=(size * ncol, size * 1.15 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j in range(ncol):
            ax = axes[i, j]
            _off(ax)
            if j >= len(rows[name]):
                ax.axis("off")
                continue
            img = rows[name][j]
            arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
            if arr.ndim == 2:
                ax.imshow(arr, cmap=cmap, vmin=0, vmax=1)
            else:
                ax.imshow(to_hwc(arr))
            if titles is not None and i < len(titles) and j < len(titles[i]):
                ax.set_title(titles[i][j], fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def mask_stages_figure(image: Tensor, saliency: Any, stages: Mapping[str, np.ndarray], defended: Tensor,
                       mu: float, n: int, phi: float, title: str = "", size: float = 1.9) -> plt.Figure:
    """The image, its saliency map, the mask after each stage and the defended image, left to right."""
    panels = [("adversarial image", image), ("saliency (guided backprop)", saliency),
              (f"threshold μ={mu}", stages["threshold"]), (f"dilate+erode n={n}", stages["morphology"]),
              (f"contours ≥ φ={phi:g}", stages["contours"]), ("defended", defended)]
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size * 1.2))
    for ax, (t, img) in zip(axes, panels):
        arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
        if arr.ndim == 2:
            ax.imshow(arr, cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(to_hwc(arr))
        ax.set_title(t, fontsize=7)
        _off(ax)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def goodness_heatmap(grid: Sequence[Mapping[str, Any]], key: str = "goodness", best: Mapping[str, Any] | None = None,
                     size: float = 2.6) -> plt.Figure:
    """``key`` of every grid point: one heat map (μ rows × φ columns) per n; the best point is outlined."""
    import seaborn as sns

    mus = sorted({r["mu"] for r in grid})
    ns = sorted({r["n"] for r in grid})
    phis = sorted({r["phi"] for r in grid})
    vals = [r[key] for r in grid]
    lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
    fig, axes = plt.subplots(1, len(ns), figsize=(size * len(ns) + 0.8, size * 0.5 + 0.35 * len(mus)), squeeze=False)
    for ax, n in zip(axes[0], ns):
        mat = np.full((len(mus), len(phis)), np.nan)
        for r in grid:
            if r["n"] == n:
                mat[mus.index(r["mu"]), phis.index(r["phi"])] = r[key]
        sns.heatmap(mat, ax=ax, annot=True, fmt=".3f", vmin=lo, vmax=hi, cmap="viridis", cbar=n == ns[-1],
                    xticklabels=[f"{p:g}" for p in phis], yticklabels=[f"{m:g}" for m in mus], annot_kws={"size": 7})
        ax.set_title(f"n = {n}", fontsize=8)
        ax.set_xlabel("φ (pixels)", fontsize=8)
        ax.set_ylabel("μ", fontsize=8)
        if best is not None and best["n"] == n:
            ax.add_patch(plt.Rectangle((phis.index(best["phi"]), mus.index(best["mu"])), 1, 1, fill=False,
                                       edgecolor="red", lw=2))
    fig.suptitle(f"{key} over the (μ, n, φ) grid (red: best)", fontsize=9)
    fig.tight_layout()
    return fig


def mask_explorer(image: Tensor, saliency: Any, stages_fn: Callable, defend_fn: Callable, classify_fn: Callable,
                  mus: Sequence[float] = (0.5, 1.0, 0.01), ns: Sequence[int] = (0, 12, 1),
                  phis: Sequence[float] = (0.0, 300.0, 5.0), start: tuple[float, int, float] = (0.98, 8, 80.0)) -> Any:
    """ipywidgets sliders for μ, n, φ; each change redraws the mask stages and prints the new decision.

    ``stages_fn(saliency, mu, n, phi) -> stages``; ``defend_fn(image, stages["contours"]) -> image``;
    ``classify_fn(image) -> str``. Nothing is computed until a slider moves (or the first draw)."""
    import ipywidgets as widgets

    out = widgets.Output()
    mu = widgets.FloatSlider(value=start[0], min=mus[0], max=mus[1], step=mus[2], description="μ")
    n = widgets.IntSlider(value=start[1], min=ns[0], max=ns[1], step=ns[2], description="n")
    phi = widgets.FloatSlider(value=start[2], min=phis[0], max=phis[1], step=phis[2], description="φ")

    def draw(_: Any = None) -> None:
        st = stages_fn(saliency, mu.value, n.value, phi.value)
        d = defend_fn(image, st["contours"])
        with out:
            out.clear_output(wait=True)
            fig = mask_stages_figure(image, saliency, st, d, mu.value, n.value, phi.value, title=classify_fn(d))
            plt.show(fig)

    for w in (mu, n, phi):
        w.observe(draw, names="value")
    return widgets.VBox([widgets.HBox([mu, n, phi]), out])
