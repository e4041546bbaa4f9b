"""Parent side of measurement: build the request, run the worker in a fresh process with
pinned threads, and return its figures or a clear failure."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from compress.artifacts import Artifact
from compress.errors import MeasureError

MEASURE_VERSION = "3"  # 3: per-unit results (intervals), quality inputs as served


def machine_fingerprint() -> dict:
    from compress.provenance import cpu_model

    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "machine": platform.machine()}


def eval_payload(task: str, frame, dataset) -> dict:
    """The eval set as the worker needs it, by task."""
    texts = frame[dataset.text_column].astype(str).tolist()
    out = {"texts": texts}
    if task == "text-classification":
        out["labels"] = frame[dataset.label_column].astype(str).tolist()
    elif task == "feature-extraction":
        out["text_pairs"] = frame[dataset.text_pair_column].astype(str).tolist()
        out["scores"] = frame[dataset.score_column].astype(float).tolist()
    return out


def die_with_parent() -> None:
    """In a child process before exec: ask the kernel to SIGKILL it when its parent dies
    (Linux PR_SET_PDEATHSIG), so a killed `compress run` leaves no worker behind."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def run_worker(request: dict, threads: int, timeout_s: float = 3600) -> dict:
    """Run compress.measure.worker on one request in a fresh process; MeasureError on failure."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    with tempfile.TemporaryDirectory(prefix="compress-measure-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        try:
            proc = subprocess.run([sys.executable, "-m", "compress.measure.worker",
                                   str(req), str(res)], env=env, capture_output=True,
                                  text=True, timeout=timeout_s, preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise MeasureError(f"measurement timed out after {timeout_s:.0f} s") from None
        if not res.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise MeasureError(f"measurement process died (exit {proc.returncode}): "
                               + " | ".join(tail))
        try:
            result = json.loads(res.read_text())
        except ValueError as exc:
            raise MeasureError(f"measurement process wrote an unreadable result: {exc}") from None
    if result.get("status") != "ok":
        raise MeasureError(result["error"])
    return result


def measure(artifact: Artifact, suite, payload: dict, reference_outputs: Path | None,
            outputs_path: Path | None, timeout_s: float = 3600) -> dict:
    """Measure one artifact: latency, memory, quality and (given a reference) fidelity."""
    settings = suite.settings()
    settings["latency"]["providers"] = suite.latency.ort_providers()
    settings["latency"]["openvino_precision"] = suite.latency.openvino_precision
    request = {"artifact": str(artifact.path), "kind": artifact.kind.value,
               "task": suite.task, **payload, **settings,
               "reference_outputs": str(reference_outputs) if reference_outputs else None,
               "outputs_path": str(outputs_path) if outputs_path else None}
    result = run_worker(request, suite.latency.threads, timeout_s)
    result["memory"]["size_bytes"] = artifact.size_bytes()
    return result


def import_baseline(kind: str, threads: int) -> dict:
    """Peak memory of a worker that only imports what the runner for `kind` imports."""
    return run_worker({"import_only": True, "kind": kind}, threads, timeout_s=600)
