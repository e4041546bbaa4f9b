"""SmolLM2 side by side: perplexity (with its interval, and the ratio to fp32 with a paired
interval) and decode ms per token, for the ONNX flows a user would pick.

    nice -n 15 .venv/bin/python benchmarks/peers_llm.py [--cache-dir DIR] [--rounds N]

Every flow is a step of recipes/smollm2-causal-lm.yaml (the single source of their
settings), built through compress's engine into the cache (reused when already there):

- fp32 ONNX (`onnx`);
- ORT dynamic INT8 as ORT defaults it (`ort-int8`) and the LLM config (`ort-int8-llm`:
  per-channel, weight matmuls only, lm_head in float);
- ORT INT4 round-to-nearest at the GGUF's Q4_1 layout (`ort-int4-rtn`, the control) and
  the best algorithm (`ort-int4-hqq`);
- OpenVINO fp32 (`ov`: the same ONNX converted to IR) and NNCF weight compression on
  OpenVINO (`nncf-int8`, `nncf-int4` at NNCF's defaults, `nncf-int4-g32` at the Q4_1
  layout as the control, `nncf-int4-awq` with AWQ and scale estimation), measured with
  compress's openvino runtime at an explicit fp32 inference precision.

`--flows` restricts the run to some of these steps (fp32 ONNX, the reference, is always
measured); `--decode-only` skips perplexity for the steps named (e.g. `ov`, whose
perplexity is the fp32 ONNX one by construction).

Perplexity: the suite's sliding window over the held-out Lee articles
(eval/smollm2-perplexity.yaml, the same code as `compress run`: measure.worker.causal_lm),
each model in this process with one thread. The ratio to fp32 is a paired bootstrap over
the scoring windows (both models' NLL of the same drawn windows), 95%.

Decode: a 64-token prompt, then `--gen` greedy tokens with the KV cache, one thread; the
flows are timed in interleaved rounds (each round runs every flow once, in a shuffled
order), so that load on this shared machine falls on all of them alike. Reported: the
median over all decode steps of all rounds. The CPU model and the load average before
and after are recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes" / "smollm2-causal-lm.yaml"
FLOWS = [("fp32 ONNX", "onnx"), ("ORT INT8 (default)", "ort-int8"),
         ("ORT INT8 (per-channel, weights only, lm_head float)", "ort-int8-llm"),
         ("ORT INT4 RTN (Q4_1 layout: 4 bit, block 32, asym)", "ort-int4-rtn"),
         ("ORT INT4 HQQ (block 32)", "ort-int4-hqq"),
         ("OpenVINO fp32 (same ONNX, converted to IR)", "ov"),
         ("NNCF INT8 weights on OpenVINO (int8_asym, per channel)", "nncf-int8"),
         ("NNCF INT4 on OpenVINO (NNCF defaults: int4_asym, group 128, adjusted to 64 "
          "where 128 does not divide the width)", "nncf-int4"),
         ("NNCF INT4 RTN on OpenVINO (Q4_1 layout: group 32, asym; the control)",
          "nncf-int4-g32"),
         ("NNCF INT4 AWQ + scale estimation on OpenVINO (group 32, asym)", "nncf-int4-awq")]
# the OpenVINO runtime is compiled at this inference precision (explicit, never the
# plugin's default, which is bf16 on CPUs that have it)
RAN_AT: dict[str, str] = {}
LATENCY = {"threads": 1, "device": "cpu", "providers": ["CPUExecutionProvider"],
           "openvino_precision": "fp32"}
TARGETS = {"int4": 0.05, "int8": 0.02, "speedup": 1.5}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def isa() -> str:
    """The vector extensions that decide which INT8/INT4 kernels run."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build(cache_dir: str | None, steps: list[str]) -> dict[str, tuple[Path, str]]:
    """Build (or take from the cache) the recipe's steps; their artifact directories."""
    from compress.engine import build_all, prepare
    from compress.store import Store

    plan = prepare(RECIPE)
    wanted = {n.key for n in plan.nodes if n.step in steps}
    for node in plan.nodes:  # and what they are built from
        if node.key in wanted and node.parent is not None:
            wanted |= {a.key for a in node.parent.chain()}
    plan.nodes = [n for n in plan.nodes if n.key in wanted]
    out = build_all(plan, Store(cache_dir))
    if out.errors:
        raise SystemExit(f"build failed: {out.errors}")
    return {n.step: (out.artifacts[n.key].path, out.artifacts[n.key].kind.value)
            for n in plan.nodes if n.step in steps}


def perplexity(path: Path, kind: str, suite, texts: list[str]) -> dict:
    from compress.encoding import Encoder
    from compress.measure.runners import make_runner
    from compress.measure.worker import causal_lm

    req = {"texts": texts, "quality": suite.quality.model_dump(),
           "fidelity": suite.fidelity.model_dump(), "quality_metrics": ["perplexity"],
           "fidelity_metrics": []}
    runner = make_runner(str(path), kind, "causal-lm", LATENCY)
    t0 = time.perf_counter()
    figures, _, _ = causal_lm(runner, Encoder(path), req)
    figures["seconds"] = time.perf_counter() - t0
    return figures


def _ov_version() -> str:
    import openvino

    return openvino.__version__


def ratio_interval(u: dict, base: dict, level: float = 0.95):
    """Paired bootstrap over windows of perplexity(candidate) / perplexity(fp32)."""
    from compress import stats

    nll_c, nll_b = np.asarray(u["window_nll"]), np.asarray(base["window_nll"])
    tok = np.asarray(u["window_tokens"], dtype=float)
    assert np.array_equal(tok, np.asarray(base["window_tokens"], dtype=float))
    ratio = lambda i: float(np.exp((nll_c[i].sum() - nll_b[i].sum()) / tok[i].sum()))  # noqa: E731
    return ratio(np.arange(len(tok))), stats.bootstrap(ratio, len(tok), level,
                                                       method="paired-bootstrap")


def decode_times(paths: dict[str, tuple[Path, str]], rounds: int, gen: int, prompt: str
                 ) -> dict:
    from compress.encoding import Encoder
    from compress.measure.runners import make_runner
    from compress.measure.worker import Generate

    gens = {}
    for step, (path, kind) in paths.items():
        runner = make_runner(str(path), kind, "causal-lm", LATENCY)
        ids = np.asarray(Encoder(path).ids(prompt)[:64], dtype=np.int64)[None]
        g = Generate(runner, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, gen)
        g(record=False)  # warm-up
        gens[step] = g
        if hasattr(runner, "precision"):  # OpenVINO: the precision the compiled model uses
            RAN_AT[step] = runner.precision
    rng = random.Random(0)
    order = list(gens)
    for _ in range(rounds):
        rng.shuffle(order)
        for step in order:
            gens[step](record=True)
    return {s: g.decode_ms for s, g in gens.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default=None, help="compress artifact cache")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved decode rounds")
    ap.add_argument("--gen", type=int, default=16, help="decode steps per round")
    ap.add_argument("--out", default=None, help="results file (default: print only)")
    ap.add_argument("--flows", default=None, help="comma-separated steps to measure "
                    "(default: all; onnx, the reference, is always included)")
    ap.add_argument("--decode-only", default="", help="comma-separated steps timed for "
                    "decode but not scored for perplexity")
    ap.add_argument("--raw", default=None, help="also write the raw figures (per-window "
                    "NLL, every decode step's ms) as JSON, before the table is made")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from compress.engine import prepare

    started, load0 = datetime.now(UTC), load()
    plan = prepare(RECIPE)
    suite = plan.suite
    texts = plan.eval_data[suite.dataset.text_column].tolist()
    known = [s for _, s in FLOWS]
    wanted = known if not args.flows else ["onnx"] + [
        s for s in args.flows.split(",") if s != "onnx"]
    skip_ppl = {s for s in args.decode_only.split(",") if s}
    unknown = sorted((set(wanted) | skip_ppl) - set(known))
    if unknown:
        raise SystemExit(f"unknown flow(s) {', '.join(unknown)}; expected: {', '.join(known)}")
    flows = [(label, s) for label, s in FLOWS if s in wanted]
    paths = build(args.cache_dir, [s for _, s in flows])
    load1 = load()
    ppl = {s: perplexity(*paths[s], suite, texts) for _, s in flows if s not in skip_ppl}
    times = decode_times({s: paths[s] for _, s in flows}, args.rounds, args.gen,
                         " ".join(texts))
    load2 = load()
    if args.raw:
        import json

        from compress.fsutil import atomic_write_text

        atomic_write_text(Path(args.raw), json.dumps(
            {"perplexity": ppl, "decode_ms": times, "precision": RAN_AT,
             "load": [load0, load1, load2], "started": f"{started:%Y-%m-%d %H:%M}"}))

    fp32 = ppl["onnx"]
    fp32_ms = float(np.median(times["onnx"]))
    from compress import stats

    lines = [f"# benchmarks/peers_llm.py, {started:%Y-%m-%d %H:%M} UTC",
             "# command: nice -n 15 .venv/bin/python benchmarks/peers_llm.py"
             + (f" --cache-dir {args.cache_dir}" if args.cache_dir else "")
             + f" --rounds {args.rounds} --gen {args.gen}"
             + (f" --flows {args.flows}" if args.flows else "")
             + (f" --decode-only {args.decode_only}" if args.decode_only else ""),
             f"# machine: {cpu_model()} ({isa()}), {os.cpu_count()} cores; load average "
             f"(1/5/15 min) at start {load0}, after builds {load1}, at end {load2}",
             f"# perplexity: {suite.name}, {fp32['scored_tokens']} tokens scored in "
             f"{len(fp32['units']['window_tokens'])} windows (window {suite.quality.max_length}, "
             f"stride {suite.quality.stride}); intervals 95%: the perplexity's a bootstrap "
             "over windows, the ratio's a paired bootstrap over windows",
             f"# decode: 64-token prompt, {args.gen} greedy tokens with the KV cache, 1 thread, "
             f"{args.rounds} interleaved rounds; median ms per token over all steps",
             "",
             (f"# OpenVINO {_ov_version()}: compiled with INFERENCE_PRECISION_HINT "
              f"{LATENCY['openvino_precision']}, 1 inference thread, 1 stream; ran at "
              + ", ".join(f"{s}: {p}" for s, p in RAN_AT.items()) if RAN_AT
              else "# no OpenVINO flow in this run"),
             "",
             "| flow | perplexity (95% CI) | ratio to fp32 (paired 95% CI) | decode ms/token "
             "| decode speed-up vs fp32 ONNX |",
             "|---|---|---|---|---|"]
    verdicts = []
    for label, step in flows:
        ms = float(np.median(times[step]))
        if step not in ppl:
            lines.append(f"| {label} | not scored (--decode-only) | | {ms:.1f} "
                         f"| {fp32_ms / ms:.2f}x |")
            continue
        u = ppl[step]["units"]
        nll, tok = np.asarray(u["window_nll"]), np.asarray(u["window_tokens"], dtype=float)
        ci = stats.bootstrap(lambda i, nll=nll, tok=tok: float(np.exp(nll[i].sum() / tok[i].sum())),
                             len(tok), 0.95)
        if step == "onnx":
            ratio_text = "1 (reference)"
        else:
            r, rci = ratio_interval(u, fp32["units"])
            ratio_text = f"{r:.4f} ({rci.low:.4f}..{rci.high:.4f})"
        if step not in ("onnx", "ov"):  # the targets are for the quantized flows
            kind = "int4" if "int4" in step else "int8"
            limit = TARGETS[kind]
            status = ("met" if rci.high <= 1 + limit else
                      "missed" if rci.low > 1 + limit else "inconclusive")
            speed = fp32_ms / ms
            verdicts.append(f"- {label}: perplexity within {limit:.0%} of fp32: {status} "
                            f"(ratio {r:.4f}, 95% CI {rci.low:.4f}..{rci.high:.4f}); decode "
                            f"{speed:.2f}x fp32 ONNX: "
                            f"{'met' if speed >= TARGETS['speedup'] else 'missed'} (target "
                            f">= {TARGETS['speedup']}x)")
        lines.append(f"| {label} | {ppl[step]['perplexity']:.3f} ({ci.low:.3f}..{ci.high:.3f}) "
                     f"| {ratio_text} | {ms:.1f} | {fp32_ms / ms:.2f}x |")
    lines += ["", "Targets (measured in this run):"] + verdicts
    lines += ["", "Perplexity scoring time per flow (s): " + ", ".join(
        f"{s} {ppl[s]['seconds']:.0f}" for _, s in flows if s in ppl)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from compress.fsutil import atomic_write_text

        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
