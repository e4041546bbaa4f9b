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
- One memory efficiency (a DRAM-sized copy), one fixed overhead per kernel (chains of tiny
  ops), and ONNX Runtime's per-call host overhead.
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
BMM_SHAPES = [(16, 128, 64), (8, 512, 64), (32, 64, 128)]   # for the scalar fit
# attention-shaped batched matmuls for the size curve: (batch x heads, tokens, context, head
# dim); includes decode-shaped ones (one token against a KV cache)
ATTN_SHAPES = [(4, 16, 16, 32), (12, 32, 32, 64), (12, 128, 128, 32), (12, 128, 128, 64),
               (9, 64, 64, 64), (16, 256, 256, 64), (9, 1, 128, 64), (9, 1, 512, 64)]
# vector ops for the throughput table: (rows, cols) at two sizes, cache-resident and larger
VECTOR_OPS = ("gelu", "silu_mul", "softmax", "layer_norm", "rms_norm", "add")
VECTOR_SIZES = ((64, 768), (512, 1536))
CURVE_GRID = np.round(np.arange(3.0, 10.51, 0.25), 2)   # log10(flops per call)
CURVE_SIGMA = 0.35                                       # smoothing width, decades
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


FACTORS = {
    "compute_efficiency": "scalar fallback: fraction of the nominal peak (catalog, per "
                          "precision) one GEMM family reaches, fitted over all GEMM shapes; "
                          "used only where no size curve applies",
    "memory_efficiency": "fraction of the nominal per-core DRAM bandwidth a large copy "
                         "reaches",
    "kernel_overhead_us": "fixed cost per op dispatch (PyTorch eager) or graph node (ORT), "
                          "from chains of tiny ops",
    "host_overhead_us": "fixed cost per inference call (ORT session.run), charged once",
    "gemm_curves": "'runtime:precision' (Linear GEMMs) and 'runtime:attention:precision' "
                   "(batched matmuls): [[flops per call, efficiency], ...]; efficiency = "
                   "flops / (peak x seconds) of one measured call (dispatch and dynamic "
                   "activation quantization included, ORT host overhead excluded), smoothed "
                   "over log10(flops); interpolated log-log, clamped at the ends",
    "vector_rates": "runtime -> op -> [[elements per call, elements per second], ...] for "
                    "GELU, SiLU x up, softmax, LayerNorm, RMSNorm and add; interpolated "
                    "log-log in elements, clamped at the ends",
}


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


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
    out = {"gemm_fp32": [], "copy": [], "elementwise": [], "tiny": None, "gemm_int8": [],
           "attention_fp32": [], "vector": []}
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
        for b, t, c, d in ATTN_SHAPES:
            q, kt = torch.randn(b, t, d), torch.randn(b, d, c)
            s = _time(lambda q=q, kt=kt: torch.bmm(q, kt))
            out["attention_fp32"].append({"shape": [b, t, c, d], "flops": 2.0 * b * t * c * d,
                                          "seconds": s})
        for op in VECTOR_OPS:
            for r, c in VECTOR_SIZES:
                x, y = torch.randn(r, c), torch.randn(r, c)
                w = torch.ones(c)
                fn = {"gelu": lambda x=x: torch.nn.functional.gelu(x),
                      "silu_mul": lambda x=x, y=y: torch.nn.functional.silu(x) * y,
                      "softmax": lambda x=x: torch.softmax(x, -1),
                      "layer_norm": lambda x=x, c=c, w=w: torch.nn.functional.layer_norm(
                          x, (c,), w, w),
                      # the eager RMSNorm of Llama-like models in transformers
                      "rms_norm": lambda x=x, w=w: w * (x * torch.rsqrt(
                          x.pow(2).mean(-1, keepdim=True) + 1e-6)),
                      "add": lambda x=x, y=y: x + y}[op]
                out["vector"].append({"op": op, "elements": float(r * c),
                                      "seconds": _time(fn, budget_s=0.08)})
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


def _model(nodes, inputs, output, inits=(), opset=17):
    import onnx  # noqa: F401 - helper needs the package
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "op",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                           for n, s in inputs],
                          [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _vector_model(op: str, c: int):
    """The op as torch.onnx exports it (ONNX Runtime's optimizer fuses GELU and RMSNorm
    the same way it does in an exported model)."""
    from onnx import helper, numpy_helper

    def const(name, v):
        return numpy_helper.from_array(np.asarray(v, np.float32), name)
    n = helper.make_node
    inp = [("X", ["R", c])]
    if op == "gelu":
        nodes = [n("Div", ["X", "sqrt2"], ["a"]), n("Erf", ["a"], ["b"]),
                 n("Add", ["b", "one"], ["d"]), n("Mul", ["X", "d"], ["e"]),
                 n("Mul", ["e", "half"], ["Y"])]
        inits = [const("sqrt2", 2 ** 0.5), const("one", 1.0), const("half", 0.5)]
    elif op == "silu_mul":
        nodes = [n("Sigmoid", ["X"], ["s"]), n("Mul", ["X", "s"], ["a"]),
                 n("Mul", ["a", "U"], ["Y"])]
        inits, inp = [], inp + [("U", ["R", c])]
    elif op == "softmax":
        nodes, inits = [n("Softmax", ["X"], ["Y"], axis=-1)], []
    elif op == "layer_norm":
        nodes = [n("LayerNormalization", ["X", "w", "bias"], ["Y"], axis=-1, epsilon=1e-12)]
        inits = [const("w", np.ones(c)), const("bias", np.zeros(c))]
    elif op == "rms_norm":
        nodes = [n("Pow", ["X", "two"], ["p"]), n("ReduceMean", ["p"], ["m"], axes=[-1]),
                 n("Add", ["m", "eps"], ["v"]), n("Sqrt", ["v"], ["r"]),
                 n("Div", ["X", "r"], ["a"]), n("Mul", ["a", "w"], ["Y"])]
        inits = [const("two", 2.0), const("eps", 1e-6), const("w", np.ones(c))]
    else:  # add
        nodes, inits, inp = [n("Add", ["X", "U"], ["Y"])], [], inp + [("U", ["R", c])]
    return _model(nodes, inp, "Y", inits)


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

    from compress.quiet import quiet_fds

    out = {"gemm_fp32": [], "gemm_int8": [], "chain": [], "attention_fp32": [], "vector": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for _, k, n in GEMM_SHAPES:
            if (k, n) in models:
                continue
            fp = Path(tmp) / f"mm{k}x{n}.onnx"
            q = Path(tmp) / f"mm{k}x{n}.int8.onnx"
            fp.write_bytes(_matmul_model(k, n).SerializeToString())
            with quiet_fds():  # ORT's "consider pre-processing" advice is noise here
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
        for b, t, c, d in ATTN_SHAPES:
            from onnx import helper

            sess = _ort_session(_model([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                                       [("A", [b, t, d]), ("B", [b, d, c])], "Y")
                                .SerializeToString(), threads)
            a = np.random.randn(b, t, d).astype(np.float32)
            bm = np.random.randn(b, d, c).astype(np.float32)
            s = _time(lambda sess=sess, a=a, bm=bm: sess.run(None, {"A": a, "B": bm}))
            out["attention_fp32"].append({"shape": [b, t, c, d], "flops": 2.0 * b * t * c * d,
                                          "seconds": s})
        for op in VECTOR_OPS:
            for r, c in VECTOR_SIZES:
                sess = _ort_session(_vector_model(op, c).SerializeToString(), threads)
                feeds = {i.name: np.random.randn(r, c).astype(np.float32)
                         for i in sess.get_inputs()}
                s = _time(lambda sess=sess, f=feeds: sess.run(None, f), budget_s=0.08)
                out["vector"].append({"op": op, "elements": float(r * c), "seconds": s})
        x = np.ones(16, np.float32)
        for n in (1, 8, 32):
            sess = _ort_session(_chain_model(n).SerializeToString(), threads)
            s = _time(lambda s=sess: s.run(None, {"X": x}))
            out["chain"].append({"nodes": n, "seconds": s})
    return out


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
    load_before = _loadavg()
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

    def net(rows, less):  # ORT's per-run host overhead is charged once per inference
        return [dict(r, seconds=max(0.3 * r["seconds"], r["seconds"] - less)) for r in rows]
    curves = {"pytorch-cpu:fp32": size_curve(tb["gemm_fp32"][:len(GEMM_SHAPES)], peak32),
              "pytorch-cpu:int8": size_curve(tb["gemm_int8"], peak8),
              "pytorch-cpu:attention:fp32": size_curve(tb["attention_fp32"], peak32),
              "ort-cpu:fp32": size_curve(net(ob["gemm_fp32"], host), peak32),
              "ort-cpu:int8": size_curve(net(ob["gemm_int8"], host), peak8),
              "ort-cpu:attention:fp32": size_curve(net(ob["attention_fp32"], host), peak32)}
    rates = {"pytorch-cpu": vector_table(tb["vector"]),
             "ort-cpu": vector_table(net(ob["vector"], host))}
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
            "gemm_curves": {k: v for k, v in curves.items() if v},
            "vector_rates": rates,
        }},
        "factors": FACTORS,
        "load_average": {"before": load_before, "after": _loadavg()},
        "fits": fits,
        "benchmarks": {"torch": tb, "onnxruntime": ob},
        "wall_time_s": round(time.perf_counter() - started, 1),
        "method": "micro-benchmarks only (GEMMs and attention-shaped batched matmuls over a "
                  "grid of sizes per precision and runtime, vector ops, memory copy, chains "
                  "of tiny ops); size curves of GEMM efficiency, vector-op rates, and a "
                  "relative-error fit of the roofline form for the scalar fallbacks",
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
    from compress.results import read_json

    cal = read_json(p, "a calibration JSON (compress calibrate --out)")
    check_calibration(cal, p)
    cal.setdefault("path", str(p))
    return cal


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
        for fld in ("compute_efficiency", "kernel_overhead_us", "host_overhead_us"):
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
        for fld in ("gemm_curves", "vector_rates"):
            if not isinstance(fit.get(fld) or {}, dict):
                raise bad(f"classes.{name}.{fld}", "an object")
    for fld in ("name", "created"):
        if fld in cal and not isinstance(cal[fld], str):
            raise bad(fld, "a string")
