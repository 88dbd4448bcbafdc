"""Print the maximum deviation of every Human port from the tfjs reference (tests/golden/human_reference.json).

Same inputs and tolerances as ``tests/test_models_tfjs.py`` (boxes in px, scores / probabilities / descriptors
absolute, or relative to the largest |value| where values exceed 1).

Usage: ``.venv/bin/python tools/human_reference/deviations.py``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from facelab import models

sys.path.insert(0, str(Path(__file__).parent))
from make_inputs import decode  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden" / "human_reference.json"


def dev(got: torch.Tensor, ref, relative: bool = False) -> float:
    r = torch.as_tensor(ref, dtype=torch.float64).reshape(-1)
    d = float((got.detach().double().reshape(-1) - r).abs().max())
    return d / max(1.0, float(r.abs().max())) if relative else d


def main() -> None:
    g = json.loads(GOLDEN.read_text())
    photos = {n: torch.from_numpy(decode(n).copy()).permute(2, 0, 1).float() / 255 for n in g["photos"]}
    rows = []
    for name, key in (("blazeface", "blazeface"), ("blazeface_front", "blazeface_front")):
        m = models.load(name)
        box = score = lm = 0.0
        for p, ref in g["photos"].items():
            det = m.detect(photos[p])[0]
            want = ref[key]["detections"]
            assert len(det) == len(want), (name, p)
            if want:
                box = max(box, dev(det.boxes, [d["box"] for d in want]))
                score = max(score, dev(det.scores, [d["score"] for d in want]))
                pts = m.landmarks(photos[p][None])[0][[d["anchor_index"] for d in want]]
                lm = max(lm, dev(pts, [d["landmarks"] for d in want]))
        rows.append((name, f"boxes {box:.2g} px, landmarks {lm:.2g} px, scores {score:.2g}"))
    m = models.load("centernet")
    box = score = 0.0
    for p, ref in g["photos"].items():
        det = m.detect(photos[p])[0]
        want = ref["centernet"]["detections"]
        assert det.classes.tolist() == [d["class"] for d in want], p
        box = max(box, dev(det.boxes, [d["box"] for d in want]))
        score = max(score, dev(det.scores, [d["score"] for d in want]))
    rows.append(("centernet", f"boxes {box:.2g} px, scores {score:.2g} (classes equal)"))
    crops = {}
    for n, c in g["crops"].items():
        x, y, w, h = c["crop_box"]
        crops[n] = photos[c["photo"]][:, y:y + h, x:x + w][None]
    cases = [
        ("mobilefacenet", {}, lambda m, x: m(x), lambda r: r["mobilefacenet"]["descriptor"]),
        ("faceres", {}, lambda m, x: m(x), lambda r: r["faceres"]["descriptor"]),
        ("faceres_deep", {}, lambda m, x: m(x), lambda r: r["faceres-deep"]["descriptor"]),
        ("faceres_attributes gender", {"head": "gender"}, lambda m, x: m.probabilities(x),
         lambda r: [r["faceres"]["gender"]]),
        ("faceres_attributes age", {"head": "age"}, lambda m, x: m.probabilities(x),
         lambda r: r["faceres"]["age_probabilities"]),
        ("gear age", {"head": "age"}, lambda m, x: m.probabilities(x), lambda r: r["gear"]["age"]),
        ("gear gender", {"head": "gender"}, lambda m, x: m.probabilities(x), lambda r: r["gear"]["gender"]),
        ("gear race", {"head": "race"}, lambda m, x: m.probabilities(x), lambda r: r["gear"]["race"]),
        ("ssrnet_age", {}, lambda m, x: m(x), lambda r: [r["age"]["age"]]),
        ("human_gender", {}, lambda m, x: m.probabilities(x), lambda r: r["gender"]["probabilities"]),
        ("emotion", {}, lambda m, x: m.probabilities(x), lambda r: r["emotion"]["probabilities"]),
    ]
    for label, kwargs, run, field in cases:
        m = models.load(label.split()[0], **kwargs)
        with torch.no_grad():
            worst = max(dev(run(m, crops[n]), field(c), relative=True) for n, c in g["crops"].items())
        rows.append((label, f"{worst:.2g}" + (" (relative to the age in years)" if label == "ssrnet_age" else "")))
    width = max(len(r[0]) for r in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")


if __name__ == "__main__":
    main()
