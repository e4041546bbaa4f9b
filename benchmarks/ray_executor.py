"""`--executor ray` against the local executor: same results, wall time, parallel builds.

    python benchmarks/ray_executor.py LOCAL_RUN_DIR RAY_RUN_DIR [--decimals 4] [--ratio-tol 0.15]

Both runs are of the same recipe and overrides, each with a cold cache of its own (see
benchmarks/results/ray_executor-*.txt for the commands). Checks: the same candidates and
cache keys (the manifests' plans); quality and fidelity to `--decimals` places and latency
ratios against the baseline within `--ratio-tol` (benchmarks/compare_runs.py); the wall
time ratio (ray / local, the issue asks for at most 1.25); and the Ray run's build timeline
(`manifest.json` builds: host, start, finish), with the most builds running at once.
Exits 1 if the results differ.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_runs import compare  # noqa: E402

from compress.results import load_run  # noqa: E402


def timeline(builds: list[dict]) -> tuple[list[str], int]:
    """One line per build (offsets from the first start, a bar), and the peak overlap."""
    if not builds:
        return ["(no builds: everything was cached)"], 0
    spans = [(datetime.fromisoformat(b["started"]), datetime.fromisoformat(b["finished"]), b)
             for b in builds]
    t0 = min(s for s, _, _ in spans)
    end = max(f for _, f, _ in spans)
    total = max((end - t0).total_seconds(), 1e-9)
    width = 50
    lines = []
    for s, f, b in sorted(spans, key=lambda x: x[0]):
        a, z = (s - t0).total_seconds(), (f - t0).total_seconds()
        i, j = int(a / total * width), max(int(a / total * width) + 1, int(z / total * width))
        bar = " " * i + "#" * (j - i) + " " * (width - j)
        lines.append(f"{b['step']:<20} {b['key'][:8]} {a:8.1f} {z:8.1f}  |{bar}|  {b['host']}")
    events = sorted([(s, 1) for s, _, _ in spans] + [(f, -1) for _, f, _ in spans],
                    key=lambda e: (e[0], e[1]))
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return lines, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("local")
    ap.add_argument("ray")
    ap.add_argument("--decimals", type=int, default=4)
    ap.add_argument("--ratio-tol", type=float, default=0.15)
    args = ap.parse_args()
    local, ray = load_run(args.local), load_run(args.ray)
    bad = 0
    same_plan = local.manifest["plan"] == ray.manifest["plan"]
    bad += not same_plan
    print(f"candidates and cache keys (manifest plan): {'same' if same_plan else 'DIFFER'}")
    lines, n = compare(local, ray, args.decimals, args.ratio_tol, names=("local", "ray"))
    bad += n
    print("\n".join(lines))
    wl, wr = local.manifest["wall_time_s"], ray.manifest["wall_time_s"]
    print(f"\nwall time: local {wl:.1f} s ({local.manifest.get('executor')}), ray {wr:.1f} s "
          f"({ray.manifest.get('executor')}): ray / local = {wr / wl:.3f} "
          f"({'within' if wr / wl <= 1.25 else 'OVER'} 1.25)")
    for name, run in (("local", local), ("ray", ray)):
        s = run.stats
        print(f"{name}: {s['stage_executions']} builds, {s['stage_cache_hits']} cached, "
              f"{s['measurements']} measurements")
    for name, run in (("local", local), ("ray", ray)):
        lines, peak = timeline(run.manifest.get("builds") or [])
        print(f"\n{name} build timeline (s from the first build's start; at most {peak} "
              "at once):")
        print("\n".join(lines))
    print(f"\n{bad} check(s) differ" if bad else "\nall results agree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
