"""Re-check the surviving mutants of a finished mutmut run against the tests as they are now.

    .venv/bin/python tools/recheck_mutants.py _build/mutation/attacks.ffa [--names NAME ...] [--tests FILE ...]

A full ``make mutation-<module>`` run takes 10-80 minutes on two cores. After tests were written for its survivors,
this script re-applies only those mutants (``mutmut show NAME`` in the run's folder gives each one's diff) to a
scratch copy of the working tree, one at a time, and runs the run's test files (their current versions from
``tests/``) with ``pytest -x``. A mutant is *killed* when pytest reports a failing test (exit status 1) or runs past
``--timeout`` (mutmut's convention). The unmutated copy must pass the same tests first. The diff is applied inside
the mutated function only (its span found with ``ast``), and the lines it replaces must occur there exactly once, so a
mutant that no longer fits the code is reported as ``stale`` rather than silently counted.

Prints one line per mutant and the module's score with the re-checked survivors:
``killed / mutants = (killed in the run + killed now) / mutants in the run``. Exit status 0 when no mutant survived.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from known_mutants import checked_scratch_copy, pytest  # noqa: E402

MUTMUT = Path(sys.executable).with_name("mutmut")
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x(?:ǁ(?P<cls>\w+)ǁ|_)(?P<func>\w+?)__mutmut_\d+$")


def parse_results(run_dir: Path) -> dict[str, str]:
    """``results.txt`` of a run (``mutmut results --all true``): mutant name -> status."""
    out = {}
    for line in (run_dir / "results.txt").read_text(encoding="utf-8").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            out[name] = status
    return out


def mutant_diff(run_dir: Path, name: str) -> tuple[str, list[tuple[str, str]]]:
    """(file, hunk) of one mutant from ``mutmut show``: the hunk's lines as (tag, text), tag one of " ", "-", "+",
    text as mutmut prints the function (dedented by the function's own indent, string contents as they are)."""
    p = subprocess.run([str(MUTMUT), "show", name], cwd=run_dir, capture_output=True, text=True, check=True)
    lines = p.stdout.splitlines()
    file = next(ln[4:].strip() for ln in lines if ln.startswith("--- "))
    body = lines[next(i for i, ln in enumerate(lines) if ln.startswith("@@")) + 1:]
    return file, [(ln[:1], ln[1:]) for ln in body if ln[:1] in (" ", "-", "+")]


def function_span(tree: ast.Module, cls: str | None, func: str) -> tuple[int, int, int]:
    """(first line, last line, indent) of ``func`` (a method of ``cls`` when given), 1-based inclusive."""
    scope = tree.body
    if cls:
        scope = next(n for n in scope if isinstance(n, ast.ClassDef) and n.name == cls).body
    node = next(n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func)
    return node.lineno, node.end_lineno, node.col_offset


def apply_mutant(root: Path, run_dir: Path, name: str) -> tuple[Path, str] | str:
    """Apply ``name`` to the copy at ``root``; returns (path, original text) to restore, or a reason it is stale.

    The hunk's context and removed lines are matched line by line (ignoring indentation) inside the mutated
    function, where they must occur exactly once; added lines get the function's indent back."""
    m = NAME.match(name)
    if not m:
        return f"unparsed mutant name {name!r}"
    file, hunk = mutant_diff(run_dir, name)
    path = root / file
    text = path.read_text(encoding="utf-8")
    try:
        first, last, indent = function_span(ast.parse(text), m["cls"], m["func"])
    except StopIteration:
        return f"{m['cls'] or ''}.{m['func']} not found in {file}"
    lines = text.splitlines(keepends=True)
    span = [ln.strip() for ln in lines[first - 1:last]]
    old = [s.strip() for tag, s in hunk if tag in (" ", "-")]
    starts = [i for i in range(len(span) - len(old) + 1) if span[i:i + len(old)] == old]
    if len(starts) != 1:
        return f"the mutated lines occur {len(starts)} times in {m['func']} (expected once)"
    j = first - 1 + starts[0]
    out = lines[:j]
    for tag, s in hunk:
        if tag == " ":
            out.append(lines[j])
        if tag in (" ", "-"):
            j += 1
        if tag == "+":
            out.append(" " * indent + s + "\n")
    path.write_text("".join(out + lines[j:]), encoding="utf-8")
    return path, text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a finished run's folder, e.g. _build/mutation/attacks.ffa")
    ap.add_argument("--names", nargs="*", help="mutants to re-check (default: every survivor of the run)")
    ap.add_argument("--tests", nargs="*", help="test files (default: those the run used, from tests/)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant before it counts as killed")
    args = ap.parse_args(argv)
    run_dir = args.run_dir.resolve()
    os.environ.setdefault("FACELAB_HYPOTHESIS_PROFILE", "mutation")  # as in `make mutation`
    results = parse_results(run_dir)
    names = args.names or [n for n, s in results.items() if s in ("survived", "no tests")]
    tests = tuple(args.tests or sorted(f"tests/{p.name}" for p in (run_dir / "tests").glob("test_*.py")))

    with tempfile.TemporaryDirectory(prefix="recheck-mutants-") as tmp:
        root = Path(tmp)
        checked_scratch_copy(root)
        rc, t, tail = pytest(root, tests)
        if rc != 0:
            print(f"the unmutated tests do not pass (pytest exit {rc}): {tail}")
            return 2
        status = {}
        for name in names:
            applied = apply_mutant(root, run_dir, name)
            if isinstance(applied, str):
                status[name] = "stale"
                print(f"{name}: stale ({applied})", flush=True)
                continue
            path, original = applied
            try:
                rc, t, tail = pytest(root, tests, timeout=args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            status[name] = "killed" if rc in (1, "timeout") else "survived" if rc == 0 else f"exit {rc}"
            print(f"{name}: {status[name]} ({t:.0f} s) :: {tail}", flush=True)

    before = sum(s in ("killed", "timeout") for s in results.values())
    now = sum(s == "killed" for s in status.values())
    left = [n for n, s in status.items() if s != "killed"]
    n = len(results)
    print(f"re-checked {len(names)}: {now} killed now, {len(left)} not")
    print(f"score: ({before} + {now}) / {n} = {100 * (before + now) / max(n, 1):.1f} %")
    for name in left:
        print(f"  not killed: {name} ({status[name]})")
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
