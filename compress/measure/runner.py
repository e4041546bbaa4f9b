"""Parent side of measurement: build the request, run the worker in a fresh process with
pinned threads, and cache the result by (artifact, settings, machine)."""

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

MEASURE_VERSION = "1"


def machine_fingerprint() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "machine": platform.machine()}


def measure(artifact: Artifact, task: str, texts: list[str], labels: list[str] | None,
            settings: dict, timeout_s: float = 3600) -> dict:
    """Measure one artifact in a fresh worker process; raises MeasureError on failure."""
    threads = settings["latency"]["threads"]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    with tempfile.TemporaryDirectory(prefix="compress-measure-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({
            "artifact": str(artifact.path), "kind": artifact.kind.value, "task": task,
            "texts": texts, "labels": labels, **settings}))
        try:
            proc = subprocess.run([sys.executable, "-m", "compress.measure.worker",
                                   str(req), str(res)], env=env, capture_output=True,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise MeasureError(f"measurement timed out after {timeout_s:.0f} s") from None
        if not res.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise MeasureError(f"measurement process died (exit {proc.returncode}): "
                               + " | ".join(tail))
        result = json.loads(res.read_text())
    if result["status"] != "ok":
        raise MeasureError(result["error"])
    result["memory"]["size_bytes"] = artifact.size_bytes()
    return result
