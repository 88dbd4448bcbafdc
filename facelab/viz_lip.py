"""Chapter 2 (LIP) figures; nothing is shown or saved here.

* :func:`lip_detections_panel` -- detections at δ in the poster's colours (yellow: true positive, red: false
  positive; missed faces dashed white);
* :func:`perturbation_panel` -- IMP / LP / LIP-A / LIP-H perturbations side by side, magnified;
* :func:`erf_figure` -- measured ERF maps per detector and anchor scale, with the ERF and TRF radii;
* :func:`erf_overlay` -- one face's loss gradient over a scene, with every face's LIP-H (ERF) region;
* :func:`ipi_figure` -- success over the number of faces and over the distance, with intervals and the poster;
* :func:`ipi_explorer` -- an ipywidgets explorer over precomputed results (faces, distance, method).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle, Rectangle
from torch import Tensor

from facelab.metrics.detection import match_detections

__all__ = ["lip_detections_panel", "perturbation_panel", "erf_figure", "erf_overlay", "ipi_figure", "ipi_explorer"]


def _img(t: Tensor) -> np.ndarray:
    return t.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


def _draw(ax: plt.Axes, image: Tensor, det: tuple[Tensor, Tensor], gt: Tensor, delta: float, title: str = "") -> None:
    ax.imshow(_img(image))
    ax.set_xticks([]); ax.set_yticks([])
    b, s = det
    keep = s >= delta
    b, s = b[keep], s[keep]
    m = match_detections(b, s, gt, iou=0.5)
    hit = np.zeros(len(gt), dtype=bool)
    hit[m.matched_gt[m.tp]] = True
    for box, t in zip(b.tolist(), m.tp.tolist()):
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, lw=1.2,
                               ec="yellow" if t else "red"))
    for g, h in zip(torch.as_tensor(gt).tolist(), hit.tolist()):
        if not h:
            ax.add_patch(Rectangle((g[0], g[1]), g[2] - g[0], g[3] - g[1], fill=False, lw=0.8, ls="--", ec="white"))
    ax.set_title(title, fontsize=8)


def lip_detections_panel(images: Sequence[Tensor], dets: Sequence[tuple[Tensor, Tensor]], gts: Sequence[Tensor],
                         delta: float, titles: Sequence[str], size: float = 2.6, ncols: int | None = None) -> plt.Figure:
    """One panel per image: detections at ``delta``, yellow = true positive, red = false positive (the poster's
    colours), dashed white = a face no longer detected."""
    n = len(images)
    ncols = ncols or n
    nrows = -(-n // ncols)
    h, w = images[0].shape[-2:]
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * h / w + 0.3 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, im, d, g, t in zip(axes.flat, images, dets, gts, titles):
        _draw(ax, im, d, g, delta, t)
    fig.tight_layout()
    return fig


def perturbation_panel(clean: Tensor, advs: Mapping[str, Tensor], magnify: float | None = None,
                       size: float = 2.6) -> plt.Figure:
    """Perturbations ``adv - clean`` shown as ``0.5 + magnify * δ`` (default: the largest |δ| maps to ±0.5)."""
    deltas = {k: (v - clean).detach().cpu() for k, v in advs.items()}
    mx = max((float(d.abs().max()) for d in deltas.values()), default=0.0)
    k = magnify if magnify is not None else (0.5 / mx if mx > 0 else 1.0)
    fig, axes = plt.subplots(1, len(deltas) + 1, figsize=(size * (len(deltas) + 1), size + 0.3), squeeze=False)
    axes[0, 0].imshow(_img(clean)); axes[0, 0].set_title("clean", fontsize=8)
    for ax, (name, d) in zip(axes[0, 1:], deltas.items()):
        ax.imshow(_img(0.5 + k * d))
        frac = float((d.abs().sum(0) > 0).float().mean())
        ax.set_title(f"{name} (×{k:.0f}; {100 * frac:.0f} % of pixels)", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    fig.tight_layout()
    return fig


def erf_figure(rows: Sequence[Mapping[str, Any]], maps: Mapping[tuple[str, float], Tensor], size: float = 2.2
               ) -> plt.Figure:
    """Each detector's ERF map (mean |gradient| of the centre anchor of each scale, log scale), the ERF radius
    (solid) and the TRF radius (dashed) around the peak, and the prior box (dotted)."""
    n = len(rows)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size + 0.5), squeeze=False)
    for ax, r in zip(axes.flat, rows):
        m = maps[(r["detector"], r["scale"])].numpy()
        ax.imshow(np.log10(m + m.max() * 1e-4), cmap="magma")
        c = (r["peak_x"], r["peak_y"])
        ax.add_patch(Circle(c, r["erf_radius"], fill=False, ec="cyan", lw=1.2))
        ax.add_patch(Circle(c, r["trf_radius"], fill=False, ec="white", lw=0.8, ls="--"))
        p = r["prior"]
        ax.add_patch(Rectangle((p[0], p[1]), p[2] - p[0], p[3] - p[1], fill=False, ec="lime", lw=0.8, ls=":"))
        ax.set_title(f"{r['detector'][:14]} s={r['scale']:g}\nERF r={r['erf_radius']:.0f}, TRF r={r['trf_radius']:.0f}",
                     fontsize=7)
        ax.set_xticks([]); ax.set_yticks([])
    fig.tight_layout()
    return fig


def erf_overlay(image: Tensor, grad: Tensor, regions: Tensor, boxes: Tensor, focus: int, title: str = "",
                size: float = 4.0) -> plt.Figure:
    """Face ``focus``'s loss gradient magnitude (heat, log scale) over ``image``, its box (yellow) and every face's
    LIP-H region (ERF disc outlines: cyan for ``focus``, white for the neighbours)."""
    g = grad.abs().sum(0).numpy()
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(_img(image))
    ax.imshow(np.log10(g + g.max() * 1e-3), cmap="inferno", alpha=0.55)
    for i, r in enumerate(regions):
        ax.contour(r.numpy(), levels=[0.5], colors=["cyan" if i == focus else "white"], linewidths=1.0 if i == focus else 0.5)
    b = boxes[focus].tolist()
    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="yellow", lw=1.2))
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]); ax.set_yticks([])
    fig.tight_layout()
    return fig


def ipi_figure(rows: Sequence[Mapping[str, Any]], paper: Mapping[tuple[int, int], float], methods: Sequence[str] = ("imp",),
               names: Mapping[str, str] | None = None) -> plt.Figure:
    """Success (%) with intervals over the number of faces (left) and the centre distance (right); the poster's
    values as black crosses."""
    names = names or {}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, fam, xk, xl in ((axes[0], "count", "n", "faces in the scene"), (axes[1], "distance", "distance",
                                                                            "centre distance (poster px)")):
        rs = sorted((r for r in rows if r["family"] == fam), key=lambda r: r[xk])
        for m in methods:
            x = [r[xk] for r in rs]
            v = np.array([[np.nan if q is None else 100 * q for q in r[m]] for r in rs], dtype=float)
            if not len(v):
                continue
            ax.errorbar(x, v[:, 0], yerr=[v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]], marker="o", capsize=3,
                        label=f"ours, {names.get(m, m)}")
        px = [(k[0] if fam == "count" else k[1], val) for k, val in paper.items()
              if (fam == "count" and k[1] == 40) or (fam == "distance" and k[0] == 9)]
        if px:
            ax.scatter(*zip(*px), marker="x", color="k", label="poster (HR)", zorder=5)
        if fam == "count":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xl); ax.set_ylabel("attack success (%)"); ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3); ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ipi_explorer(options: Mapping[tuple[int, float], Mapping[str, Any]], show: Callable[[tuple[int, float], str], plt.Figure]):
    """Dropdowns for the number of faces, the distance and the method over precomputed results; ``options`` maps
    (faces, distance) to ``{method: success text}``; ``show(key, method)`` draws the detections. Computes nothing
    until used, so it does no harm headless."""
    import ipywidgets as w
    from IPython.display import display

    keys = sorted(options)
    faces = sorted({k[0] for k in keys})
    fw = w.Dropdown(options=faces, value=faces[0], description="faces")
    dw = w.Dropdown(options=sorted({k[1] for k in keys if k[0] == faces[0]}), description="distance")
    mw = w.Dropdown(options=list(next(iter(options.values()))), description="method")
    out = w.Output()

    def refresh(*_):
        dw.options = sorted({k[1] for k in keys if k[0] == fw.value})
        key = (fw.value, dw.value)
        if key in options:
            mw.options = list(options[key])
        out.clear_output(wait=True)
        with out:
            if key in options and mw.value in options[key]:
                print(f"{fw.value} faces, {dw.value:g} px, {mw.value}: success {options[key][mw.value]}")
                fig = show(key, mw.value)
                plt.show()
                plt.close(fig)

    for x in (fw, dw, mw):
        x.observe(refresh, names="value")
    box = w.VBox([w.HBox([fw, dw, mw]), out])
    display(box)
    return box
