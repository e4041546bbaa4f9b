"""Benchmark: what each compression technique buys on the BBC News demo.

Runs recipes/bbc-news-full.yaml (fine-tuned MiniLM teacher; distilled 3- and 2-layer
students; FFN-pruned models with recovery; quantization through several backends; ONNX
export with graph optimisation) and prints one table: for each candidate its accuracy on the
full held-out test split and its recovery ratio versus the teacher, latency at batch 1 and
the speed-up versus the PyTorch fp32 teacher measured in the same run, size and size ratio.

Fixed conditions (from eval/bbc-news.yaml): batch 1, 128 tokens padded, 1 thread; the
teacher runs under torch.inference_mode(); every candidate is timed in its own process.

    .venv/bin/python benchmarks/stages.py [--cache-dir DIR] [--set key=value ...]

Targets (issue 4): the best candidate keeping >= 99% of the teacher's accuracy is >= 4x
faster than the teacher; a 3-layer student keeps >= 97%; the best ORT INT8 candidate loses
at most 1 point of accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from compress.engine import run_recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "bbc-news-full.yaml"))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--remeasure", action="store_true", help="measure again (builds stay "
                                                            "cached)")
    args = ap.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="compress-stages-")) / "run"
    run = run_recipe(args.recipe, out_dir=out, cache_dir=args.cache_dir, overrides=args.sets,
                     remeasure=args.remeasure)
    s = run.summary()
    teacher = s[s["role"].eq("baseline") | s["candidate"].eq(s["baseline"])].iloc[0]
    ok_rows = s[s["status"] == "ok"].copy()
    ok_rows["recovery"] = ok_rows["accuracy"] / teacher["accuracy"]
    ok_rows["speedup"] = teacher["latency_p50_ms"] / ok_rows["latency_p50_ms"]
    ok_rows["size_ratio"] = ok_rows["size_mb"] / teacher["size_mb"]

    print(f"recipe {args.recipe}; run dir {run.path}")
    print(f"teacher {teacher['candidate']}: accuracy {teacher['accuracy']:.4f} on "
          f"{int(teacher['n_eval'])} held-out articles, p50 {teacher['latency_p50_ms']:.2f} ms "
          f"(PyTorch fp32, inference_mode), {teacher['size_mb']:.1f} MB")
    print(f"{'candidate':<50}{'kind':<18}{'acc':>7}{'recov':>7}{'p50 ms':>8}{'speedup':>9}"
          f"{'MB':>7}{'size':>7}")
    for _, r in ok_rows.sort_values("speedup").iterrows():
        print(f"{r['candidate']:<50.50}{r['kind']:<18}{r['accuracy']:>7.4f}{r['recovery']:>7.3f}"
              f"{r['latency_p50_ms']:>8.2f}{r['speedup']:>8.2f}x{r['size_mb']:>7.1f}"
              f"{r['size_ratio']:>7.3f}")
    for _, r in s[s["status"] != "ok"].iterrows():
        print(f"{r['candidate']:<50.50} FAILED: {r['error']}")

    keep = ok_rows[ok_rows["recovery"] >= 0.99]
    best = keep.sort_values("speedup").iloc[-1]
    t1 = best["speedup"] >= 4
    students = ok_rows[ok_rows["candidate"].str.contains("keep_layers=\\[0,2,4\\]")
                       & ok_rows["kind"].eq("pytorch")]
    t2 = bool(len(students)) and students["recovery"].max() >= 0.97
    ort_int8 = ok_rows[ok_rows["kind"].eq("onnx-quantized")]
    best_int8 = ort_int8.sort_values("accuracy").iloc[-1] if len(ort_int8) else None
    t3 = best_int8 is not None and teacher["accuracy"] - best_int8["accuracy"] <= 0.01
    print(f"\nbest candidate keeping >= 99% of the teacher's accuracy: {best['candidate']} "
          f"({best['recovery']:.3f}), {best['speedup']:.2f}x faster -> target 4x "
          f"{'met' if t1 else 'NOT met'}")
    if len(students):
        st = students.sort_values("recovery").iloc[-1]
        print(f"3-layer student {st['candidate']}: recovery {st['recovery']:.3f} -> target "
              f"0.97 {'met' if t2 else 'NOT met'}")
    else:
        print("3-layer student: not in the run -> target NOT met")
    if best_int8 is not None:
        drop = 100 * (teacher["accuracy"] - best_int8["accuracy"])
        print(f"best ORT INT8 candidate {best_int8['candidate']}: accuracy "
              f"{best_int8['accuracy']:.4f}, {drop:+.1f} points below the teacher -> target "
              f"<= 1 point {'met' if t3 else 'NOT met'}")
    return 0 if t1 and t2 and t3 else 1


if __name__ == "__main__":
    sys.exit(main())
