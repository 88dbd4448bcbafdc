"""Matplotlib figures for the notebooks; nothing is shown or saved here.

* any chapter: :func:`draw_detections` (boxes, scores, landmarks on one image), :func:`to_hwc`;
* chapter 1 (universal adversarial patches): patch grids (Fig. 2/5/6), detections on patched faces
  (Fig. 1 style, matched with :func:`facelab.metrics.detection.match_detections`), threshold-Fβ curves
  (Fig. 7), the transfer matrix (Table 2) and an ipywidgets explorer.

Plotting sits above every other layer, so it may use :mod:`facelab.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor

from facelab.metrics.detection import match_detections

__all__ = ["draw_detections", "to_hwc", "patch_grid", "detections_panel", "fbeta_figure", "transfer_figure",
           "patch_explorer"]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_hwc(image: Any) -> np.ndarray:
    """An image tensor [3,H,W] (or [1,3,H,W]) in [0,1], or an HWC array, as an HWC array for ``imshow``."""
    arr = _np(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"image: expected one image, got a batch of shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"image: expected [3,H,W] or [H,W,3], got shape {arr.shape}")
    if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0.0, 1.0)
    return arr


def draw_detections(image: Any, boxes: Any, scores: Any = None, landmarks: Any = None, ax: Any = None,
                    color: str = "lime", linewidth: float = 2.0, fontsize: int = 8) -> Any:
    """Show ``image`` with ``boxes`` [K,4] (x1 y1 x2 y2, pixels), optional ``scores`` [K] as labels and
    ``landmarks`` [K,P,2] (or [P,2] for one face) as dots; returns the matplotlib axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 6))
    ax.imshow(to_hwc(image))
    b = _np(boxes).reshape(-1, 4) if boxes is not None else np.zeros((0, 4))
    s = _np(scores).reshape(-1) if scores is not None else None
    if s is not None and len(s) != len(b):
        raise ValueError(f"scores: {len(s)} values for {len(b)} boxes")
    for i, (x1, y1, x2, y2) in enumerate(b):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=linewidth))
        if s is not None:
            ax.text(x1, y1, f"{s[i]:.2f}", color="black", fontsize=fontsize, va="bottom",
                    bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    if landmarks is not None:
        pts = _np(landmarks).reshape(-1, 2)
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="red")
    ax.set_axis_off()
    return ax


def _img(t: Tensor) -> np.ndarray:
    return t.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def patch_grid(rows: Mapping[str, Sequence[Tensor]], col_titles: Sequence[str] | None = None,
               size: float = 1.6) -> plt.Figure:
    """A grid of patches: one row per entry of ``rows`` (name -> patches), e.g. start/middle/end."""
    names = list(rows)
    ncol = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), ncol, figsize=(size * ncol, size * len(names)), squeeze=False)
    for r, n in enumerate(names):
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([]); ax.set_yticks([])
            if c < len(rows[n]):
                ax.imshow(_img(rows[n][c]))
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(n, fontsize=8)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
    fig.tight_layout()
    return fig


def _draw(ax: plt.Axes, image: Tensor, dets: tuple[Tensor, Tensor], gts: Tensor, delta: float,
          title: str = "") -> None:
    """Fig.-1 convention: true positives solid blue, false positives (background or a second box on a
    face) red, missed faces dashed blue."""
    ax.imshow(_img(image))
    ax.set_xticks([]); ax.set_yticks([])
    ax.set_xlim(-0.5, image.shape[-1] - 0.5); ax.set_ylim(image.shape[-2] - 0.5, -0.5)
    boxes, scores = dets
    keep = scores >= delta
    boxes, scores = boxes[keep], scores[keep]
    m = match_detections(boxes, scores, gts, iou=0.5)  # WIDER rule: one true positive per face
    hit_gt = np.zeros(len(gts), dtype=bool)
    hit_gt[m.matched_gt[m.tp]] = True
    for b, s, t in zip(boxes.tolist(), scores.tolist(), m.tp.tolist()):
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1.5,
                               ec="tab:blue" if t else "red"))
        ax.text(b[0], b[1] - 1, f"{s:.2f}", color="tab:blue" if t else "red", fontsize=6, clip_on=True)
    for g, h in zip(gts.tolist(), hit_gt.tolist()):
        if not h:
            ax.add_patch(Rectangle((g[0], g[1]), g[2] - g[0], g[3] - g[1], fill=False, lw=1.2, ls="--",
                                   ec="tab:blue"))
    ax.set_title(title, fontsize=8)


def detections_panel(images: Sequence[Tensor], dets: Sequence[tuple[Tensor, Tensor]], gts: Sequence[Tensor],
                     delta: float, titles: Sequence[str], size: float = 2.2, ncols: int | None = None
                     ) -> plt.Figure:
    """One panel per image with its detections at δ (Fig. 1 colour code), ``ncols`` panels per row."""
    n = len(images)
    ncols = ncols or n
    nrows = -(-n // ncols)
    h, w = images[0].shape[-2:]
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * h / w + 0.3 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, im, d, g, t in zip(axes.flat, images, dets, gts, titles):
        _draw(ax, im, d, g, delta, title=t)
    fig.tight_layout()
    return fig


def fbeta_figure(curves: Mapping[str, dict], afbeta: Mapping[str, Mapping[float, float]] | None = None
                 ) -> plt.Figure:
    """Threshold-Fβ curves, one panel per β, one line per method, AFβ in the legend (Fig. 7)."""
    betas = list(next(iter(curves.values()))["fbeta"])
    fig, axes = plt.subplots(1, len(betas), figsize=(3.2 * len(betas), 2.8), squeeze=False)
    for ax, b in zip(axes[0], betas):
        for name, c in curves.items():
            lab = name if afbeta is None else f"{name} ({afbeta[name][b]:.3f})"
            ax.plot(c["thresholds"], c["fbeta"][b], label=lab, lw=1.2)
        ax.set_title(f"β = {b}", fontsize=9)
        ax.set_xlabel("threshold δ", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6, title="AFβ" if afbeta else None, title_fontsize=6)
    axes[0, 0].set_ylabel("Fβ")
    fig.tight_layout()
    return fig


def transfer_figure(matrix: Mapping[str, Mapping[str, Mapping[str, float]]], key: str = "recall") -> plt.Figure:
    """Heat map of ``matrix[source][target][key]`` (Table 2 as a full matrix)."""
    rows = list(matrix)
    cols = list(next(iter(matrix.values())))
    v = np.array([[matrix[r][c].get(key, np.nan) for c in cols] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.4 * len(cols) + 2, 0.6 * len(rows) + 1.2))
    im = ax.imshow(v, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r if r in ("clean", "noise (unoptimised)") else f"patch from {r}" for r in rows], fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{v[i, j]:.2f}", ha="center", va="center", color="w" if v[i, j] < 0.6 else "k", fontsize=8)
    ax.set_xlabel(f"tested on ({key} at each detector's δ)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def patch_explorer(detector, image: Tensor, boxes: Tensor, patch: Tensor, delta: float, alpha: float = 0.5):
    """ipywidgets explorer: move (dx, dy as fractions of the face box) and scale (α) the patch on one
    image and see the detections at δ update. Returns the widget (which computes nothing until used),
    or None when ipywidgets is unavailable, so headless runs are unaffected."""
    try:
        import ipywidgets as w
        from IPython.display import display
    except Exception:  # pragma: no cover - optional
        return None
    from facelab.attacks.patch import paste_patch

    out = w.Output()
    s_alpha = w.FloatSlider(value=alpha, min=0.1, max=0.9, step=0.05, description="α")
    s_dx = w.FloatSlider(value=0.0, min=-0.5, max=0.5, step=0.05, description="dx / w")
    s_dy = w.FloatSlider(value=0.0, min=-0.5, max=0.5, step=0.05, description="dy / h")

    def update(*_):
        shift = torch.stack([(boxes[:, 2] - boxes[:, 0]) * s_dx.value, (boxes[:, 3] - boxes[:, 1]) * s_dy.value], 1)
        moved = boxes + shift.repeat(1, 2)
        img = paste_patch(image, patch, moved, s_alpha.value, "top")
        d = detector.detect([img], score_threshold=min(delta, 0.05))[0]
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4, 4))
            _draw(ax, img, (d.boxes, d.scores), boxes, delta, title=f"α={s_alpha.value:.2f}")
            plt.show()
            plt.close(fig)

    for s in (s_alpha, s_dx, s_dy):
        s.observe(update, names="value")
    button = w.Button(description="detect")
    button.on_click(lambda _: update())
    # nothing is computed until a slider moves or the button is pressed: a headless run only builds it
    return w.VBox([w.HBox([s_alpha, s_dx, s_dy, button]), out])
