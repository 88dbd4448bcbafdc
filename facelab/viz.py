"""Small matplotlib helpers for the notebooks."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["draw_detections", "to_hwc"]


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
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

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
