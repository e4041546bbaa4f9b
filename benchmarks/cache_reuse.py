"""Benchmark: how much of a re-run the cache saves.

Runs the demo recipe three times against one fresh cache directory:
  run 1 builds everything; run 2 repeats it; run 3 changes one setting of the last stage.
Prints, from each run's manifest, the stage executions and measurements, and each later
run's wall time (whole `compress run` process) as a fraction of the first's.

    .venv/bin/python benchmarks/cache_reuse.py [--recipe R] [--set key=value ...]

Expected: run 2 executes 0 stages and 0 measurements in under 0.1 of run 1's time; run 3
rebuilds and re-measures only the changed last stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "demo-bbc-news.yaml"))
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="override for all three runs (e.g. to shrink them)")
    ap.add_argument("--change", default="pipeline.int8.with.per_channel=true",
                    help="the last-stage setting run 3 changes")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="compress-bench-"))
    env = {**os.environ, "COMPRESS_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    runs = [("1: build", []), ("2: repeat", []), ("3: change last stage", [args.change])]
    rows = []
    for i, (label, extra) in enumerate(runs, 1):
        sets = [x for s in args.sets + extra for x in ("--set", s)]
        cmd = [sys.executable, "-m", "compress", "run", args.recipe, "--out",
               str(work / f"run{i}"), *sets]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        manifest = json.loads((work / f"run{i}" / "manifest.json").read_text())
        rows.append((label, manifest["stats"], wall))

    first = rows[0][2]
    print(f"recipe: {args.recipe}\ncache: {work / 'cache'} (fresh)")
    print(f"{'run':<24}{'stages run':>11}{'cached':>8}{'measured':>10}{'cached':>8}"
          f"{'wall s':>9}{'vs run 1':>10}")
    for label, s, wall in rows:
        print(f"{label:<24}{s['stage_executions']:>11}{s['stage_cache_hits']:>8}"
              f"{s['measurements']:>10}{s['measurement_cache_hits']:>8}{wall:>9.1f}"
              f"{wall / first:>10.3f}")
    ok = (rows[1][1]["stage_executions"] == 0 and rows[1][1]["measurements"] == 0
          and rows[1][2] / first < 0.1 and rows[2][1]["stage_executions"] == 1
          and rows[2][1]["measurements"] == 1)
    print("expected: run 2 executes 0 stages, 0 measurements, < 0.1 of run 1; run 3 rebuilds "
          f"and re-measures only the last stage -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
