"""Compare two runs of the same recipe: did a code change alter what compress measures?

    python benchmarks/compare_runs.py BEFORE_RUN_DIR AFTER_RUN_DIR [--decimals 4] [--ratio-tol 0.10]

Quality and fidelity figures must agree to `--decimals` places (the same artifacts, the
same eval data: they are deterministic). Latency is compared as ratios against the run's
baseline candidate measured in the same run (absolute timings drift with the machine's
load): each candidate's p50 / baseline p50 must agree within `--ratio-tol` (relative).
Prints one line per figure and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import math
import sys

from compress.results import load_run


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def compare(before, after, decimals: int, ratio_tol: float,
            names: tuple[str, str] = ("before", "after")) -> tuple[list[str], int]:
    """A table (a header named after the two runs, then one line per figure) and how many
    figures differ."""
    lines, bad = [f"{'candidate':<28} {'figure':<22} {names[0]:>22} {names[1]:>22}"], 0
    b_rows = {r.candidate: r for r in before.candidates}
    a_rows = {r.candidate: r for r in after.candidates}
    if set(b_rows) != set(a_rows):
        return [*lines, f"candidates differ: {sorted(b_rows)} vs {sorted(a_rows)}"], 1
    base_b = {r.candidate: b_rows.get(r.baseline) for r in before.candidates}
    base_a = {r.candidate: a_rows.get(r.baseline) for r in after.candidates}
    for name in b_rows:
        b, a = b_rows[name], a_rows[name]
        for metric in sorted(set(b.quality) | set(b.fidelity) | set(a.quality)
                             | set(a.fidelity)):
            x, y = _num(b.value(metric)), _num(a.value(metric))
            same = x is not None and y is not None and round(x, decimals) == round(y, decimals)
            bad += not same
            lines.append(f"{name:<28} {metric:<22} {x!s:>22} {y!s:>22}  "
                         f"{'same' if same else 'DIFFERS'}")
        bb, ba = base_b[name], base_a[name]
        if bb is None or ba is None or bb.candidate == name:
            continue
        rb = b.latency_p50_ms / bb.latency_p50_ms if b.latency_p50_ms else None
        ra = a.latency_p50_ms / ba.latency_p50_ms if a.latency_p50_ms else None
        ok = rb is not None and ra is not None and abs(ra / rb - 1) <= ratio_tol
        bad += not ok
        lines.append(f"{name:<28} {'p50 / ' + bb.candidate + ' p50':<22} {rb:>22.4f} "
                     f"{ra:>22.4f}  {'within' if ok else 'OUTSIDE'} {ratio_tol:.0%} "
                     f"({ra / rb - 1:+.1%})")
    return lines, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--decimals", type=int, default=4)
    ap.add_argument("--ratio-tol", type=float, default=0.10)
    args = ap.parse_args()
    before, after = load_run(args.before), load_run(args.after)
    lines, bad = compare(before, after, args.decimals, args.ratio_tol)
    print("\n".join(lines))
    print(f"{bad} figure(s) differ" if bad else "all figures agree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
