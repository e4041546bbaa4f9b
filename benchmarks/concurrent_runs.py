"""Benchmark: two independent `compress run` processes on one cache, plus a prune loop.

Builds a tiny random BERT and tiny data offline (benchmarks/tiny_assets.py), then, for
each iteration, starts two `compress run` processes of the same recipe at once against
one cache directory, with a seed new to that iteration (so every stage is built again and
both processes contend for the same keys), while a third process loops
`compress cache --prune --keep-runs 2`. Every second iteration the second run passes
--force (it swaps in artifacts the first may be reading). After each iteration it counts:

The recipe is tiny on purpose (a 2-step fine-tune of a random 2-layer BERT, then an ONNX
export with ORT graph optimisation, whose scratch dir used to be deleted by another run's
cleanup): the point is the contention, not the models.

- corrupt artifacts: entries of the cache that fail `Store.verify()` (digests), plus run
  rows whose artifact exists but does not verify;
- tracebacks: any "Traceback" in the stderr of any process (runs and prunes);
- failed runs: a run that exited non-zero (prune exiting 1 while a run holds the cache is
  its expected refusal, counted separately).

    .venv/bin/python benchmarks/concurrent_runs.py [--iterations 20]

Expected (issue 15): 0 corrupt artifacts, 0 tracebacks, 0 failed runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.tiny_assets import (  # noqa: E402 - after the path setup
    build_bert,
    recipe_template,
    topic_rows,
    topic_vocab,
    write_csv,
)

SUITE = """\
name: tiny
task: text-classification
dataset: {{source: {test}, text_column: text, label_column: label}}
quality: {{max_length: 16, batch_size: 8}}
latency: {{batch_sizes: [1], seq_lens: [16], warmup: 1, iterations: 3, threads: 1}}
"""
RECIPE = recipe_template("tiny-concurrent", """\
pipeline:
  - id: teacher
    stage: finetune
    with: {{max_steps: 2, batch_size: 8, max_length: 16, lr: 1.0e-3}}
  - id: onnx
    stage: export
    with: {{optimize: O1}}
candidates: [teacher, onnx]
""", dev=False)


def build_assets(work: Path) -> Path:
    """A 2-layer, 32-wide random BERT, tiny CSVs, a suite and a recipe."""
    model = build_bert(work / "tiny-bert", topic_vocab(letters=False), hidden=32, layers=2,
                       intermediate=64, max_positions=64)
    rng = random.Random(0)
    for split, n in (("train", 24), ("test", 12)):
        write_csv(work / f"{split}.csv", topic_rows(n, rng, words=8))
    (work / "suite.yaml").write_text(SUITE.format(test=work / "test.csv"))
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=model, train=work / "train.csv"))
    return recipe


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "compress", *args]


def prune_loop(env: dict, stop: threading.Event, log: list) -> None:
    while not stop.is_set():
        proc = subprocess.run(cli("cache", "--prune", "--keep-runs", "2"), env=env,
                              capture_output=True, text=True)
        log.append((proc.returncode, proc.stderr))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()

    from compress.store import Store

    work = Path(tempfile.mkdtemp(prefix="compress-concurrent-"))
    recipe = build_assets(work)
    cache = work / "cache"
    env = {**os.environ, "COMPRESS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    totals = {"runs": 0, "failed_runs": 0, "tracebacks": 0, "corrupt_artifacts": 0,
              "corrupt_rows": 0, "prunes": 0, "prunes_refused": 0, "prunes_done": 0,
              "cache_warnings": 0}
    lines = []
    t_start = time.perf_counter()
    for it in range(args.iterations):
        stop, prunes = threading.Event(), []
        pruner = threading.Thread(target=prune_loop, args=(env, stop, prunes))
        pruner.start()
        procs = []
        for who in ("a", "b"):
            extra = ["--force"] if who == "b" and it % 2 else []
            procs.append(subprocess.Popen(
                cli("run", str(recipe), "--out", str(work / "runs" / f"{it:02d}{who}"),
                    "--set", f"seed={it}", *extra),
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [(p, *p.communicate()) for p in procs]
        stop.set()
        pruner.join()
        failed = sum(p.returncode != 0 for p, _, _ in outs)
        tracebacks = sum("Traceback" in err for _, _, err in outs)
        tracebacks += sum("Traceback" in err for _, err in prunes)
        warned = sum(err.count("unusable") for _, _, err in outs)
        verify = Store(cache, warn=lambda m: None).verify()
        corrupt = len(verify["artifacts_corrupt"])
        bad_rows = 0
        for who in ("a", "b"):
            res = work / "runs" / f"{it:02d}{who}" / "results.json"
            if not res.is_file():
                continue
            for row in json.loads(res.read_text())["candidates"]:
                path = Path(row.get("artifact_path") or "")
                if path.parent.name == "artifacts" and path.is_dir() \
                        and Store(cache, warn=lambda m: None).get(path.name) is None:
                    bad_rows += 1
        totals["runs"] += 2
        totals["failed_runs"] += failed
        totals["tracebacks"] += tracebacks
        totals["corrupt_artifacts"] += corrupt
        totals["corrupt_rows"] += bad_rows
        totals["cache_warnings"] += warned
        totals["prunes"] += len(prunes)
        totals["prunes_refused"] += sum(rc == 1 and "using the cache" in err
                                        for rc, err in prunes)
        totals["prunes_done"] += sum(rc == 0 for rc, _ in prunes)
        line = (f"iteration {it + 1:>2}: runs failed {failed}, tracebacks {tracebacks}, "
                f"corrupt artifacts {corrupt}, corrupt rows {bad_rows}, prunes {len(prunes)}"
                f"{' (b with --force)' if it % 2 else ''}")
        lines.append(line)
        print(line, flush=True)
        if args.out:  # after every iteration, so a stopped benchmark still records its count
            Path(args.out).write_text(report(args, lines, totals, it + 1, t_start))
        for p, _out, err in outs:
            if p.returncode != 0 or "Traceback" in err:
                print(err[-3000:], file=sys.stderr)
    text = report(args, lines, totals, args.iterations, t_start)
    print(text.split("\n# each iteration")[0])
    print("\n".join(text.strip().splitlines()[-3:]))
    if args.out:
        Path(args.out).write_text(text)
    return 0 if _ok(totals) else 1


def _ok(totals: dict) -> bool:
    return (totals["failed_runs"] == 0 and totals["tracebacks"] == 0
            and totals["corrupt_artifacts"] == 0 and totals["corrupt_rows"] == 0)


def report(args, lines: list[str], totals: dict, done: int, t_start: float) -> str:
    wall = time.perf_counter() - t_start
    head = [f"# benchmarks/concurrent_runs.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"{platform.node()} ({os.cpu_count()} cores, no GPU, load average "
            f"{os.getloadavg()[0]:.1f})",
            f"# command: .venv/bin/python benchmarks/concurrent_runs.py --iterations "
            f"{args.iterations}",
            "# each iteration: two `compress run` processes of one tiny recipe (new seed, so "
            "every stage is rebuilt and both contend for the same keys; every 2nd iteration "
            "the second passes --force) on one cache, plus a `compress cache --prune "
            "--keep-runs 2` loop"]
    summary = [f"iterations done: {done} of {args.iterations}",
               f"totals: {json.dumps(totals)}", f"wall: {wall:.0f} s",
               "expected: 0 failed runs, 0 tracebacks, 0 corrupt artifacts -> "
               + ("met" if _ok(totals) and done == args.iterations else
                  "met so far" if _ok(totals) else "NOT met")]
    return "\n".join(head + lines + summary) + "\n"


if __name__ == "__main__":
    sys.exit(main())
