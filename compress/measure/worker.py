"""Measure one artifact in this fresh process: latency, peak memory, then quality.

Run as `python -m compress.measure.worker REQUEST.json RESULT.json`. It imports torch and
transformers only for PyTorch artifacts: ONNX Runtime runs stay free of their ~0.5 GB, so
the memory figure is the model's own. Latency and peak memory are taken before the quality
pass, whose large batches would otherwise set the peak.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def peak_rss_bytes() -> int | None:
    """VmHWM of this process (ru_maxrss would carry the parent's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class OrtRunner:
    backend = "onnxruntime"

    def __init__(self, path: str, threads: int, providers: list[str] | None):
        from compress.encoding import OrtModel

        self.model = OrtModel(path, threads=threads, providers=providers)
        self.providers = self.model.providers
        self.device = "cuda" if "CUDAExecutionProvider" in self.providers else "cpu"

    def __call__(self, feeds):
        return self.model(feeds)


class TorchRunner:
    backend = "pytorch"

    def __init__(self, path: str, task: str, threads: int):
        import torch

        from compress.quiet import configure

        configure()
        torch.set_num_threads(threads)
        from compress.loading import load_for_inference

        self.torch = torch
        self.model = load_for_inference(path, task)
        self.providers = []
        self.device = "cpu"
        import inspect

        self.args = set(inspect.signature(self.model.forward).parameters)

    def __call__(self, feeds):
        with self.torch.inference_mode():
            out = self.model(**{k: self.torch.from_numpy(v) for k, v in feeds.items()
                                if k in self.args})
        t = out.logits if hasattr(out, "logits") else out.last_hidden_state
        return t.float().numpy()


def time_latency(run, feeds, settings) -> dict:
    for _ in range(settings["warmup"]):
        run(feeds)
    times = []
    start = time.perf_counter()
    while len(times) < settings["iterations"] or time.perf_counter() - start < settings[
            "min_time_s"]:
        t0 = time.perf_counter_ns()
        run(feeds)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    ms = np.array(times)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "iterations": len(ms)}


def classify_accuracy(run, encoder, path: str, texts, labels, settings) -> dict:
    id2label = json.loads((Path(path) / "config.json").read_text()).get("id2label", {})
    correct = 0
    bs = settings["batch_size"]
    for start in range(0, len(texts), bs):
        logits = run(encoder(texts[start:start + bs], settings["max_length"]))
        for idx, gold in zip(logits.argmax(-1).tolist(), labels[start:start + bs], strict=True):
            correct += str(id2label.get(str(idx), idx)) == str(gold)
    return {"accuracy": correct / len(texts), "n_eval": len(texts)}


def main(request_path: str, result_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    try:
        from compress.encoding import Encoder

        lat, qual = req["latency"], req["quality"]
        path, kind = req["artifact"], req["kind"]
        if kind.startswith("onnx"):
            run = OrtRunner(path, lat["threads"], req.get("providers"))
        else:
            run = TorchRunner(path, req["task"], lat["threads"])
        encoder = Encoder(path)
        texts, labels = req["texts"], req["labels"]
        sample = (texts * lat["batch_size"])[: lat["batch_size"]]
        feeds = encoder(sample, lat["seq_len"], pad_to_max=True)
        latency = time_latency(run, feeds, lat)
        latency["samples_per_s"] = lat["batch_size"] * 1000.0 / latency["p50_ms"]
        peak = peak_rss_bytes()
        quality = {}
        if req["task"] == "text-classification":
            quality = classify_accuracy(run, encoder, path, texts, labels, qual)
        result = {
            "status": "ok", "quality": quality, "latency": latency,
            "memory": {"peak_rss_bytes": peak},
            "env": {"backend": run.backend, "providers": run.providers, "device": run.device,
                    "threads": lat["threads"], "batch_size": lat["batch_size"],
                    "seq_len": lat["seq_len"], "pid": os.getpid()},
        }
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this candidate's failure
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(result))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
