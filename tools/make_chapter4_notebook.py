"""Write notebooks/04_attributes.ipynb's cells (without outputs) from this script.

The parameters cell is generated from the chapter's ``Config`` (:func:`facelab.experiments.base.parameters_cell`);
``tests/test_experiment_attributes.py`` keeps them equal. Run it after changing the cells, then execute the
notebook (see its last cell) and commit both.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from notebook_parts import CHECK, parameters, results_card, write_notebook

from facelab.experiments import attributes as at

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_attributes.ipynb"
OUT_DIR = "../runs/default/04_attributes"

INTRO = r"""# 4 · Facial attributes: FGS vs FFA, PASS and natural adversarial samples

*Replicates* Rozsa, Günther, Rudd & Boult, **"Facial Attributes: Accuracy and Adversarial Robustness"**
(Pattern Recognition Letters; seed document `003_483ff0a1d83867a7.txt`).

A binary attribute net gives a score $f(\mathbf x)$; the attribute is present iff $f(\mathbf x)>0$ (Eq. 2). Two
ways to flip the decision with a small perturbation $\boldsymbol\eta$:

$$\boldsymbol\eta_{\rm fgs}=\epsilon\,\mathrm{sign}\big(\nabla_{\mathbf x}J(\theta,\mathbf x,y)\big)\qquad(7)$$

$$\vec t_i(\mathbf x)_j=\begin{cases}0 & j=i\\ f_j(\mathbf x) & \text{otherwise}\end{cases}\qquad(8)\qquad\qquad
\boldsymbol\eta_{\rm fa}=\epsilon\,\nabla_{\mathbf x}\Big(\tfrac12\big\|\vec t_i(\mathbf x)-f(\mathbf x)\big\|^2\Big)\qquad(9)$$

FFA (the *fast flipping attribute* technique) pulls the attacked score towards zero and needs no label; on a
multi-output net (MOON) it keeps the other scores as they are (**MFFA**). Each direction is used by a **line
search** (double $\epsilon$ until the attribute flips, then search the last interval for the smallest flipping
$\epsilon$) or **iteratively** (steps of one grey level, recomputing the gradient, until the flip). The quality of
a perturbed image is its **PASS** (SSIM after an ECC homography alignment); the paper calls it *adversarial*
when PASS ≥ τ = 0.95. A misclassified image that a perturbation with PASS ≥ τ corrects is a **natural
adversarial sample** (Eq. 10).

**What runs here by default.** The paper trains 40 VGG-16 nets and MOON on CelebA and attacks 1,000 training
images. The default run uses **pretrained nets of the zoo** on **24 of the 40 bundled labelled faces** (a seeded
random choice that keeps the default run within a few minutes on two CPU cores; `-p n_images None` takes all 40)
— written as a CelebA folder (aligned 178×218, the format and loader of the full-scale run) and cut to the face
square:

* *separate nets* (one attribute each): Human's gender net → Male, SSR-Net's age → Young, Human's emotion net
  (happy) → Smiling;
* *multi-output net* (the MOON analogue): face-api's age/gender net, two heads on one backbone → Male and Young
  (GEAR is wired as well, `-p multi "[gear]"`, at about seven times the cost per pass).

Each output becomes a binary score: the log-odds of the attribute (age regressors: (35 − age)/5, i.e. Young =
younger than 35 years, our threshold). Their thresholds are printed below. FGS (Eq. 7) uses the cross-entropy of
the *current* decision, so that it flips correct and misclassified decisions alike; FFA follows Eq. 9 downhill
(towards $\vec t$). Attribute labels come from the bundled annotation; where it says *unsure*, the clean
prediction stands in for the label (such a case counts as correctly classified).

**Uncertainty.** The unit is the face: every rate has a 90 % cluster-bootstrap interval over the faces, and
every claim is decided on those intervals. Two dozen faces and a handful of misclassified cases make wide
intervals; read them as the size and direction of effects, not as CelebA figures. The iterative attacks stop
after `iter_max_steps` = 10 grey levels (the paper: until the flip), and the line search doubles ε up to 64 grey
levels.

Library code: `facelab.attacks.ffa` (FFA / MFFA / FGS directions), `facelab.attacks.line_search` (batched line
search, iterative attacks), `facelab.metrics.pass_score` (PASS), `facelab.models.attributes` (attribute adapters,
trainable VGG-16 / MOON), `facelab.experiments.attributes` (the chapter), `facelab.viz_attributes` (figures)."""

SETUP = r"""# NBVAL_CHECK_OUTPUT
import pandas as pd
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from facelab.experiments import attributes as at
from facelab import viz_attributes as va

plt.rcParams["figure.dpi"] = 72  # keeps the committed notebook small
cfg = at.Config.from_namespace(globals())  # the parameters cell above is exactly the Config's fields
exp = at.AttributesExperiment(cfg, progress=True)
d = exp.data_summary()
print(f"{d['faces']} faces, images {d['image_size'][0]}x{d['image_size'][1]} ({d['source']})")
for name, v in d["nets"].items():
    print(f"  {name} [{v['family']}]: {', '.join(v['attributes'])} -- {v['rule']}")"""

CLEAN_MD = r"""## The victims on the clean faces

Per (net, attribute): how many faces carry a label, how many the net calls present, and how many it
misclassifies (those are the candidates for natural adversarial samples, the "−" rows below)."""

CLEAN = r"""print(pd.DataFrame(exp.clean()).drop(columns=["rule"]).to_string(index=False))"""

ATT_MD = r"""## The attacks

For every (net, attribute) and every face: FGS and FFA on the separate nets, MFFA on the multi-output net, each
by line search and iteratively; then PASS of every perturbed image that flipped, and every net's decisions on
it (for Figs. 4 and 5). The line search evaluates the candidate ε of all faces together (a few forward passes
per attack, not one per step; `benchmarks/bench_line_search.py` measures the gain)."""

ATT = r"""recs = exp.attacks()
fails = sum(int(r.ecc_failed.sum()) for r in recs)
print(f"{len(recs)} attack records; PASS computed for {sum(int(r.flipped.sum()) for r in recs)} perturbed images, "
      f"ECC did not converge for {fails} of them (scored without alignment)")"""

T1_MD = r"""## Table 1 — proportion of flipped attributes per PASS threshold

Rows: attack and case (+: correctly classified, an adversarial example; −: misclassified, a natural
adversarial sample); cells: share of the cases flipped with PASS ≥ τ (τ = 0: flipped at all), ours with a 90 %
interval, the paper's (Euclidean loss, CelebA) below. *Total*: the number of (face, attribute) cases."""

T1 = r"""rows = exp.table1()
cols = [f"{m}/{t:g}" for m in at.MODES for t in cfg.taus]
tab = []
for r in rows:
    tab.append({"row": r["row"], **{c: r[c].fmt()[:-2] for c in cols}, "total": r["total"]})
    p = at.PAPER_TABLE1.get(r["row"])
    if p:
        tab.append({"row": "  paper", **{f"{m}/{t:g}": f"{p[i][at.TAUS.index(t)]}" for i, m in enumerate(at.MODES)
                                         for t in cfg.taus if t in at.TAUS}, "total": p[2]})
print(pd.DataFrame(tab).fillna("").to_string(index=False))
display(Markdown(exp.claims_markdown("ffa_beats_fgs", "gap_widens", "iterative_beats_line", "misclassified_easier",
                                     "multi_more_vulnerable")))"""

FIG1_MD = r"""## Fig. 1 — perturbations magnified ×10 on grey

(a) the natural adversarial sample with the highest PASS corrected by FFA line search on a separate net, then the
same face with iterative FFA; (b) the highest-PASS MFFA flip of a correctly classified attribute on the
multi-output net, then iterative MFFA. Grey = no change; the perturbations are 10 times larger than applied."""

FIG1 = r"""ex = exp.fig1_examples()
if ex:
    fig = va.fig1_panel(ex); plt.show()
else:
    print("no flipped example to show")"""

FIG3_MD = r"""## Fig. 3 — success per attribute (τ = 0.95)

Share of cases turned adversarial with PASS ≥ 0.95, per (net, attribute): solid bars correctly classified (+),
hatched misclassified (−); error bars are the 90 % intervals (few − cases: wide)."""

FIG3 = r"""f3 = exp.fig3()
fig = va.success_bars(f3); plt.show()
print(pd.DataFrame([{"target": f"{r['net']}:{r['attribute']}", "attack": f"{r['method']}{r['sign']} {r['mode']}",
                     "cases": r["n"], "success %": r["success"].fmt()[:-2]} for r in f3 if r["n"]]).to_string(index=False))"""

NAT_MD = r"""## Natural adversarial samples (Eq. 10)

Of the misclassified (face, attribute) cases, the share that a perturbation with PASS ≥ 0.95 corrects, with
either attack and either search (the paper: nearly 73 % on its separate nets, above 90 % on MOON)."""

NAT = r"""nat = exp.natural()
for fam, v in nat.items():
    print(f"{fam}: {v['natural']} of {v['misclassified']} misclassified cases are natural adversarial samples: "
          f"{v['rate'].fmt()}")
display(Markdown(exp.claims_markdown("natural_common")))"""

FIG45_MD = r"""## Fig. 4 and Fig. 5 — portability across separate nets, correlation on the multi-output net

Fig. 4: the FFA line-search adversarial images (PASS ≥ 0.95) made for one separate net, and the share that
also changes each separate net's decision (diagonal: the source itself, 100 %). Fig. 5: the MFFA adversarial
images made for one attribute of the multi-output net, and the share that changes each of its attributes, by
line search and iteratively. "–": no adversarial image to test."""

FIG45 = r"""port = exp.portability()
corr = exp.correlation()
fig = va.matrix_figure({"Fig. 4: separate nets (FFA, line search)": port,
                        **{f"Fig. 5: {k.split('/')[0]} ({'line search' if k.endswith('line') else 'iterative'})": v
                           for k, v in corr.items()}})
plt.show()
display(Markdown(exp.claims_markdown("portability_low")))"""

T2_MD = r"""## Table 2 — 2 epochs against converged (full scale only)

Table 2 counts the adversarial images of the separate nets after two epochs and after convergence. That needs
nets trained on CelebA (`-p train True`, or `-p separate_checkpoints … -p separate_checkpoints_2ep …`): the
pretrained zoo nets have no two-epoch state, so the default run does **not** measure it. The paper's numbers:"""

T2 = r"""t2 = exp.table2()
paper = pd.DataFrame([{"loss": k[0], "row": k[1], "2 epochs": v[0], "converged": v[1], "overlap": v[2]}
                      for k, v in at.PAPER_TABLE2.items()])
print(paper.to_string(index=False))
print("ours:", "not measured (needs trained nets)" if t2 is None else "")
if t2:
    print(pd.DataFrame(t2).to_string(index=False))"""

EXPL_MD = r"""## Explorer

Pick a face, an attribute and an attack: ε, PASS, the images and every attribute's label / decision before /
decision after (needs a live kernel; it only reads the stored attacks, so it costs nothing in a headless run)."""

EXPL = r"""# NBVAL_SKIP
va.attack_explorer(exp)"""

SUM_MD = r"""## What this run shows

Rendered from this run's results by `exp.summary_markdown()`: every verdict is decided on the intervals by the
criterion it states — nothing is typed in by hand."""

SUM = r"""display(Markdown(exp.summary_markdown()))"""

SPREAD_MD = r"""## How far these numbers move on another machine

The attacks follow gradients and stop at a decision threshold, so a 1e-7 difference in a float kernel can move
a flip by one step and a PASS across τ. The default run was repeated with 1 thread instead of 2,
`MKL_CBWR=COMPATIBLE` and `AVX2`, and a ±1-ulp jitter of every input pixel (`python -m facelab.experiments.spread
04_attributes --variants default,threads1,cbwr_compatible,cbwr_avx2,jitter1`; seed variants not measured),
which wrote `facelab/experiments/references/04_attributes.json`; *tolerance* = max(2 × kernel spread, one case).
The check below compares this run with it."""

SPREAD = r"""ref = exp.reference()
if ref is None:
    print("no reference run for this chapter")
else:
    keys = sorted(ref["reference"], key=lambda k: -ref["spread"][k])
    moved = [k for k in keys if ref["spread"][k] > 0]
    print(f"kernel variants: {', '.join(ref['kernel_variants'])}; {len(ref['reference'])} measured numbers, "
          f"{len(moved)} moved; verdicts that differ between the variants: {ref['unstable_verdicts'] or 'none'}")
    print(pd.DataFrame([{"number": k, "reference": round(ref["reference"][k], 3),
                         "kernel spread": round(ref["spread"][k], 3), "tolerance": round(ref["tolerance"][k], 3)}
                        for k in keys[:12]]).to_string(index=False))"""

CARD = r"""import json
card_path = exp.write_card()
card = json.loads(card_path.read_text())
print(f"measured run time: {card['timings_s']['total']:.0f} s on {card['device']} ({card['machine']['torch_threads']} "
      f"threads; attacks {card['timings_s'].get('attacks', 0):.0f} s, PASS {card['timings_s'].get('pass', 0):.0f} s)")
print(f"results card ({card_path}):")
print(json.dumps(card, indent=1, ensure_ascii=False))"""

CLOSING = r"""**How this output was produced.** The committed notebook is the default run:

```
facelab run 04_attributes --out runs/main     # or, in place:
.venv/bin/python -m papermill notebooks/04_attributes.ipynb notebooks/04_attributes.ipynb -k facelab --cwd notebooks
```

**Full scale** (same notebook, no code edits): train the 40 separate VGG-16 nets and MOON on CelebA
(RMSProp, lr 1e-5 with inverse decay, batch 64; checkpoints after 2 epochs and at the best validation error;
resumable; AMP on CUDA; `torchrun` shards the batches), then attack 1,000 random training images:

```
facelab run 04_attributes -p celeba_root /data/celeba -p n_images 1000 -p train True -p crop "[]" -p device cuda
# or train one net at a time (resumable), e.g. under torchrun:
torchrun --standalone --nproc_per_node 4 -m facelab.experiments.attributes train --celeba-root /data/celeba \
    --attribute Male --out runs/nets/separate/Male
python -m facelab.experiments.attributes train --celeba-root /data/celeba --moon --out runs/nets/moon
facelab run 04_attributes -p celeba_root /data/celeba -p n_images 1000 -p crop "[]" \
    -p separate_checkpoints runs/nets/converged -p separate_checkpoints_2ep runs/nets/epoch2 \
    -p moon_checkpoint runs/nets/moon/converged.pt
```

`-p train_loss softmax` gives the softmax rows of Table 1 (FFA then works on the two logits, §5).
`facelab run 4 --list-parameters` lists every parameter."""


def cells() -> list:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    params, card = parameters(at.Config, OUT_DIR), results_card(CARD)
    return [md(INTRO), params, code(SETUP), md(CLEAN_MD), code(CLEAN), md(ATT_MD), code(ATT), md(T1_MD), code(T1),
            md(FIG1_MD), code(FIG1), md(FIG3_MD), code(FIG3), md(NAT_MD), code(NAT), md(FIG45_MD), code(FIG45),
            md(T2_MD), code(T2), md(EXPL_MD), code(EXPL), md(SUM_MD), code(SUM), md(SPREAD_MD), code(SPREAD),
            code(CHECK), md("## Results card"), card, md(CLOSING)]


def main() -> None:
    write_notebook(cells(), NOTEBOOK)


if __name__ == "__main__":
    main()
