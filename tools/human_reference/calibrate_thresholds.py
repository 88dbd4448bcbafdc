"""Match thresholds of the Human embedders (mobilefacenet, faceres, faceres_deep) on the bundled faces.

Faces: :func:`facelab.data.faces.all_faces` (when the thresholds were set: 40 faces, 37 identities, Barack
Obama in 3 photos and Albert Einstein in 2), each as its ArcFace-aligned 112x112 crop (stored landmarks).
Genuine pairs: the same-identity pairs, and every face against its mirror image and against a 0.9x zoom of
its crop (the same face seen slightly differently); impostor pairs: all pairs of different identities. Prints the Euclidean distance ranges and the
threshold: the midpoint between the largest genuine and the smallest impostor distance when they
separate, else the distance that equalises false matches and false non-matches. A small set: the
thresholds are a sane default, not an error-rate guarantee.

Usage: ``.venv/bin/python tools/human_reference/calibrate_thresholds.py``
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from facelab import models
from facelab.data.faces import all_faces


def crops() -> tuple[list[str], torch.Tensor]:
    fs = all_faces()
    ids, out = [], []
    for f in fs.faces:
        out.append(fs.aligned_crop(f.face_id, 112))
        ids.append(f.identity)
    return ids, torch.stack(out)


def zoom(x: torch.Tensor, s: float = 0.9) -> torch.Tensor:
    n = x.shape[-1]
    k = round(n * s)
    o = (n - k) // 2
    return F.interpolate(x[..., o:o + k, o:o + k], size=(n, n), mode="bilinear", align_corners=False).clamp(0, 1)


def main() -> None:
    ids, x = crops()
    for name in ("mobilefacenet", "faceres", "faceres_deep"):
        m = models.load(name)
        with torch.no_grad():
            d, d_flip, d_zoom = m(x), m(torch.flip(x, dims=[3])), m(zoom(x))
        genuine = torch.cat([m.distance(d, d_flip), m.distance(d, d_zoom)]).tolist()
        impostor = []
        for i, j in itertools.combinations(range(len(ids)), 2):
            dist = float(m.distance(d[i:i + 1], d[j:j + 1]))
            (genuine if ids[i] == ids[j] else impostor).append(dist)
        g, im = max(genuine), min(impostor)
        if g < im:
            thr, how = (g + im) / 2, "midpoint (separable)"
        else:
            cands = sorted(genuine + impostor)
            thr = min(cands, key=lambda t: abs(sum(v >= t for v in genuine) / len(genuine)
                                               - sum(v < t for v in impostor) / len(impostor)))
            how = "equal error"
        fnmr = sum(v >= thr for v in genuine) / len(genuine)
        fmr = sum(v < thr for v in impostor) / len(impostor)
        print(f"{name}: genuine {len(genuine)} pairs max {g:.4f}, impostor {len(impostor)} pairs min {im:.4f}; "
              f"threshold {thr:.4f} ({how}: false non-match {fnmr:.3f}, false match {fmr:.3f}); current {m.threshold}")


if __name__ == "__main__":
    main()
