"""Calibrate the roofline on the machine at hand, from micro-benchmarks only.

Measures, for this machine's hardware class and each runtime (PyTorch eager, ONNX Runtime):

- GEMM efficiency AS A FUNCTION OF GEMM SIZE, per precision: synthetic Linear-shaped
  GEMMs over a fixed grid of transformer-like shapes (tokens 1..512 x 256..3072 features)
  and batched attention-shaped matmuls (heads x tokens x head dim), each timed alone. One
  efficiency per precision, fitted to the large GEMMs, charged every small and batched
  matmul of a real model at the large-GEMM rate and projected every candidate too fast; a
  64-token x 384-feature GEMM reaches a fraction of what 512 x 3072 does. The stored curve
  is efficiency = flops / (peak x measured seconds) of ONE call, kernel-smoothed over
  log10(flops per call) on a fixed grid; the projection interpolates it at each op group's
  flops per call. Dispatch overhead and (for dynamic INT8) the quantization of the
  activations are inside the measured call: ONNX Runtime fuses DynamicQuantizeLinear into
  the INT8 MatMul (DynamicQuantizeMatMul) and torch's dynamic Linear quantizes inside the
  op, so no separate quantize op group is charged (that would count it twice).
- Vector-op throughput (elements per second): GELU, SiLU x up (gated FFN), softmax,
  LayerNorm, RMSNorm and an elementwise add, at two sizes. On one CPU thread these are
  bound by their arithmetic (erf, exp, reductions), not by memory bandwidth, so the
  projection charges them max(elements / rate, bytes / bandwidth).
- Batch-1 GEMV rates per runtime and FORMAT (fp32, dynamic INT8, 4-bit MatMulNBits): one
  row times chains of independent k x n matrices (three sizes) whose stored weights are
  twice the last-level cache, so they stream from DRAM as a decoder's weights do for every
  token. Decode is bound by this rate, not by the copy's bandwidth nor by the GEMM curves
  (cache-resident, and a 1-row GEMM averaged with 16-row ones of the same FLOPs): an INT8
  or INT4 GEMV on one CPU core is bound by unpacking its weights, far below the bandwidth.
- One memory efficiency (a DRAM-sized copy), one fixed overhead per kernel (chains of tiny
  ops), and ONNX Runtime's per-call host overhead.
- The cost of one small op in a decode step (dispatch.py): tiny ops between DRAM-streaming
  GEMVs, whose caches are cold, cost several times the hot chain's figure.
- For groups and targets without a curve (GPUs, other classes), the scalar fit of the
  previous method is kept: one compute efficiency per precision and runtime, from the
  same GEMMs with the roofline form
      t = max(flops / (peak x e), bytes / (bandwidth x m)) + kernels x overhead,
  minimising relative error.

Never the candidates being judged: a projection checked against a candidate's measured
latency is then a real test of the method. The stored JSON says when, where (machine,
versions, threads, load average) and what each factor means (`factors`).
"""

from __future__ import annotations

import math
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from compress.hardware import microbench as mb
from compress.hardware.catalog import Catalog, Target, load_catalog
from compress.records import SCHEMA_VERSION, Record, parse, read_json


class ClassFit(Record):
    """The fitted factors of one hardware class (see FACTORS)."""

    compute_efficiency: dict[str, float]
    memory_efficiency: float
    kernel_overhead_us: dict[str, float]
    host_overhead_us: dict[str, float]
    gemm_curves: dict[str, list[list[float]]] = {}
    vector_rates: dict[str, dict[str, list[list[float]]]] = {}
    gemv_rates: dict[str, list[list[float]]] = {}
    decode_overhead_us: dict[str, float] = {}


class Calibration(Record):
    """A stored calibration: the fitted factors per hardware class, with when, where and how
    they were measured (the raw micro-benchmark timings included)."""

    schema_version: int = SCHEMA_VERSION
    name: str
    created: str
    device: str | None = None  # cuda for a GPU's (compress.hardware.calibrate_gpu)
    machine: dict[str, Any]
    versions: dict[str, str]
    threads: int
    nominal: dict[str, Any]
    classes: dict[str, ClassFit]
    factors: dict[str, Any]
    load_average: dict[str, float | None]
    fits: dict[str, dict[str, float]]
    benchmarks: dict[str, Any]
    stopped_at_deadline: bool | None = None
    wall_time_s: float
    method: str
    path: str | None = None  # where it was read from (not stored)

CURVE_GRID = np.round(np.arange(3.0, 10.51, 0.25), 2)   # log10(flops per call)
CURVE_SIGMA = 0.35                                       # smoothing width, decades
FACTORS = {
    "compute_efficiency": "scalar fallback: fraction of the nominal peak (catalog, per "
                          "precision) one GEMM family reaches, fitted over all GEMM shapes; "
                          "used only where no size curve applies",
    "memory_efficiency": "fraction of the nominal per-core DRAM bandwidth a large copy "
                         "reaches",
    "kernel_overhead_us": "fixed cost per op dispatch (PyTorch eager) or graph node (ORT), "
                          "from chains of tiny ops",
    "decode_overhead_us": "cost per small op or graph node in a decode step: tiny ops "
                          "interleaved with DRAM-streaming batch-1 GEMVs (dispatch.py), so "
                          "they run with cold caches as a decode step's do; charged for "
                          "every non-GEMM op a decode step dispatches",
    "host_overhead_us": "fixed cost per inference call, charged once: ORT session.run (a "
                        "chain of tiny nodes extrapolated to none); PyTorch a module call "
                        "around one tiny op (numpy feeds in, inference_mode, numpy out) "
                        "minus that op",
    "gemm_curves": "'runtime:precision' (Linear GEMMs) and 'runtime:attention:precision' "
                   "(batched matmuls): [[flops per call, efficiency], ...]; efficiency = "
                   "flops / (peak x seconds) of one measured call (dispatch and dynamic "
                   "activation quantization included, ORT host overhead excluded), smoothed "
                   "over log10(flops); interpolated log-log, clamped at the ends",
    "vector_rates": "runtime -> op -> [[elements per call, elements per second], ...] for "
                    "GELU, SiLU x up, softmax, LayerNorm, RMSNorm and add; interpolated "
                    "log-log in elements, clamped at the ends",
    "gemv_rates": "'runtime:format' -> [[stored weight bytes per call, stored weight bytes "
                  "per second], ...]: batch-1 GEMVs chained over weights twice the size of "
                  "the last-level cache, so they stream from DRAM as a decoder's do per "
                  "token; the rate includes dispatch and, for INT8/INT4, the quantization "
                  "of the row and the unpacking of the weights. Divided by the nominal "
                  "bandwidth it is the achieved fraction for batch-1 GEMV; a decode step's "
                  "GEMMs are charged their stored weight bytes at this rate",
}


def default_path(mark: bool = False) -> Path:
    """$COMPRESS_CALIBRATION, else calibration/calibration.json in the cache directory
    ($COMPRESS_CACHE_DIR, else the user cache dir), where recommend, gate and report look.
    `mark` (for writing): make that cache directory a marked compress cache first, so that
    `compress run` accepts it afterwards (it refuses a non-empty unmarked directory)."""
    from compress.store import Store, default_cache_dir

    if os.environ.get("COMPRESS_CALIBRATION"):
        return Path(os.environ["COMPRESS_CALIBRATION"])
    if mark:
        Store(default_cache_dir())
    return default_cache_dir() / "calibration" / "calibration.json"


def size_curve(rows: list[dict], peak: float, grid=CURVE_GRID) -> list[list[float]]:
    """[[flops per call, efficiency], ...] on `grid` (log10 flops; CURVE_GRID by default,
    a GPU's passes a wider one), inside the measured range.

    Each row is one timed call (flops, seconds); its efficiency is flops / (peak x s).
    A Gaussian kernel over log10(flops) (CURVE_SIGMA decades) averages log-efficiency, so
    shapes of similar size but different aspect count together and one noisy timing does
    not make a kink. Outside the measured range the projection clamps to the end values.
    """
    pts = [(np.log10(r["flops"]), np.log(r["flops"] / (peak * r["seconds"])))
           for r in rows if r.get("flops") and r.get("seconds")]
    if not pts or not peak:
        return []
    x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    out = []
    for g in grid:
        if g < x.min() - 0.125 or g > x.max() + 0.125:
            continue
        w = np.exp(-0.5 * ((x - g) / CURVE_SIGMA) ** 2)
        out.append([float(10 ** g), float(np.exp(np.sum(w * y) / np.sum(w)))])
    return out


def interp_log(table: list[list[float]], x: float) -> float:
    """Interpolate a [[x, y], ...] table linearly in (log x, log y), clamped at the ends."""
    xs = np.log10([p[0] for p in table])
    ys = np.log([p[1] for p in table])
    return float(np.exp(np.interp(np.log10(max(x, 1e-30)), xs, ys)))


def vector_table(rows: list[dict]) -> dict[str, list[list[float]]]:
    """{op: [[elements per call, elements per second], ...]} sorted by size."""
    out: dict[str, list[list[float]]] = {}
    for r in rows:
        out.setdefault(r["op"], []).append([r["elements"], r["elements"] / r["seconds"]])
    return {k: sorted(v) for k, v in out.items()}


def gemv_table(rows: list[dict]) -> dict[str, list[list[float]]]:
    """{format: [[bytes per call, bytes per second], ...]} sorted by size (timed rows only)."""
    out: dict[str, list[list[float]]] = {}
    for r in rows:
        if r.get("seconds"):
            out.setdefault(r["format"], []).append([r["bytes_per_call"], r["bytes_per_s"]])
    return {k: sorted(v) for k, v in out.items()}


def fit_roofline(rows: list[dict], peak: float, bandwidth: float, mem_eff: float | None = None
                 ) -> tuple[float, float, float]:
    """(compute efficiency, memory efficiency, overhead s) minimising relative squared error
    of t = max(flops/(peak e), bytes/(bw m)) + o over the rows (each: flops, bytes, kernels,
    seconds). With mem_eff given, only e and o are fitted."""
    f = np.array([r["flops"] for r in rows], float)
    b = np.array([r["bytes"] for r in rows], float)
    k = np.array([r.get("kernels", 1) for r in rows], float)
    t = np.array([r["seconds"] for r in rows], float)
    es = np.geomspace(0.005, 2.0, 160) if f.any() else np.array([1.0])
    ms = np.array([mem_eff]) if mem_eff else np.geomspace(0.02, 4.0, 160)
    best = (np.inf, 1.0, 1.0, 0.0)
    for e in es:
        for m in ms:
            base = np.maximum(f / (peak * e) if peak else 0 * f, b / (bandwidth * m))
            # best non-negative per-kernel overhead for this (e, m), in relative terms
            w = k / t
            o = max(0.0, float(np.sum(w * (1 - base / t)) / np.sum(w * w)))
            err = float(np.sum(((base + k * o) / t - 1) ** 2))
            if err < best[0]:
                best = (err, float(e), float(m), o)
    return best[1], best[2], best[3]


def machine_info(target: Target, threads: int) -> dict:
    from compress.provenance import cpu_model

    return {"cpu_model": cpu_model(), "cores": target.cores, "threads": threads,
            "clock_ghz": target.clock_ghz, "flops_per_cycle": target.flops_per_cycle,
            "hw_class": target.hw_class, "hostname": platform.node(),
            "platform": platform.platform()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("compress", "torch", "onnxruntime", "onnx", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out



def calibrate(threads: int = 1, catalog: Catalog | None = None, name: str | None = None
              ) -> dict:
    """Run the micro-benchmarks here and fit the efficiencies of this machine's class."""
    catalog = catalog or load_catalog()
    target = catalog["local-cpu"]
    started = time.perf_counter()
    load_before = mb.loadavg()
    peak32, peak8 = target.peak("fp32"), target.peak("int8")
    bw = target.bandwidth_gbps * 1e9 / max(1, target.cores or 1)  # nominal, per worker
    tb = mb.torch_benchmarks(threads)
    ob = mb.ort_benchmarks(threads)
    # memory efficiency from the copy alone; then each GEMM family with it fixed
    _, mem_eff, copy_o = fit_roofline(tb["copy"], 0.0, bw)
    fits = {}
    for key, rows, peak in (("pytorch-cpu:fp32", tb["gemm_fp32"], peak32),
                            ("pytorch-cpu:int8", tb["gemm_int8"], peak8),
                            ("ort-cpu:fp32", ob["gemm_fp32"], peak32),
                            ("ort-cpu:int8", ob["gemm_int8"], peak8)):
        if rows:
            e, _, o = fit_roofline(rows, peak, bw, mem_eff)
            fits[key] = {"efficiency": e, "overhead_us": o * 1e6}
    compute = {k: v["efficiency"] for k, v in fits.items()}
    compute["fp32"] = compute.get("pytorch-cpu:fp32", 0.7)
    compute["int8"] = compute.get("ort-cpu:int8", compute.get("pytorch-cpu:int8", 0.7))
    chain = ob["chain"]
    slope = (chain[-1]["seconds"] - chain[0]["seconds"]) / (chain[-1]["nodes"] - chain[0]["nodes"])
    host = max(0.0, chain[0]["seconds"] - slope)

    def net(rows, less):  # ORT's per-run host overhead is charged once per inference
        return [dict(r, seconds=max(0.3 * r["seconds"], r["seconds"] - less)) for r in rows]
    curves = {"pytorch-cpu:fp32": size_curve(tb["gemm_fp32"][:len(mb.GEMM_SHAPES)], peak32),
              "pytorch-cpu:int8": size_curve(tb["gemm_int8"], peak8),
              "pytorch-cpu:attention:fp32": size_curve(tb["attention_fp32"], peak32),
              "ort-cpu:fp32": size_curve(net(ob["gemm_fp32"], host), peak32),
              "ort-cpu:int8": size_curve(net(ob["gemm_int8"], host), peak8),
              "ort-cpu:attention:fp32": size_curve(net(ob["attention_fp32"], host), peak32)}
    rates = {"pytorch-cpu": vector_table(tb["vector"]),
             "ort-cpu": vector_table(net(ob["vector"], host))}
    gemv = {f"{rt}:{fmt}": table for rt, rows in (("pytorch-cpu", tb.get("gemv") or []),
                                                   ("ort-cpu", ob.get("gemv") or []))
            for fmt, table in gemv_table(rows).items()}
    result = {
        "schema_version": SCHEMA_VERSION,
        "name": name or f"{target.hw_class}-{platform.node()}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(target, threads),
        "versions": versions(),
        "threads": threads,
        "nominal": {"peak_fp32_flops": peak32, "peak_int8_ops": peak8,
                    "bandwidth_bytes_s": bw,
                    "gemv_fraction_of_bandwidth": {
                        k: round(max(r for _, r in v) / bw, 3) for k, v in gemv.items()}},
        "classes": {target.hw_class: {
            "compute_efficiency": compute,
            "memory_efficiency": mem_eff,
            "kernel_overhead_us": {"pytorch": tb["tiny"] * 1e6, "onnxruntime": slope * 1e6},
            # PyTorch's only where measured (older benchmark files lack it): a missing
            # figure falls back to the catalog default, never to zero
            "host_overhead_us": {"onnxruntime": host * 1e6} | (
                {"pytorch": max(0.0, tb["call"] - tb["tiny"]) * 1e6} if tb.get("call")
                else {}),
            "gemm_curves": {k: v for k, v in curves.items() if v},
            "vector_rates": rates,
            "gemv_rates": gemv,
            "decode_overhead_us": {
                fw: b["decode_dispatch"]["per_op_s"] * 1e6
                for fw, b in (("pytorch", tb), ("onnxruntime", ob))
                if (b.get("decode_dispatch") or {}).get("per_op_s")},
        }},
        "factors": FACTORS,
        "load_average": {"before": load_before, "after": mb.loadavg()},
        "fits": fits,
        "benchmarks": {"torch": tb, "onnxruntime": ob},
        "wall_time_s": round(time.perf_counter() - started, 1),
        "method": "micro-benchmarks only (GEMMs and attention-shaped batched matmuls over a "
                  "grid of sizes per precision and runtime, batch-1 GEMV chains over "
                  "DRAM-sized weights per format, vector ops, memory copy, chains "
                  "of tiny ops, hot and between DRAM-streaming GEMVs); size curves of "
                  "GEMM efficiency, vector-op rates, and a relative-error fit of the "
                  "roofline form for the scalar fallbacks",
    }
    return result


def save(calibration: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from compress.store import write_json

    write_json(p, calibration)
    return p


def load(path: str | Path | None = None) -> dict | None:
    """A stored calibration (default: the user cache one), or None when there is none."""
    p = Path(path) if path else default_path()
    if not p.is_file():
        if path:
            from compress.errors import InputError

            raise InputError(f"{p}: no calibration file; run `compress calibrate --out {p}`")
        return None
    data = read_json(p, "a calibration JSON (compress calibrate --out)")
    check_calibration(data, p)
    cal = parse(Calibration, data, p, "calibration")
    # consumers (roofline, reports) read the plain JSON form
    return cal.model_dump(mode="json", exclude_none=False) | {"path": cal.path or str(p)}


def check_calibration(cal, path: Path) -> None:
    """InputError unless `cal` has the shape the projection reads: {"classes": {hw_class:
    {compute_efficiency: {key: number}, memory_efficiency: number, ...}}}."""
    from compress.errors import InputError

    def bad(where: str, expected: str):
        return InputError(f"{path}: not a compress calibration: {where}: expected {expected}; "
                          "write one with `compress calibrate --out FILE`")

    if not isinstance(cal, dict):
        raise bad("(top level)", f"a JSON object, got {type(cal).__name__}")
    classes = cal.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise bad("classes", "a non-empty object of hardware classes")
    number = (int, float)
    for name, fit in classes.items():
        if not isinstance(fit, dict):
            raise bad(f"classes.{name}", "an object")
        for fld in ("compute_efficiency", "kernel_overhead_us", "host_overhead_us",
                    "decode_overhead_us"):
            v = fit.get(fld, {})
            if not isinstance(v, dict) or not all(
                    isinstance(x, number) and not isinstance(x, bool) and math.isfinite(x)
                    for x in v.values()):
                raise bad(f"classes.{name}.{fld}", "an object of finite numbers")
        mem = fit.get("memory_efficiency", 1.0)
        if not isinstance(mem, number) or isinstance(mem, bool) or not 0 < mem <= 100 \
                or not math.isfinite(mem):
            raise bad(f"classes.{name}.memory_efficiency", "a positive number (a fraction "
                      "of nominal bandwidth; above 1 where caches beat the nominal figure)")
        for fld in ("gemm_curves", "vector_rates", "gemv_rates"):
            if not isinstance(fit.get(fld) or {}, dict):
                raise bad(f"classes.{name}.{fld}", "an object")
    for fld in ("name", "created"):
        if fld in cal and not isinstance(cal[fld], str):
            raise bad(fld, "a string")
