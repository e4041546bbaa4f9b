"""compress against what users would pick instead, on the demo teacher (encoder part of
issue 18): one process, threads pinned to 1, interleaved timing rounds, the CPU recorded.

Flows (batch 1, 128 tokens padded, as served):
- pytorch-fp32: the fine-tuned teacher in eager PyTorch;
- optimum-ort-int8: optimum's ONNX Runtime dynamic INT8 with its default config for this
  CPU (`AutoQuantizationConfig.<isa>(is_static=False)`; the ISA compress detects: avx512_vnni,
  avx2 or arm64), on the run's ONNX export;
- openvino-nncf-default: OpenVINO + NNCF's default post-training INT8 (`nncf.quantize`,
  model_type transformer, 300 training articles), compiled at OpenVINO's own default
  precision (recorded);
- every candidate of the compress runs given (`--compress-run`), timed here beside them;
  the best same-architecture one (no distill or prune in its chain) and the best overall
  within the suite's max_drop (upper bound of the paired 95% interval on the accuracy drop)
  are reported.

Accuracy is on the 445-article test split, with Wilson intervals and paired-bootstrap 95%
intervals on the change against the teacher.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/peers.py --teacher-run RUN_DIR \
        [--compress-run RUN_DIR ...] [--rounds 30] [--max-slowdown 3] \
        [--out benchmarks/results/peers-DATE.txt]

RUN_DIR is a `compress run recipes/demo-bbc-news.yaml --out RUN_DIR` (its teacher and its
ONNX export are used); `--compress-run` takes runs of recipes/bbc-news-full.yaml too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQ = 128
DIST = ("distill", "prune")


def candidates(run_dir: Path) -> list[dict]:
    """ok candidates of a compress run: name, kind, artifact, whether same-architecture."""
    rows = json.loads((run_dir / "results.json").read_text())["candidates"]
    plan = json.loads((run_dir / "manifest.json").read_text())["plan"]
    nodes = {n["key"]: n for n in plan["nodes"]}

    def chain(key):
        while key in nodes:
            yield nodes[key]
            key = nodes[key]["parent"]

    recipe = json.loads((run_dir / "manifest.json").read_text())["recipe"].get("name",
                                                                             run_dir.name)
    out = []
    for r in rows:
        if r.get("status") != "ok" or not r.get("artifact_path"):
            continue
        stages = [n["stage"] for n in chain(r["artifact_key"])] if r["artifact_key"] in nodes \
            else []
        out.append({"name": f"{recipe}:{r['candidate']}", "kind": r["kind"],
                    "path": r["artifact_path"], "same_arch": not set(stages) & set(DIST),
                    "baseline": r.get("baseline") == r["candidate"],
                    "run_p50": r.get("latency_p50_ms")})
    base_p50 = next((c["run_p50"] for c in out if c["baseline"]), None)
    for c in out:
        c["run_ratio"] = (c["run_p50"] / base_p50) if c["run_p50"] and base_p50 else None
    return out


def too_slow(cands: list[dict], max_slowdown: float) -> tuple[list[dict], list[str]]:
    """Drop candidates whose own run measured them more than `max_slowdown` x slower than
    its baseline: they cannot be the fastest, and scoring 445 articles through one (e.g.
    torchao's dynamic INT8 at ~1.3 s per article here) would take longer than the rest."""
    keep, skipped = [], []
    for c in cands:
        if c.get("run_ratio") and c["run_ratio"] > max_slowdown:
            skipped.append(f"{c['name']} (its run measured {c['run_ratio']:.1f}x the baseline's "
                           f"p50)")
        else:
            keep.append(c)
    return keep, skipped


# compress's own nncf-int8 backend on the teacher's ONNX export: same architecture, tuned
VARIANTS = {
    "compress nncf-int8 (defaults)": {"backend": "nncf-int8"},
    "compress nncf-int8 performance, no SmoothQuant": {
        "backend": "nncf-int8", "preset": "performance", "smooth_quant_alpha": -1},
}


def compress_quantize(onnx_dir: Path, out: Path, settings: dict, texts: list[str]) -> Path:
    """Build one quantize step with compress's stage, as the engine would."""
    import pandas as pd

    from compress.artifacts import Artifact
    from compress.stages.base import StageContext, get_stage

    stage = get_stage("quantize")
    config = stage.resolve(stage.parse_config({**settings, "subset_size": len(texts)}))
    ctx = StageContext(task="text-classification", seed=0,
                       data={"calibration": pd.DataFrame({"text": texts})},
                       columns={"calibration": ("text", None)})
    source = Artifact.read(onnx_dir)
    out.mkdir(parents=True)
    stage.run(ctx, source, config, out)
    return out


def artifact(path: Path) -> dict:
    """A compress store artifact given by its directory; same-architecture unless a
    distill or prune step is among its ancestors (read from the store's metadata)."""
    stages, p = [], path
    while (p / "compress-artifact.json").is_file():
        meta = json.loads((p / "compress-artifact.json").read_text())
        stages.append(meta.get("stage"))
        p = p.parent / str(meta.get("parent"))
    meta = json.loads((path / "compress-artifact.json").read_text())
    return {"name": f"{meta.get('step')} ({meta.get('stage')} "
                    f"{(meta.get('config') or {}).get('backend', '')})".replace(" )", ")"),
            "kind": meta["kind"], "path": str(path), "role": "candidate",
            "same_arch": not set(stages) & set(DIST)}


def optimum_int8(onnx_dir: Path, out: Path) -> tuple[Path, str]:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from compress.stages.common import copy_side_files
    from compress.stages.quantize import detect_isa

    isa = detect_isa()
    q = ORTQuantizer.from_pretrained(onnx_dir, file_name="model.onnx")
    q.quantize(quantization_config=getattr(AutoQuantizationConfig, isa)(is_static=False),
               save_dir=out, file_suffix=None)
    copy_side_files(onnx_dir, out)
    return out, isa


def nncf_default(onnx_dir: Path, out: Path, texts: list[str]) -> Path:
    import nncf
    import openvino as ov

    from compress.encoding import Encoder
    from compress.stages.common import copy_side_files

    model = ov.Core().read_model(str(onnx_dir / "model.onnx"))
    names = {i.any_name for i in model.inputs}
    enc = Encoder(onnx_dir)
    data = [{k: v for k, v in enc([t], SEQ, pad_to_max=True).items() if k in names}
            for t in texts]
    q = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                      subset_size=len(data))
    ov.save_model(q, str(out / "openvino_model.xml"))
    copy_side_files(onnx_dir, out)
    return out


class OvDefault:
    """OpenVINO as a user would compile it: threads pinned, the plugin's default precision."""

    def __init__(self, path: Path):
        import openvino as ov

        c = ov.Core().compile_model(str(path / "openvino_model.xml"), "CPU",
                                    {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                     "PERFORMANCE_HINT": "LATENCY"})
        from compress.openvino import precision_name

        self.precision = precision_name(c.get_property("INFERENCE_PRECISION_HINT"))
        self.inputs = {i.any_name for i in c.inputs}
        self.req, self.out = c.create_infer_request(), c.output(0)

    def __call__(self, feeds):
        return self.req.infer({k: v for k, v in feeds.items() if k in self.inputs})[self.out]


def score(run, enc, texts, gold, id2label) -> np.ndarray:
    """Correct (bool per article), batch 1 padded to SEQ: as served and timed."""
    pred = [id2label[str(int(np.asarray(run(enc([t], SEQ, pad_to_max=True))).argmax()))]
            for t in texts]
    return np.array([p == g for p, g in zip(pred, gold, strict=True)])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher-run", type=Path, help="a demo-bbc-news run directory")
    ap.add_argument("--teacher", type=Path, help="or: the teacher's artifact directory")
    ap.add_argument("--onnx", type=Path, help="and its ONNX export's artifact directory")
    ap.add_argument("--compress-run", type=Path, action="append", default=[])
    ap.add_argument("--candidate", type=Path, action="append", default=[],
                    help="a compress artifact directory to compare (repeatable)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--calibration", type=int, default=300)
    ap.add_argument("--limit", type=int, default=None, help="score only N test articles")
    ap.add_argument("--max-slowdown", type=float, default=3.0,
                    help="skip run candidates measured (in their own run) more than this "
                         "many times slower than their baseline")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from compress import stats
    from compress.data import demo_splits
    from compress.encoding import Encoder
    from compress.measure.runners import make_runner
    from compress.provenance import cpu_model
    from compress.suite import load_suite

    suite, _ = load_suite(ROOT / "eval" / "bbc-news.yaml")
    max_drop = suite.targets.max_drop
    splits = demo_splits("bbc-news")
    test = splits["test"][: args.limit] if args.limit else splits["test"]
    texts, gold = test["text"].astype(str).tolist(), test["label"].astype(str).tolist()
    calib = splits["train"]["text"].astype(str).tolist()[: args.calibration]
    if args.teacher_run:
        demo = candidates(args.teacher_run)
        teacher = next(c for c in demo if c["baseline"])
        onnx = next(c for c in demo if c["kind"] == "onnx")
    else:
        teacher, onnx = {"path": str(args.teacher)}, {"path": str(args.onnx)}
    tmp = Path(tempfile.mkdtemp(prefix="peers-"))
    lat = {"threads": 1, "device": "cpu", "openvino_precision": "fp32"}
    flows = {"pytorch-fp32": make_runner(teacher["path"], "pytorch", suite.task, lat)}
    ort_dir, isa = optimum_int8(Path(onnx["path"]), tmp / "ort")
    flows[f"optimum-ort-int8 ({isa})"] = make_runner(str(ort_dir), "onnx-quantized",
                                                     suite.task, lat)
    t0 = time.perf_counter()
    nncf_dir = nncf_default(Path(onnx["path"]), tmp / "nncf", calib)
    nncf_s = time.perf_counter() - t0
    ov_default = OvDefault(nncf_dir)
    flows["openvino-nncf-default"] = ov_default
    ours, skipped = too_slow([c for r in args.compress_run for c in candidates(r)
                              if not c["baseline"]], args.max_slowdown)
    ours += [artifact(d) for d in args.candidate]
    for i, (name, settings) in enumerate(VARIANTS.items()):
        path = compress_quantize(Path(onnx["path"]), tmp / f"v{i}", settings, calib)
        ours.append({"name": name, "kind": "openvino", "path": str(path), "same_arch": True,
                     "role": "candidate"})
    for c in ours:
        flows[c["name"]] = make_runner(c["path"], c["kind"], suite.task, lat)
    enc = Encoder(teacher["path"])
    id2label = json.loads((Path(teacher["path"]) / "config.json").read_text())["id2label"]
    correct = {n: score(r, enc, texts, gold, id2label) for n, r in flows.items()}
    feeds = enc([texts[0]], SEQ, pad_to_max=True)
    ms = {n: [] for n in flows}
    order = list(flows)
    rng = random.Random(0)
    for r in flows.values():  # warm up
        for _ in range(3):
            r(feeds)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for n in order:
            for _ in range(args.per_round):
                t = time.perf_counter_ns()
                flows[n](feeds)
                ms[n].append((time.perf_counter_ns() - t) / 1e6)
    base = correct["pytorch-fp32"]
    n_art = args.n_articles = len(base)
    rows = []
    for n in flows:
        c = correct[n]
        w = stats.wilson(int(c.sum()), n_art)
        d = stats.bootstrap(lambda i, c=c: float(c[i].mean() - base[i].mean()), n_art,
                            method="paired-bootstrap")
        rows.append({"flow": n, "p50": float(np.median(ms[n])), "acc": float(c.mean()),
                     "acc_lo": w.low, "acc_hi": w.high, "delta": float(c.mean() - base.mean()),
                     "d_lo": d.low, "d_hi": d.high})
    by = {r["flow"]: r for r in rows}
    pt, ovd = by["pytorch-fp32"]["p50"], by["openvino-nncf-default"]["p50"]
    ok = [c for c in ours if -by[c["name"]]["d_lo"] <= max_drop]  # drop's upper bound
    same = [c for c in ok if c["same_arch"] and -by[c["name"]]["d_lo"] <= 0.01]
    best_same = min(same, key=lambda c: by[c["name"]]["p50"], default=None)
    best_all = min(ok, key=lambda c: by[c["name"]]["p50"], default=None)
    lines = report(rows, pt, ovd, best_same, best_all, by, max_drop, args, isa, nncf_s,
                   ov_default.precision, cpu_model())
    if skipped:
        lines.append(f"skipped (--max-slowdown {args.max_slowdown:g}): " + "; ".join(skipped))
    text = "\n".join(lines)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def report(rows, pt, ovd, best_same, best_all, by, max_drop, args, isa, nncf_s, ov_prec,
           cpu) -> list[str]:
    load = os.getloadavg()
    cmd = " ".join(["HF_HUB_OFFLINE=1", ".venv/bin/python", "benchmarks/peers.py"]
                   + sys.argv[1:])
    out = [f"# benchmarks/peers.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
           f"# command: {cmd}",
           f"# machine: {cpu}, {os.cpu_count()} CPUs; load average at the end "
           f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (the machine was "
           f"{'LOADED by other work: ratios are indicative' if load[0] > 1.5 else 'quiet'})",
           f"# batch 1, {SEQ} tokens padded, 1 thread, {args.rounds} interleaved rounds x "
           f"{args.per_round} calls; accuracy on {args.n_articles} test articles, 95% "
           "intervals (Wilson; paired bootstrap for the change vs the teacher)",
           f"# optimum config: AutoQuantizationConfig.{isa}(is_static=False) (this CPU's ISA);"
           f" NNCF default INT8: {args.calibration} training articles, {nncf_s:.0f} s; "
           f"OpenVINO default precision here: {ov_prec}", "",
           f"{'flow':<50} {'p50 ms':>8} {'vs pt':>7} {'vs ov':>7}  {'accuracy':<22} "
           f"{'Δ vs teacher (paired)':<24}"]
    for r in sorted(rows, key=lambda r: r["p50"]):
        out.append(f"{r['flow']:<50} {r['p50']:8.2f} {pt / r['p50']:6.2f}x "
                   f"{ovd / r['p50']:6.2f}x  {r['acc']:.4f} [{r['acc_lo']:.3f}, "
                   f"{r['acc_hi']:.3f}]  {r['delta']:+.4f} [{r['d_lo']:+.3f}, {r['d_hi']:+.3f}]")
    out.append("")
    for label, c, ref, goal, name in (
            ("best same-architecture (drop upper bound <= 1 point)", best_same, ovd, 1.1,
             "OpenVINO+NNCF default"),
            (f"best overall within max_drop {max_drop:g} (paired)", best_all, pt, 12.0,
             "PyTorch fp32")):
        if c is None:
            out.append(f"{label}: none qualifies -> target NOT met")
            continue
        ratio = ref / by[c["name"]]["p50"]
        out.append(f"{label}: {c['name']} at {ratio:.2f}x vs {name} "
                   f"(target >= {goal:g}x: {'met' if ratio >= goal else 'NOT met'})")
    return out


if __name__ == "__main__":
    sys.exit(main())
