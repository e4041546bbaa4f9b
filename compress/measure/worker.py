"""Measure one artifact in this fresh process: latency, peak memory, quality, fidelity.

Run as `python -m compress.measure.worker REQUEST.json RESULT.json`. Only PyTorch
artifacts import torch and transformers, so an ONNX Runtime figure is the model's own.
Order matters: latency first, then the peak memory (VmHWM) is read, then the quality pass,
whose large batches would otherwise set the peak. With `import_only`, the worker imports
what a runner imports and reports that peak: the baseline that memory deltas subtract.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from compress.measure import metrics as M


def peak_rss_bytes() -> int | None:
    """VmHWM of this process (ru_maxrss would carry the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def stats(ms: list[float], per: float, unit: str, noisy_spread: float) -> dict:
    a = np.asarray(ms)
    p50 = float(np.percentile(a, 50))
    p95 = float(np.percentile(a, 95))
    spread = (p95 - p50) / p50 if p50 > 0 else 0.0
    return {"p50_ms": p50, "p90_ms": float(np.percentile(a, 90)), "p95_ms": p95,
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "std_ms": float(a.std()), "min_ms": float(a.min()), "iterations": len(a),
            "throughput": per * 1000.0 / p50 if p50 > 0 else None, "throughput_unit": unit,
            "spread": spread, "noisy": bool(spread > noisy_spread)}


def _repeat(step, settings) -> None:
    """Warm up, then call `step(record=True)` for the iterations (and minimum time) asked."""
    import time

    for _ in range(settings["warmup"]):
        step(record=False)
    start, count = time.perf_counter(), 0
    while count < settings["iterations"] or time.perf_counter() - start < settings["min_time_s"]:
        step(record=True)
        count += 1


class Forward:
    """One timed forward pass per call (classification, embeddings)."""

    def __init__(self, runner, feeds):
        self.runner, self.feeds, self.ms = runner, feeds, []

    def __call__(self, record: bool) -> None:
        from compress.measure.runners import timed

        t = timed(lambda: self.runner(self.feeds), self.runner.sync)
        if record:
            self.ms.append(t)


class Generate:
    """Prefill a prompt, then decode `gen_tokens` tokens greedily with the KV cache; the
    prefill and every decode step are timed separately. `tokens` holds the last call's
    generated ids (batch x gen_tokens)."""

    def __init__(self, runner, feeds, gen_tokens: int):
        self.runner, self.feeds, self.gen_tokens = runner, feeds, gen_tokens
        self.prefill_ms, self.decode_ms = [], []
        self.tokens = np.zeros((feeds["input_ids"].shape[0], 0), dtype=np.int64)

    def __call__(self, record: bool) -> None:
        from compress.measure.runners import timed

        out = {}
        runner, feeds = self.runner, self.feeds
        t = timed(lambda: out.update(r=runner.prefill(feeds)), runner.sync)
        logits, past = out["r"]
        if past is None:  # no KV cache: the runner recomputes from the whole sequence
            past = feeds["input_ids"]
        mask = feeds["attention_mask"]
        steps, tokens = [], []
        for _ in range(self.gen_tokens):
            nxt = logits[:, -1:].argmax(-1).astype(np.int64)
            tokens.append(nxt)
            mask = np.concatenate([mask, np.ones_like(nxt)], axis=1)
            args = (nxt, mask, past)
            steps.append(timed(lambda a=args: out.update(r=runner.decode(*a)), runner.sync))
            logits, past = out["r"]
        if tokens:
            self.tokens = np.concatenate(tokens, axis=1)
        if record:
            self.prefill_ms.append(t)
            self.decode_ms.extend(steps)


def _rising(records: list[dict], best: float, flat: float) -> bool:
    """Did the last batch size raise throughput by more than `flat` over the best before?"""
    last = [r for r in records if r["phase"] in ("forward", "prefill")]
    seq = last[0]["seq_len"]
    last = [r for r in last if r["seq_len"] == seq]
    return len(last) < 2 or last[-1]["throughput"] > best * (1 + flat)


def latency(runner, encoder, task: str, texts: list[str], settings: dict) -> list[dict]:
    """Latency records for every (batch size, sequence length) of the suite."""
    records = []
    spread = settings["noisy_spread"]
    flat = settings.get("stop_when_flat")
    best = 0.0   # best throughput so far (first sequence length): the early stop
    for batch in settings["batch_sizes"]:
        if flat is not None and records and not _rising(records, best, flat):
            break
        best = max([best] + [r["throughput"] for r in records
                             if r["phase"] in ("forward", "prefill")
                             and r["seq_len"] == settings["seq_lens"][0]][-1:])
        sample = (texts * batch)[:batch]
        for seq in settings["seq_lens"]:
            feeds = encoder(sample, seq, pad_to_max=True)
            base = {"batch_size": batch, "seq_len": seq}
            if task != "causal-lm":
                step = Forward(runner, feeds)
                _repeat(step, settings)
                records.append({**base, "phase": "forward",
                                **stats(step.ms, batch, "samples/s", spread)})
                continue
            gen = Generate(runner, feeds, settings["gen_tokens"])
            _repeat(gen, settings)
            records.append({**base, "phase": "prefill",
                            **stats(gen.prefill_ms, batch * seq, "tokens/s", spread)})
            records.append({**base, "phase": "decode", "gen_tokens": settings["gen_tokens"],
                            **stats(gen.decode_ms, batch, "tokens/s", spread)})
    return records


# ---------------------------------------------------------------- quality, per task

def quality_feeds(encoder, texts: list[str], req):
    """The quality pass's inputs, batch by batch, with their encoding.

    `as_served` (the default): the way latency is measured and the model is served, at the
    suite's first latency batch size, padded to its first sequence length. A dynamically
    quantized model computes its activation scales over the whole batch, so its outputs
    depend on what else is in the batch and on the padding: this is the faithful setting.
    `batched`: quality.batch_size examples at a time, padded to the longest, truncated at
    quality.max_length (faster; not how a batch-1 service sees inputs).
    """
    q, lat = req["quality"], req["latency"]
    if q.get("inputs", "as_served") == "as_served":
        size, length, pad = lat["batch_sizes"][0], lat["seq_lens"][0], True
    else:
        size, length, pad = q["batch_size"], q["max_length"], False
    for i in range(0, len(texts), size):
        yield encoder(texts[i:i + size], length, pad_to_max=pad)


def classification(runner, encoder, req) -> tuple[dict, dict, dict]:
    texts, gold = req["texts"], req["labels"]
    id2label = json.loads((Path(req["artifact"]) / "config.json").read_text()).get("id2label")
    logits = np.concatenate([runner(feeds) for feeds in quality_feeds(encoder, texts, req)])
    pred = [str(id2label.get(str(i), i)) if id2label else str(i)
            for i in logits.argmax(-1).tolist()]
    classes = sorted(set(gold))
    figures = {"accuracy": M.accuracy(pred, gold), "macro_f1": M.macro_f1(pred, gold, classes)}
    figures.update({f"f1[{c}]": v for c, v in M.per_class_f1(pred, gold, classes).items()})
    figures = {k: v for k, v in figures.items()
               if k.split("[")[0] in req["quality_metrics"]
               or (k.startswith("f1[") and "per_class_f1" in req["quality_metrics"])}
    figures["n_eval"] = len(texts)
    q = req["quality"]
    if q.get("evaluate_module"):
        figures.update(_evaluate_module(q["evaluate_module"], pred, gold, classes))
    fidelity = {}
    ref = _reference(req)
    if ref is not None:
        if "top1_agreement" in req["fidelity_metrics"]:
            fidelity["top1_agreement"] = M.top1_agreement(ref["logits"], logits)
        if "kl_divergence" in req["fidelity_metrics"]:
            fidelity["kl_divergence"] = M.kl_divergence(ref["logits"], logits)
    figures["units"] = {"pred": pred, "n_classes": len(id2label) if id2label
                        else int(logits.shape[-1])}
    return figures, fidelity, {"logits": logits.astype(np.float32)}


def _evaluate_module(path: str, pred, gold, classes) -> dict:
    import evaluate

    ids = {c: i for i, c in enumerate(classes)}
    result = evaluate.load(path).compute(predictions=[ids.get(p, -1) for p in pred],
                                         references=[ids[g] for g in gold])
    return {f"evaluate:{k}": float(v) for k, v in result.items()
            if isinstance(v, (int, float, np.floating))}


def embeddings(runner, encoder, req) -> tuple[dict, dict, dict]:
    a, b, score = req["texts"], req["text_pairs"], req["scores"]
    unique = list(dict.fromkeys(a + b))
    index = {t: i for i, t in enumerate(unique)}
    chunks = [M.mean_pool(runner(feeds), feeds["attention_mask"])
              for feeds in quality_feeds(encoder, unique, req)]
    emb = np.concatenate(chunks)
    sims = M.cosine_rows(emb[[index[t] for t in a]], emb[[index[t] for t in b]])
    figures = {"n_eval": len(a), "units": {"sims": sims.tolist()}}
    if "spearman" in req["quality_metrics"]:
        figures["spearman"] = M.spearman(sims, score)
    if "pearson" in req["quality_metrics"]:
        figures["pearson"] = M.pearson(sims, score)
    fidelity = {}
    ref = _reference(req)
    if ref is not None and "cosine" in req["fidelity_metrics"]:
        fidelity["cosine"] = float(np.mean(M.cosine_rows(ref["embeddings"], emb)))
    return figures, fidelity, {"embeddings": emb.astype(np.float32)}


def causal_lm(runner, encoder, req) -> tuple[dict, dict, dict]:
    q, f = req["quality"], req["fidelity"]
    ids = encoder.ids("\n\n".join(req["texts"]))
    if q.get("max_tokens"):
        ids = ids[: q["max_tokens"]]
    window = q["max_length"]
    stride = q.get("stride") or max(window // 2, 1)
    nll, correct, argmax, top_ids, top_lp = [], 0, [], [], []
    win_correct = []
    ref = _reference(req)
    kl_parts = []
    for begin, end, score_from in M.sliding_windows(len(ids), window, stride):
        chunk = np.asarray(ids[begin:end], dtype=np.int64)[None]
        logits = runner({"input_ids": chunk, "attention_mask": np.ones_like(chunk)})[0]
        pos = np.arange(score_from, end) - begin  # target positions within the window
        scored = logits[pos - 1]
        targets = chunk[0, pos]
        nll.append(M.token_nll(scored, targets))
        am = scored.argmax(-1)
        correct += int(np.sum(am == targets))
        win_correct.append(int(np.sum(am == targets)))
        argmax.append(am)
        tid, tlp = M.topk_reference(scored, f["top_k"])
        top_ids.append(tid)
        top_lp.append(tlp)
        if ref is not None:
            lo = sum(len(x) for x in argmax[:-1])
            kl_parts.append((len(am), M.kl_topk(ref["top_ids"][lo:lo + len(am)],
                                                ref["top_logp"][lo:lo + len(am)], scored)))
    nll_all = np.concatenate(nll)
    argmax_all = np.concatenate(argmax)
    figures = {}
    if "perplexity" in req["quality_metrics"]:
        figures["perplexity"] = M.perplexity(float(nll_all.sum()), len(nll_all))
    if "next_token_accuracy" in req["quality_metrics"]:
        figures["next_token_accuracy"] = correct / len(nll_all)
    figures["scored_tokens"] = len(nll_all)
    figures["units"] = {"window_nll": [float(x.sum()) for x in nll],
                        "window_tokens": [len(x) for x in nll], "window_correct": win_correct}
    fidelity = {}
    if ref is not None:
        if "top1_agreement" in req["fidelity_metrics"]:
            fidelity["top1_agreement"] = float(np.mean(ref["argmax"] == argmax_all))
        if "kl_divergence" in req["fidelity_metrics"]:
            n = sum(k for k, _ in kl_parts)
            fidelity["kl_divergence"] = sum(k * v for k, v in kl_parts) / n
    outputs = {"argmax": argmax_all, "top_ids": np.concatenate(top_ids).astype(np.int32),
               "top_logp": np.concatenate(top_lp).astype(np.float32)}
    return figures, fidelity, outputs


QUALITY = {"text-classification": classification, "feature-extraction": embeddings,
           "causal-lm": causal_lm}


def _reference(req) -> dict | None:
    path = req.get("reference_outputs")
    return dict(np.load(path)) if path else None


# ---------------------------------------------------------------- main

def import_only(req) -> dict:
    """Import exactly what the runner for this kind imports, and report the peak."""
    if req["kind"] == "openvino":
        import openvino  # noqa: F401
        import tokenizers  # noqa: F401
    elif req["kind"].startswith("onnx"):
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    else:
        import torch  # noqa: F401

        from compress.loading import load_for_inference  # noqa: F401
        from compress.quiet import import_transformers

        import_transformers()
    return {"status": "ok", "memory": {"peak_rss_bytes": peak_rss_bytes()}}


def save_outputs(path: Path, outputs: dict) -> None:
    """Write the model outputs atomically under a name no other writer uses, fsynced."""
    import uuid

    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.npz")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **outputs)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def measure(req) -> dict:
    from compress.encoding import Encoder
    from compress.measure.runners import make_runner

    lat, task = req["latency"], req["task"]
    runner = make_runner(req["artifact"], req["kind"], task, lat)
    encoder = Encoder(req["artifact"])
    records = latency(runner, encoder, task, req["texts"], lat)
    memory = {"peak_rss_bytes": peak_rss_bytes()}
    if hasattr(runner, "cuda_memory"):
        memory.update(runner.cuda_memory())
    quality, fidelity, outputs = QUALITY[task](runner, encoder, req)
    units = quality.pop("units")  # per-unit results: what the intervals resample
    if req.get("outputs_path"):
        save_outputs(Path(req["outputs_path"]), outputs)
    memory["weights_bytes_by_dtype"] = runner.weights_by_dtype(req["artifact"])
    return {
        "status": "ok", "quality": quality, "fidelity": fidelity, "latency": records,
        "memory": memory, "units": units, "quality_inputs": _inputs_used(req),
        "env": {"backend": runner.backend, "providers": runner.providers,
                "requested": runner.requested, "fell_back": runner.fell_back,
                "device": runner.device, "device_name": runner.device_name,
                "threads": lat["threads"], **_precision_env(runner), **_gpu_env(runner)},
    }


def _inputs_used(req) -> dict:
    q, lat = req["quality"], req["latency"]
    if req["task"] == "causal-lm":
        return {"policy": "window", "window": q["max_length"]}
    if q.get("inputs", "as_served") == "as_served":
        return {"policy": "as_served", "batch_size": lat["batch_sizes"][0],
                "seq_len": lat["seq_lens"][0], "padding": "max_length"}
    return {"policy": "batched", "batch_size": q["batch_size"], "seq_len": q["max_length"],
            "padding": "longest"}


def _precision_env(runner) -> dict:
    """OpenVINO: the inference precision asked for and the one the compiled model uses."""
    if not hasattr(runner, "precision"):
        return {}
    return {"inference_precision": runner.precision,
            "requested_precision": runner.requested_precision}


def _gpu_env(runner) -> dict:
    if runner.device != "cuda" or runner.backend != "pytorch":
        return {}
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"cuda_version": torch.version.cuda, "compute_capability": f"{props.major}."
            f"{props.minor}", "driver": _nvidia_driver()}


def _nvidia_driver() -> str | None:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def main(request_path: str, result_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    try:
        result = import_only(req) if req.get("import_only") else measure(req)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this candidate's failure
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(result))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
