"""Benchmark: are latency measurements stable enough to compare variants?

Builds (or takes from the cache) an ONNX fp32 model and its ONNX Runtime INT8 version, then
measures each twice, interleaved (fp32, int8, fp32, int8), every measurement in its own
fresh process with the suite's pinned threads. Prints:
  - per artifact, the ratio of its two p50s (expected within 15% with 1 thread);
  - the INT8/fp32 speed ratio of each repeat, and how far the two agree (expected 10%);
  - the inference-memory delta of each (INT8 expected clearly below fp32).

    .venv/bin/python benchmarks/measure_stability.py [--recipe R] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from compress.engine import import_peak, run_recipe
    from compress.measure.runner import eval_payload, measure
    from compress.store import Store

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "minilm-embeddings.yaml"))
    ap.add_argument("--fp32", default="onnx", help="candidate measured as fp32")
    ap.add_argument("--int8", default="int8", help="candidate measured as INT8")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    # build only what is compared (and the baseline), not the whole recipe
    args.sets = [f"candidates=[{args.fp32},{args.int8}]", *args.sets]

    work = Path(tempfile.mkdtemp(prefix="compress-stability-"))
    run = run_recipe(args.recipe, out_dir=work / "run", cache_dir=args.cache_dir,
                     overrides=args.sets)
    from compress.engine import prepare

    plan = prepare(args.recipe, args.sets)
    store = Store(args.cache_dir)
    by_name = {c.name: store.get(c.node.key) for c in plan.candidates}
    arts = {"fp32": by_name[args.fp32], "int8": by_name[args.int8]}
    payload = eval_payload(plan.suite.task, plan.eval_data, plan.suite.dataset)
    lat = plan.suite.latency
    results: dict[str, list[dict]] = {"fp32": [], "int8": []}
    for repeat in (1, 2):
        for name in ("fp32", "int8"):
            res = measure(arts[name], plan.suite, payload, None, None)
            base, _ = import_peak(store, arts[name].kind.runtime, lat.threads, False)
            results[name].append({"p50": res["latency"][0]["p50_ms"],
                                  "p95": res["latency"][0]["p95_ms"],
                                  "delta_mb": (res["memory"]["peak_rss_bytes"] - base) / 1e6})
            print(f"repeat {repeat} {name}: p50 {results[name][-1]['p50']:.2f} ms, "
                  f"p95 {results[name][-1]['p95']:.2f} ms, "
                  f"inference memory delta {results[name][-1]['delta_mb']:.0f} MB",
                  flush=True)

    print(f"\nrecipe {args.recipe}: {args.fp32} (fp32) vs {args.int8} (INT8); batch "
          f"{lat.batch_sizes[0]}, {lat.seq_lens[0]} tokens, {lat.threads} thread(s), "
          f"{lat.iterations} iterations, each measurement in a fresh process")
    ok = True
    for name in ("fp32", "int8"):
        a, b = (r["p50"] for r in results[name])
        ratio = max(a, b) / min(a, b)
        ok &= ratio <= 1.15
        print(f"{name}: p50 repeat ratio {ratio:.3f} (target <= 1.15)")
    speed = [results["fp32"][i]["p50"] / results["int8"][i]["p50"] for i in (0, 1)]
    agree = max(speed) / min(speed)
    ok &= agree <= 1.10
    print(f"INT8 speed-up over fp32: {speed[0]:.2f}x, {speed[1]:.2f}x; agreement "
          f"{agree:.3f} (target <= 1.10)")
    mem = [sum(r["delta_mb"] for r in results[n]) / 2 for n in ("fp32", "int8")]
    print(f"inference memory delta: fp32 {mem[0]:.0f} MB, INT8 {mem[1]:.0f} MB")
    print(f"run dir of the build: {run.path}")
    print("targets " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
