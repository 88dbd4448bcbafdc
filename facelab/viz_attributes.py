"""Figures of chapter 4 (facial attributes): Fig. 1 triples (original, perturbation x10 on grey, perturbed),
Fig. 3 success bars, Fig. 4/5 matrices, and an ipywidgets explorer over the stored attacks.

Nothing is computed here beyond display arithmetic; the numbers come from
:class:`facelab.experiments.attributes.AttributesExperiment`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from facelab.viz import to_hwc

__all__ = ["magnified_perturbation", "fig1_panel", "success_bars", "matrix_figure", "attack_explorer"]


def magnified_perturbation(adv: Tensor, orig: Tensor, factor: float = 10.0) -> np.ndarray:
    """``0.5 + factor * (adv - orig)`` clipped to [0, 1] as HWC: grey where nothing changed (the paper's Fig. 1)."""
    return np.clip(0.5 + factor * (to_hwc(adv).astype(np.float64) - to_hwc(orig).astype(np.float64)), 0, 1)


def fig1_panel(rows: Sequence[Mapping[str, Any]], size: float = 1.9) -> plt.Figure:
    """One row per example: ``{"orig", "adv", "title"}`` (+ ``"caption"`` under the perturbed image)."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(3 * size, len(rows) * size * 1.15), squeeze=False)
    for ax_row, r in zip(axes, rows):
        ax_row[0].imshow(to_hwc(r["orig"]))
        ax_row[1].imshow(magnified_perturbation(r["adv"], r["orig"]))
        ax_row[2].imshow(to_hwc(r["adv"]))
        ax_row[0].set_title(r.get("title", ""), fontsize=7, loc="left")
        ax_row[1].set_title("perturbation ×10", fontsize=7)
        ax_row[2].set_title(r.get("caption", ""), fontsize=7)
        for a in ax_row:
            a.axis("off")
    fig.tight_layout()
    return fig


def success_bars(rows: Sequence[Mapping[str, Any]], modes: Sequence[str] = ("line", "iter")) -> plt.Figure:
    """Fig. 3: success at tau = 0.95 per (net:attribute) and method, + and - cases, one panel per mode.
    ``rows``: ``{"net", "attribute", "method", "mode", "sign", "n", "success": Interval}``; solid bars are +
    (correctly classified), hatched - (misclassified); cases with no image are left out."""
    targets = sorted({f"{r['net']}:{r['attribute']}" for r in rows})
    colors = {"FGS": "tab:blue", "FFA": "tab:orange", "MFFA": "tab:green"}
    fig, axes = plt.subplots(len(modes), 1, figsize=(max(5.0, 1.4 * len(targets)), 2.4 * len(modes)), squeeze=False)
    seen: dict[str, Any] = {}
    for ax, mode in zip(axes[:, 0], modes):
        for i, t in enumerate(targets):
            hit = sorted([r for r in rows if f"{r['net']}:{r['attribute']}" == t and r["mode"] == mode and r["n"] > 0],
                         key=lambda r: (r["sign"] == "-", r["method"]))
            width = 0.8 / max(len(hit), 1)
            for k, r in enumerate(hit):
                iv = r["success"]
                err = [[100 * (iv.value - iv.lo) if math.isfinite(iv.lo) else 0],
                       [100 * (iv.hi - iv.value) if math.isfinite(iv.hi) else 0]]
                label = f"{r['method']}{r['sign']}"
                bar = ax.bar(i + (k - len(hit) / 2 + 0.5) * width, 100 * iv.value, width, yerr=err, capsize=2,
                             color=colors.get(r["method"], "grey"), alpha=1.0 if r["sign"] == "+" else 0.5,
                             hatch="" if r["sign"] == "+" else "//", edgecolor="k", linewidth=0.3,
                             error_kw={"elinewidth": 0.6})
                seen.setdefault(label, bar)
        ax.set_xticks(range(len(targets)), targets, fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel("success % (τ = 0.95)", fontsize=7)
        ax.set_title("line search" if mode == "line" else "iterative", fontsize=8)
        ax.tick_params(labelsize=7)
    order = sorted(seen, key=lambda s: (s.endswith("-"), s))
    fig.legend([seen[k] for k in order], order, fontsize=6, ncol=len(order), loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def matrix_figure(matrices: Mapping[str, Mapping[str, Mapping[str, Any]]], size: float = 0.9) -> plt.Figure:
    """Fig. 4 / 5 style heat maps: per panel, rows = attacked (net:attribute), columns = tested; cells are
    Intervals (value shown in %, NaN = no adversarial image to test)."""
    fig, axes = plt.subplots(1, len(matrices), squeeze=False,
                             figsize=(sum(size * len(next(iter(m.values()), {})) + 2.2 for m in matrices.values()),
                                      size * max(len(m) for m in matrices.values()) + 1.2))
    for ax, (title, m) in zip(axes[0], matrices.items()):
        rows = list(m)
        cols = list(next(iter(m.values()), {}))
        v = np.array([[100 * m[r][c].value for c in cols] for r in rows], dtype=float)
        ax.imshow(np.nan_to_num(v, nan=0.0), vmin=0, vmax=100, cmap="Blues")
        for i in range(len(rows)):
            for j in range(len(cols)):
                txt = "–" if not math.isfinite(v[i, j]) else f"{v[i, j]:.0f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="k" if not v[i, j] > 60 else "w")
        ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=6)
        ax.set_yticks(range(len(rows)), rows, fontsize=6)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def attack_explorer(exp) -> Any:
    """ipywidgets explorer: pick a face, a (net, attribute) and an attack, see eps, PASS, the images and every
    other attribute before/after. Reads the experiment's stored records only (no computation)."""
    import ipywidgets as w
    from IPython.display import display

    faces = list(exp.units)
    targets = sorted({f"{r.net}:{r.attribute}" for r in exp.records})
    face = w.Dropdown(options=faces, description="face")
    target = w.Dropdown(options=targets, description="attribute")
    method = w.Dropdown(options=[], description="attack")
    out = w.Output()

    def methods(*_):
        method.options = [f"{r.method} {r.mode}" for r in exp.records if f"{r.net}:{r.attribute}" == target.value]

    def show(*_):
        out.clear_output(wait=True)
        if not method.value:
            return
        m, mode = method.value.split()
        rec = next(r for r in exp.records if f"{r.net}:{r.attribute}" == target.value and r.method == m
                   and r.mode == mode)
        i = faces.index(face.value)
        orig = exp.images[i]
        adv = rec.images[i].float() / 255
        with out:
            clean = {f"{n}:{a}": exp._clean[(n, a)] for n, a in exp.columns()}
            lines = [f"{'flipped' if rec.flipped[i] else 'not flipped'}; eps = {rec.eps[i]:.2f} grey levels; "
                     f"PASS = {rec.pass_[i]:.3f}" + (" (ECC failed: unaligned SSIM)" if rec.ecc_failed[i] else ""),
                     "attribute: label / before / after"]
            for col, c in clean.items():
                before = bool(c["pred"][i])
                after = before != bool(rec.others[col][i])
                lab = ("yes" if c["label"][i] else "no") if c["labelled"][i] else "?"
                lines.append(f"  {col}: {lab} / {'yes' if before else 'no'} / {'yes' if after else 'no'}"
                             + ("   <- changed" if before != after else ""))
            print("\n".join(lines))
            fig = fig1_panel([{"orig": orig, "adv": adv, "title": face.value, "caption": f"{method.value}"}], 2.2)
            plt.show(fig)

    target.observe(methods, "value")
    for wd in (face, target, method):
        wd.observe(show, "value")
    methods()
    box = w.VBox([w.HBox([face, target, method]), out])
    display(box)
    return box
