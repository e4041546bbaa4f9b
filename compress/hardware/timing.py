"""Timing helpers shared by the CPU micro-benchmarks (`microbench`, `gemv`): a timed call,
the load average, the last-level cache size, an ONNX Runtime session pinned to N threads."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def time_call(fn, budget_s: float = 0.12, min_reps: int = 3, max_reps: int = 200,
          stat=statistics.median) -> float:
    """Median (or `stat`) seconds of fn() after one warm-up call."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s
                                    and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stat(times)


def llc_mb() -> float:
    """Last-level cache size (sysfs), for the STREAM sizing rule."""
    best = 0.0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        v = f.read_text().strip()
        mult = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(v[-1:], 1 / 2**20)
        try:
            best = max(best, float(v.rstrip("KMG")) * mult)
        except ValueError:
            pass
    return best or 32.0


def ort_session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
