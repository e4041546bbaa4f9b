"""Calibrate the roofline on the machine at hand, from micro-benchmarks only.

Fits, for this machine's hardware class: one compute efficiency per precision (and
runtime: PyTorch's and ONNX Runtime's GEMMs differ), one memory efficiency, and one fixed
overhead per kernel (per framework), plus ONNX Runtime's per-call host overhead. The
benchmarks are synthetic GEMMs over a fixed grid of transformer-like shapes, a memory copy,
and chains of tiny ops; never the candidates being judged, so a projection checked
against a candidate's measured latency is a real test of the method.

The fit uses the same roofline form the projection uses,
    t = max(flops / (peak x e), bytes / (bandwidth x m)) + kernels x overhead,
minimising relative error so that small and large shapes count alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from compress.hardware.catalog import Catalog, Target, load_catalog

# (M, K, N): tokens x in -> out, the shapes of transformer linear layers, chosen up front
GEMM_SHAPES = [(m, k, n) for m in (1, 16, 128, 512)
               for k, n in ((256, 256), (768, 768), (768, 3072), (3072, 768), (2048, 2048))]
# batched attention GEMMs (heads, tokens, head dim): scores = Q K^T and P V
BMM_SHAPES = [(16, 128, 64), (8, 512, 64), (32, 64, 128)]
def _llc_mb() -> float:
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


def copy_sizes_mb() -> tuple[int, ...]:
    """STREAM's rule: each array at least 4x the last-level cache (capped at 2 GB), so the
    copy streams from DRAM as a model's weights do."""
    return (int(min(2048, max(256, 4 * _llc_mb()))),)
# memory-bound activation ops, timed with the copies: (op, rows, cols)
ELEMENTWISE = [("gelu", 128, 3072), ("softmax", 2048, 128), ("layer_norm", 512, 768)]


def default_path() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("COMPRESS_CALIBRATION")
                or Path(user_cache_dir("compress")) / "calibration" / "calibration.json")


def _time(fn, budget_s: float = 0.12, min_reps: int = 3, max_reps: int = 200) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s
                                    and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def _torch_benchmarks(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {"gemm_fp32": [], "copy": [], "elementwise": [], "tiny": None, "gemm_int8": []}
    with torch.inference_mode():
        for m, k, n in GEMM_SHAPES:
            x, w = torch.randn(m, k), torch.randn(n, k)
            s = _time(lambda x=x, w=w: torch.nn.functional.linear(x, w))
            out["gemm_fp32"].append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                     "bytes": 4.0 * (m * k + k * n + m * n), "seconds": s})
        for h, t, d in BMM_SHAPES:
            q, kt = torch.randn(h, t, d), torch.randn(h, d, t)
            s = _time(lambda q=q, kt=kt: torch.bmm(q, kt))
            out["gemm_fp32"].append({"shape": [h, t, d, t], "flops": 2.0 * h * t * t * d,
                                     "bytes": 4.0 * (2 * h * t * d + h * t * t), "seconds": s})
        for op, r, c in ELEMENTWISE:
            x = torch.randn(r, c)
            fn = {"gelu": lambda x=x: torch.nn.functional.gelu(x),
                  "softmax": lambda x=x: torch.softmax(x, -1),
                  "layer_norm": lambda x=x, c=c: torch.nn.functional.layer_norm(x, (c,))}[op]
            out["elementwise"].append({"op": op, "flops": 0.0, "bytes": 2.0 * r * c * 4,
                                       "seconds": _time(fn)})  # recorded, not fitted
        for mb in copy_sizes_mb():
            src = torch.empty(mb * 2**18)
            dst = torch.empty_like(src)
            s = _time(lambda d=dst, s_=src: d.copy_(s_))
            out["copy"].append({"mb": mb, "flops": 0.0, "bytes": 2.0 * src.numel() * 4,
                                "seconds": s})
        a = torch.ones(16)
        s = _time(lambda: [torch.add(a, a) for _ in range(100)]) / 100
        out["tiny"] = s
        try:  # torch.ao dynamic INT8 Linear (fbgemm/onednn), what torch-dynamic-int8 runs
            from torch.ao.nn.quantized.dynamic import Linear as QLinear

            for m, k, n in GEMM_SHAPES:
                lin = QLinear(k, n, dtype=torch.qint8)
                x = torch.randn(m, k)
                s = _time(lambda lin=lin, x=x: lin(x))
                out["gemm_int8"].append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                         "bytes": k * n + 4.0 * m * n + 5.0 * m * k,
                                         "seconds": s})
        except Exception as exc:  # noqa: BLE001 - optional kernel family
            out["gemm_int8_error"] = repr(exc)
    return out


def _ort_session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _matmul_model(k: int, n: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.randn(k, n).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "mm",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                          [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=onnx.IR_VERSION_2023 if hasattr(onnx, "IR_VERSION_2023")
                             else 9)


def _chain_model(n: int):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["X" if i == 0 else f"h{i}", "X"],
                              ["Y" if i == n - 1 else f"h{i + 1}"]) for i in range(n)]
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [16])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [16])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _ort_benchmarks(threads: int) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = {"gemm_fp32": [], "gemm_int8": [], "chain": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for _, k, n in GEMM_SHAPES:
            if (k, n) in models:
                continue
            fp = Path(tmp) / f"mm{k}x{n}.onnx"
            q = Path(tmp) / f"mm{k}x{n}.int8.onnx"
            fp.write_bytes(_matmul_model(k, n).SerializeToString())
            quantize_dynamic(str(fp), str(q), weight_type=QuantType.QInt8)
            models[(k, n)] = (_ort_session(str(fp), threads), _ort_session(str(q), threads))
        for m, k, n in GEMM_SHAPES:
            x = np.random.randn(m, k).astype(np.float32)
            fp, q = models[(k, n)]
            for key, sess, wb in (("gemm_fp32", fp, 4.0), ("gemm_int8", q, 1.0)):
                s = _time(lambda sess=sess, x=x: sess.run(None, {"X": x}))
                extra = 5.0 * m * k if key == "gemm_int8" else 0.0  # read x, write int8 x
                out[key].append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                 "bytes": wb * k * n + 4.0 * (m * k + m * n) + extra,
                                 "kernels": 3 if key == "gemm_int8" else 1, "seconds": s})
        x = np.ones(16, np.float32)
        for n in (1, 8, 32):
            sess = _ort_session(_chain_model(n).SerializeToString(), threads)
            s = _time(lambda s=sess: s.run(None, {"X": x}))
            out["chain"].append({"nodes": n, "seconds": s})
    return out


def machine_info(target: Target, threads: int) -> dict:
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cores": target.cores, "threads": threads,
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
    peak32, peak8 = target.peak("fp32"), target.peak("int8")
    bw = target.bandwidth_gbps * 1e9 / max(1, target.cores or 1)  # nominal, per worker
    tb = _torch_benchmarks(threads)
    ob = _ort_benchmarks(threads)
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
    result = {
        "name": name or f"{target.hw_class}-{platform.node()}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(target, threads),
        "versions": versions(),
        "threads": threads,
        "nominal": {"peak_fp32_flops": peak32, "peak_int8_ops": peak8,
                    "bandwidth_bytes_s": bw},
        "classes": {target.hw_class: {
            "compute_efficiency": compute,
            "memory_efficiency": mem_eff,
            "kernel_overhead_us": {"pytorch": tb["tiny"] * 1e6, "onnxruntime": slope * 1e6},
            "host_overhead_us": {"onnxruntime": host * 1e6, "pytorch": 0.0},
        }},
        "fits": fits,
        "benchmarks": {"torch": tb, "onnxruntime": ob},
        "wall_time_s": round(time.perf_counter() - started, 1),
        "method": "micro-benchmarks only (GEMM per precision and runtime, memory copy, "
                  "chains of tiny ops); relative-error fit of the roofline form",
    }
    return result


def save(calibration: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration, indent=2))
    tmp.replace(p)
    return p


def load(path: str | Path | None = None) -> dict | None:
    """A stored calibration (default: the user cache one), or None when there is none."""
    p = Path(path) if path else default_path()
    if not p.is_file():
        if path:
            from compress.errors import InputError

            raise InputError(f"{p}: no calibration file; run `compress calibrate --out {p}`")
        return None
    cal = json.loads(p.read_text())
    cal.setdefault("path", str(p))
    return cal
