"""The chapter framework: a chapter is a :class:`ExperimentConfig` subclass plus an :class:`Experiment` subclass.

As torchattacks' ``Attack`` does for attacks, the base class does the plumbing and a chapter writes only its
science. The base owns:

* the runtime: device, CPU threads, seeds, deterministic algorithms (:func:`setup_runtime`);
* the timer and the *results card* (``results.json``: parameters from the config, versions, the machine and
  kernels that ran, the device used, seed, timings, metrics, claims, the paper-vs-ours table);
* *claims*: a paper's finding, the criterion that decides it, and one :class:`Case` per setting, each a
  measured value with a bootstrap interval; the verdict uses the interval (:class:`Claim`);
* the rendered summary (:meth:`Experiment.summary_markdown`);
* the reproduction check (:meth:`Experiment.check_reproduction`): this run's measured numbers against the
  committed reference run, within tolerances measured by :mod:`facelab.experiments.spread`, and each verdict
  against those the reference gave under the measured machine variants (a verdict that one face instance
  decides is shown as all the verdicts seen, so its text is the same on every machine).

A chapter implements :meth:`~Experiment.headline` (numbers for the card, with intervals),
:meth:`~Experiment.measured` (the flat numbers the reproduction check compares), :meth:`~Experiment.claims`,
:meth:`~Experiment.paper_comparison` and :meth:`~Experiment.differences`, and lists its steps in ``sections``.
``book/contributing.md`` walks through it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from facelab.io import Timer, default_device, results_card
from facelab.metrics.uncertainty import Interval

__all__ = ["ExperimentConfig", "Experiment", "Case", "Claim", "ReproductionError", "setup_runtime", "verdict_of",
           "allowed_verdicts", "compare",
           "parameters_cell", "reference_path"]

REFERENCES = Path(__file__).with_name("references")


def param(default: Any, help: str) -> Any:
    """A config field with its help text (the comment of the notebook's parameters cell)."""
    if "'" in help:
        raise ValueError(f"help text must not contain an apostrophe (papermill parses the cell): {help!r}")
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ExperimentConfig:
    """Parameters every chapter has. A chapter's config subclasses this; every field is a notebook parameter."""

    out_dir: str = param("runs/default", "where the results card and artifacts go (facelab run sets it)")
    device: str = param("auto", "auto | cpu | cuda (auto: cuda when present)")
    threads: int = param(2, "CPU threads, pinned so that a run repeats (0: leave the torch default)")
    deterministic: bool = param(True, "torch deterministic algorithms (and cuBLAS workspace) on")
    seed: int = param(0, "seed of every random choice of the run")
    bootstrap: int = param(2000, "bootstrap resamples of the units for the intervals (0: none)")
    confidence: float = param(0.9, "level of the bootstrap intervals")
    ulp_jitter: int = param(0, "spread measurement only: seed of a 1-ulp jitter of every input pixel (0: off)")

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads={self.threads}: must be >= 0")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap={self.bootstrap}: must be >= 0")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence={self.confidence}: must lie in (0, 1)")

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_namespace(cls, ns: Mapping[str, Any]) -> ExperimentConfig:
        """The config from a notebook's globals (the parameters cell): every field must be there;
        lists become tuples where the default is a tuple."""
        missing = [f.name for f in cls.fields() if f.name not in ns]
        if missing:
            raise NameError(f"{cls.__name__}: parameters missing from the namespace: {', '.join(missing)}")
        kw = {}
        for f in cls.fields():
            v = ns[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(default, tuple):
                if not isinstance(v, (list, tuple)):
                    raise TypeError(f"parameter {f.name}: expected a list, got {type(v).__name__} {v!r} "
                                    "(with papermill give lists as YAML: -y 'name: [a, b]')")
                v = tuple(v)
            kw[f.name] = v
        return cls(**kw)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in self.fields()}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def parameters_cell(config: type[ExperimentConfig], **overrides: Any) -> str:
    """Source of the notebook's ``parameters`` cell: one line per config field, its default (or an override,
    e.g. ``out_dir`` relative to ``notebooks/``) and its help as comment. Tests keep the notebook equal to it."""
    lines = ["# parameters (papermill): every value can be overridden with  -p name value"]
    hints = typing.get_type_hints(config)
    for f in config.fields():
        default = overrides.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        ann = _annotation(hints[f.name])
        lines.append(f"{f.name}: {ann} = {_plain(default)!r}".ljust(48) + f"  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _annotation(tp: Any) -> str:
    """A plain annotation that the runner's type check understands (tuple[...] -> list)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, float, bool, str):
        return tp.__name__
    if origin in (tuple, list, Sequence, typing.Sequence) or tp in (tuple, list):
        return "list"
    if origin is dict or tp is dict:
        return "dict"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return f"{_annotation(rest[0])} | None" if len(rest) == 1 else "object"
    return "object"


def setup_runtime(device: str = "auto", threads: int = 2, seed: int = 0, deterministic: bool = True) -> str:
    """Pin what torch lets us pin; returns the device used. Threads matter on CPU: float kernels split
    and sum in another order for another thread count (the chapters' references are measured at 1 and 2)."""
    dev = default_device(device)
    if threads > 0:
        torch.set_num_threads(int(threads))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if dev.startswith("cuda"):
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return dev


@dataclasses.dataclass
class Case:
    """One setting of a claim: a measured value with its interval against ``threshold``.

    ``op`` "<=" means the claim wants value <= threshold. The case is *met* when the whole interval is on
    the claimed side, *not met* when the whole interval is on the other side, else *undecided* (without an
    interval the point value decides)."""

    label: str
    value: Interval
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">=", "<", ">"):
            raise ValueError(f"Case {self.label!r}: op must be one of <=, >=, <, >; got {self.op!r}")

    def _ok(self, x: float) -> bool:
        t = self.threshold
        return {"<=": x <= t, ">=": x >= t, "<": x < t, ">": x > t}[self.op]

    @property
    def status(self) -> str:
        v = self.value
        if not math.isfinite(v.value):
            return "undecided"
        if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
            return "met" if self._ok(v.value) else "not met"
        lo_ok, hi_ok = self._ok(v.lo), self._ok(v.hi)
        return "met" if lo_ok and hi_ok else ("not met" if not lo_ok and not hi_ok else "undecided")


VERDICTS = ("replicated", "partly replicated", "undecided", "not replicated", "not measured")


def verdict_of(met: int, not_met: int, undecided: int) -> str:
    """replicated: every case met; partly replicated: some met; not replicated: none met and some not met;
    undecided: every interval straddles its criterion; not measured: no case."""
    if met + not_met + undecided == 0:
        return "not measured"
    if met and not (not_met or undecided):
        return "replicated"
    if met:
        return "partly replicated"
    return "not replicated" if not_met else "undecided"


@dataclasses.dataclass
class Claim:
    """A finding of the paper, the criterion that decides it here, and its cases."""

    key: str
    title: str
    criterion: str
    cases: list[Case]
    detail: str = ""
    pct: bool = True  # values are fractions shown as %

    def counts(self) -> dict[str, int]:
        st = [c.status for c in self.cases]
        return {s: st.count(s) for s in ("met", "not met", "undecided")}

    @property
    def verdict(self) -> str:
        c = self.counts()
        return verdict_of(c["met"], c["not met"], c["undecided"])

    def markdown(self, seen: Sequence[str] = ()) -> str:
        """The claim as a bullet. ``seen``: the verdicts the same run gave under the measured machine variants
        (:meth:`Experiment.verdicts_seen`); when they disagree the verdict is given as all of them, since one
        face instance decides between them."""
        c = self.counts()
        cases = "; ".join(f"{x.label} {x.value.fmt(self.pct)} ({x.status})" for x in self.cases)
        verdicts = sorted(set(seen) | {self.verdict}, key=VERDICTS.index)
        shown = " or ".join(f"**{v}**" for v in verdicts)
        if len(verdicts) > 1:
            shown += " (the verdict differs between the measured machine variants: one face instance decides it)"
        return (f"* **{self.title}** — {shown} (this run: {c['met']} met, {c['not met']} not met, {c['undecided']} "
                f"undecided of {len(self.cases)}; criterion: {self.criterion}). {self.detail} Cases: {cases}.")

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "verdict": self.verdict, "criterion": self.criterion, **self.counts(),
                "cases": [{"label": x.label, "value": x.value.as_list(), "op": x.op, "threshold": x.threshold,
                           "status": x.status} for x in self.cases]}


class ReproductionError(AssertionError):
    """A measured number left its measured tolerance around the reference run, or a verdict changed."""


def reference_path(chapter: str) -> Path:
    return REFERENCES / f"{chapter}.json"


class Experiment:
    """Base of a chapter's experiment: runtime, timer, card, claims, summary, reproduction check."""

    chapter: ClassVar[str] = ""
    config_class: ClassVar[type[ExperimentConfig]] = ExperimentConfig
    sections: ClassVar[tuple[str, ...]] = ()
    #: parameters that may differ from the reference run without making the comparison meaningless
    presentation_parameters: ClassVar[tuple[str, ...]] = ("out_dir", "device", "threads", "ulp_jitter")

    def __init__(self, cfg: ExperimentConfig, progress: bool = True) -> None:
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg, self.progress = cfg, progress
        self.t0 = time.perf_counter()
        self.device = setup_runtime(cfg.device, cfg.threads, cfg.seed, cfg.deterministic)
        self.timer = Timer()
        self.results: dict[str, Any] = {}

    # -- for the chapter -----------------------------------------------------------------------------
    def headline(self) -> dict[str, Any]:
        """Key numbers for the card (intervals as [value, lo, hi])."""
        raise NotImplementedError

    def measured(self) -> dict[str, float]:
        """The flat numbers the reproduction check compares with the reference run."""
        raise NotImplementedError

    def claims(self) -> list[Claim]:
        raise NotImplementedError

    def paper_comparison(self) -> list[dict[str, Any]]:
        """Rows {quantity, paper, ours, interval, note}: scalar numbers, ours from this run."""
        raise NotImplementedError

    def differences(self) -> dict[str, str]:
        """What differs from the paper, by kind (model, data, scale, protocol)."""
        raise NotImplementedError

    def write_artifacts(self, out: Path) -> None:
        """Extra files of the run (write them atomically)."""

    # -- provided ------------------------------------------------------------------------------------
    def jitter(self, image: Tensor) -> Tensor:
        """``image`` with half its pixels moved by one ulp up or down (``cfg.ulp_jitter`` seeds it; 0 = none):
        the size of difference another CPU's kernels make, used to measure how far results move."""
        if not self.cfg.ulp_jitter:
            return image
        g = torch.Generator().manual_seed(int(self.cfg.ulp_jitter) * 1_000_003 + int(image.numel()))
        pick = torch.rand(image.shape, generator=g) < 0.5
        up = torch.rand(image.shape, generator=g) < 0.5
        moved = torch.where(up, torch.nextafter(image, torch.full_like(image, 2.0)),
                            torch.nextafter(image, torch.full_like(image, -1.0)))
        return torch.where(pick, moved, image).clamp(0, 1)

    def run_sections(self, sections: Sequence[str] | None = None) -> Experiment:
        for s in self.sections if sections is None else sections:
            if s not in self.sections:
                raise ValueError(f"{self.chapter}: unknown section {s!r}; sections: {', '.join(self.sections)}")
            getattr(self, s)()
        return self

    def verdicts(self) -> dict[str, str]:
        return {c.key: c.verdict for c in self.claims()}

    def verdicts_seen(self) -> dict[str, list[str]]:
        """Per claim, the verdicts of the reference run under its kernel variants (threads, MKL_CBWR, ulp jitter),
        when this run is comparable to the reference; else nothing."""
        ref = self.reference()
        if ref is None or self.comparable_to(ref):
            return {}
        return allowed_verdicts(ref)

    def summary_markdown(self) -> str:
        """Every claim with its verdict, cases and intervals, then the differences from the paper."""
        claims = self.claims()
        out = [self.summary_preamble(), "",
               f"Intervals: {self.cfg.confidence:.0%} cluster-bootstrap percentile intervals over units "
               f"({self.cfg.bootstrap} resamples). A case is *met* when its whole interval meets the criterion, "
               "*not met* when none of it does, *undecided* otherwise; a claim is *replicated* when every case is "
               "met, *partly replicated* when some are, *not replicated* when none is and some are not met, "
               "*undecided* when every case is.", ""]
        out += [self.claims_markdown(*(c.key for c in claims))]
        out += ["", "**Differences from the paper:** " + "; ".join(f"*{k}*: {v}" for k, v in self.differences().items())
                + "."]
        return "\n".join(out)

    def summary_preamble(self) -> str:
        return ""

    def claims_markdown(self, *keys: str) -> str:
        """The claims ``keys`` (those that this run measured) as bullets, verdicts as in the summary."""
        claims, seen = {c.key: c for c in self.claims()}, self.verdicts_seen()
        return "\n".join(claims[k].markdown(seen.get(k, ())) for k in keys if k in claims)

    def card(self) -> dict[str, Any]:
        claims = self.claims()
        return {"metrics": self.headline(), "claims": {c.key: c.as_dict() for c in claims},
                "measured": self.measured(), "paper_comparison": self.paper_comparison(),
                "differences": self.differences()}

    def write_card(self) -> Path:
        """``results.json`` (and the chapter's artifacts) in ``cfg.out_dir``."""
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.write_artifacts(out)
        c = self.card()
        timings = {k: round(v, 2) for k, v in self.timer.timings.items()}
        timings["total"] = round(time.perf_counter() - self.t0, 2)
        return results_card(out, chapter=self.chapter, parameters=self.cfg.as_dict(), seed=self.cfg.seed,
                            timings=timings, metrics=c.pop("metrics"), device=self.device,
                            extra={**c, "reproduction": self.reproduction_status()})

    # -- reproduction --------------------------------------------------------------------------------
    def reference(self) -> dict[str, Any] | None:
        p = reference_path(self.chapter)
        return json.loads(p.read_text()) if p.is_file() else None

    def comparable_to(self, ref: Mapping[str, Any]) -> list[str]:
        """Names of the parameters (other than presentation ones) that differ from the reference run."""
        mine = self.cfg.as_dict()
        return [k for k, v in ref["parameters"].items()
                if k not in self.presentation_parameters and _plain(mine.get(k)) != v]

    def reproduction_status(self) -> dict[str, Any]:
        ref = self.reference()
        if ref is None:
            return {"compared": False, "why": "no reference run"}
        diff = self.comparable_to(ref)
        if diff:
            return {"compared": False, "why": f"parameters differ from the reference run: {', '.join(diff)}"}
        return {"compared": True, **compare(self.measured(), self.verdicts(), ref)}

    def check_reproduction(self) -> str:
        """Compare with the reference run; raise :class:`ReproductionError` when a number leaves its tolerance
        or a stable verdict changes. Returns a one-line report whose text does not depend on the machine."""
        st = self.reproduction_status()
        if not st["compared"]:
            return f"reproduction check: not compared ({st['why']})"
        if st["failures"]:
            raise ReproductionError(f"{self.chapter}: {len(st['failures'])} result(s) differ from the reference run "
                                    "beyond the measured tolerance:\n  " + "\n  ".join(st["failures"]))
        return (f"reproduction check: {st['n_numbers']} measured numbers within their measured tolerance of the "
                f"reference run; {st['n_verdicts']} verdicts among those of the measured machine variants")


def allowed_verdicts(ref: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per claim, the verdicts seen in the reference run and its kernel variants (canonical order)."""
    out: dict[str, set[str]] = {k: {v} for k, v in ref["verdicts"].items()}
    for name in ref.get("kernel_variants", ()):
        for k, v in ref["variants"].get(name, {}).get("verdicts", {}).items():
            out.setdefault(k, set()).add(v)
    return {k: sorted(v, key=VERDICTS.index) for k, v in out.items()}


def compare(measured: Mapping[str, float], verdicts: Mapping[str, str], ref: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers of ``measured`` against ``ref["reference"]`` ± ``ref["tolerance"]``; each verdict must be one
    that the reference run gave under a measured machine variant (:func:`allowed_verdicts`)."""
    failures = []
    n = 0
    for k, r in ref["reference"].items():
        if k not in measured:
            continue
        n += 1
        tol = ref["tolerance"][k]
        if not abs(measured[k] - r) <= tol + 1e-9:
            failures.append(f"{k}: {measured[k]:.4f}, reference {r:.4f} ± {tol:.4f}")
    allowed = allowed_verdicts(ref)
    nv = 0
    for k, v in verdicts.items():
        if k in allowed:
            nv += 1
            if v not in allowed[k]:
                failures.append(f"verdict {k}: {v!r}, the measured variants gave {' / '.join(allowed[k])}")
    return {"n_numbers": n, "n_verdicts": nv, "failures": failures}
