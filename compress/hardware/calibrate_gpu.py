"""Calibrate a GPU's roofline from PyTorch micro-benchmarks on the device at hand.

The GPU counterpart of calibrate.py's CPU micro-benchmarks, with the same output: a
calibration dict whose `classes` entry (keyed by the catalog target's `hw_class`, one per
GPU model: `gpu-h200`, `gpu-t4`, ...) holds `compute_efficiency`, `memory_efficiency`,
`kernel_overhead_us`, `host_overhead_us`, `gemm_curves` and `vector_rates`, which the
roofline reads unchanged. `compress calibrate` on a CUDA machine runs it; so does
benchmarks/gpu_validation.py, which also runs it on `--device cpu` (same code, smaller
sizes, the `local-cpu` class) so that the path is tested where there is no GPU.

What it times, per precision (fp32, TF32 with the flag set, fp16, bf16 where the GPU has
them), never a candidate model:
- Linear-shaped GEMMs over a grid (tokens 1..8192 x transformer feature sizes) and
  attention-shaped batched matmuls (including decode: one token against a KV cache): the
  efficiency size curves, and the scalar roofline fit kept as the fallback;
- vector ops (GELU, SiLU x up, softmax, LayerNorm, RMSNorm, add) up to sizes where they
  stream from memory, per float precision (16-bit ops move half the bytes);
- a device-memory copy much larger than L2 (memory efficiency against the catalog's
  bandwidth), chains of tiny ops (the per-kernel dispatch cost of eager PyTorch), and one
  tiny op followed by a synchronisation (the per-call host cost).

GEMMs, vector ops and tiny ops are timed back to back between two synchronisations, then
divided: the steady-state cost of one call inside a model's stream of launches (its
dispatch included, as on the CPU). Imports stay lazy (torch, numpy only) so that the GPU
machine, which has no compress dependencies beyond pydantic and PyYAML, can run it.
"""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
import time
from datetime import UTC, datetime

import numpy as np

from compress.hardware.calibrate import (
    FACTORS,
    fit_roofline,
    size_curve,
    vector_table,
)
from compress.hardware.catalog import Catalog, Target, load_catalog
from compress.hardware.microbench import copy_sizes_mb
from compress.hardware.microbench import loadavg as _loadavg
from compress.records import SCHEMA_VERSION

# log10(flops per call): a GPU's GEMMs span 1e4 (one token, small layer) to ~1e12
GPU_CURVE_GRID = np.round(np.arange(3.0, 12.51, 0.25), 2)
VECTOR_OPS = ("gelu", "silu_mul", "softmax", "layer_norm", "rms_norm", "add")
GPU_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


class Settings:
    """Sizes of the micro-benchmarks: the GPU grid, or a small one for a CPU run."""

    def __init__(self, device_type: str):
        gpu = device_type == "cuda"
        self.tokens = (1, 16, 128, 1024, 8192) if gpu else (1, 16, 128)
        self.features = (((384, 384), (576, 1536), (1536, 576), (2048, 2048), (2048, 8192),
                          (8192, 2048)) if gpu else ((384, 384), (576, 1536), (1536, 576)))
        # (batch x heads, tokens, context, head dim); decode shapes have one token
        self.attention = (((12, 128, 128, 32), (96, 128, 128, 32), (384, 512, 512, 32),
                           (9, 1, 128, 64), (288, 1, 512, 64), (1024, 512, 512, 64),
                           (32, 1, 512, 64), (1024, 1, 512, 64)) if gpu else
                          ((12, 32, 32, 32), (9, 32, 32, 64), (9, 1, 64, 64)))
        self.vector_sizes = (((64, 768), (512, 1536), (4096, 4096), (16384, 8192)) if gpu
                             else ((64, 384), (256, 1536)))
        self.copy_mb = (2048,) if gpu else copy_sizes_mb()
        self.budget_s = 0.03   # timing budget per measurement, seconds
        self.grid = GPU_CURVE_GRID


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
            "bf16": torch.bfloat16}[precision]


def set_tf32(on: bool) -> None:
    """TF32 tensor cores for fp32 matmuls ('high'), or plain fp32 ('highest', PyTorch's
    default). The API that every torch version since 1.12 keeps; it sets
    torch.backends.cuda.matmul.allow_tf32 (and, on 2.9+, its fp32_precision)."""
    import torch

    torch.set_float32_matmul_precision("high" if on else "highest")


class Timer:
    """Wall-clock timing with the device synchronised around what is timed."""

    def __init__(self, device):
        import torch

        self.device = device
        self.cuda = device.type == "cuda"
        self._sync = torch.cuda.synchronize if self.cuda else (lambda: None)

    def sync(self) -> None:
        self._sync()

    def once(self, fn) -> float:
        """Seconds of one call, synchronised before and after (a request's latency)."""
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def per_call(self, fn, budget_s: float = 0.03, min_reps: int = 3, max_reps: int = 200
                 ) -> float:
        """Median seconds of one call in a back-to-back stream (after a warm-up call): on
        a GPU, enough calls per sample to last about a millisecond, so the synchronisation
        is amortised and each call's dispatch overlaps the previous kernel as in a model."""
        self.once(fn)            # warm-up: first-call costs (cuBLAS handles, allocator)
        one = self.once(fn)
        n = int(min(1000, max(1, 1e-3 / max(one, 1e-7)))) if self.cuda else 1
        samples, start = [], time.perf_counter()
        while len(samples) < min_reps or (time.perf_counter() - start < budget_s
                                          and len(samples) < max_reps):
            self.sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            self.sync()
            samples.append((time.perf_counter() - t0) / n)
        return statistics.median(samples)


# catalog target for a CUDA device name (torch.cuda.get_device_name / nvidia-smi)
GPU_NAMES = [
    (r"\bH200\b", "H200"),
    (r"\bH100\b.*\bPCIe\b", "H100-PCIe"),
    (r"\bH100\b", "H100-SXM"),
    (r"\bA100\b.*\b80\s*GB\b", "A100-80GB"),
    (r"\bA100\b", "A100-40GB"),
    (r"\bL40S\b", "L40S"),
    (r"\bA10G\b", "A10G"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
]


def match_gpu(device_name: str, catalog: Catalog) -> str | None:
    """The catalog target a CUDA device name is, or None when the catalog has no match."""
    for pattern, name in GPU_NAMES:
        if re.search(pattern, device_name, re.I) and name in catalog.targets:
            return name
    return None


def device_info(device) -> dict:
    """Name, compute capability, driver, memory and versions of the device at hand."""
    import torch

    from compress.provenance import cpu_model

    info = {"device": device.type, "cpu_model": cpu_model(), "hostname": platform.node(),
            "platform": platform.platform(), "torch": torch.__version__}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu_name=p.name, compute_capability=f"{p.major}.{p.minor}",
                    gpu_memory_gb=round(p.total_memory / 1e9, 1),
                    multiprocessors=p.multi_processor_count, cuda=torch.version.cuda,
                    driver=_driver_version())
    else:
        info.update(threads=torch.get_num_threads())
    return info


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def resolve_target(device, catalog: Catalog, target: str | None = None) -> Target:
    """The catalog target to calibrate: named, or detected from the device."""
    from compress.errors import InputError

    if target:
        return catalog[target]
    if device.type != "cuda":
        return catalog["local-cpu"]
    import torch

    name = torch.cuda.get_device_name(device)
    found = match_gpu(name, catalog)
    if not found:
        gpus = ", ".join(n for n, t in catalog.targets.items() if t.kind == "gpu")
        raise InputError(f"GPU {name!r} matches no catalog target; name one with --target "
                         f"(catalog GPUs: {gpus})")
    return catalog[found]


def precisions_for(target: Target, device_type: str) -> list[str]:
    """The float precisions to time: those the target has a peak for (T4: no bf16)."""
    if device_type != "cuda":
        return ["fp32"]
    return [p for p in GPU_PRECISIONS if target.peak(p)]


def _vector_fn(op: str, x, y, w):
    import torch

    c = x.shape[-1]
    return {"gelu": lambda: torch.nn.functional.gelu(x),
            "silu_mul": lambda: torch.nn.functional.silu(x) * y,
            "softmax": lambda: torch.softmax(x, -1),
            "layer_norm": lambda: torch.nn.functional.layer_norm(x, (c,), w, w),
            # the eager RMSNorm of Llama-like models in transformers
            "rms_norm": lambda: w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)),
            "add": lambda: x + y}[op]


def benchmarks(device, precisions: list[str], settings: Settings, deadline: float) -> dict:
    """Time the micro-benchmarks on `device`; stop starting new ones at `deadline`
    (time.monotonic()). Returns the raw rows, the format calibrate.py stores."""
    import torch

    timer = Timer(device)
    out = {"gemm": {}, "attention": {}, "vector": {}, "copy": [], "tiny": None, "sync": None,
           "stopped_at_deadline": False}

    def late() -> bool:
        if time.monotonic() >= deadline:
            out["stopped_at_deadline"] = True
            return True
        return False

    with torch.inference_mode():
        # memory copy and overheads first: cheap, and every projection needs them
        for mb in settings.copy_mb:
            src = torch.empty(mb * 2**18, device=device)
            dst = torch.empty_like(src)
            s = timer.per_call(lambda d=dst, s_=src: d.copy_(s_), budget_s=0.1)
            out["copy"].append({"mb": mb, "flops": 0.0, "bytes": 2.0 * src.numel() * 4,
                                "seconds": s})
            del src, dst
        a = torch.ones(16, device=device)
        out["tiny"] = timer.per_call(lambda: [torch.add(a, a) for _ in range(100)]) / 100
        out["sync"] = statistics.median(timer.once(lambda: torch.add(a, a)) for _ in range(50))
        for p in precisions:
            if late():
                break
            dt = torch_dtype(p)
            set_tf32(p == "tf32")
            size = 2 if p in ("fp16", "bf16") else 4
            rows = out["gemm"].setdefault(p, [])
            for m in settings.tokens:
                for k, n in settings.features:
                    if late():
                        break
                    x = torch.randn(m, k, device=device, dtype=dt)
                    w = torch.randn(n, k, device=device, dtype=dt)
                    s = timer.per_call(lambda x=x, w=w: torch.nn.functional.linear(x, w),
                                       budget_s=settings.budget_s)
                    rows.append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                 "bytes": size * (m * k + k * n + m * n), "seconds": s})
            if p != "tf32":  # attention matmuls run in the model's float dtype
                rows = out["attention"].setdefault(p, [])
                for b, t, c, d in settings.attention:
                    if late():
                        break
                    q = torch.randn(b, t, d, device=device, dtype=dt)
                    kt = torch.randn(b, d, c, device=device, dtype=dt)
                    s = timer.per_call(lambda q=q, kt=kt: torch.bmm(q, kt),
                                       budget_s=settings.budget_s)
                    rows.append({"shape": [b, t, c, d], "flops": 2.0 * b * t * c * d,
                                 "seconds": s})
                rows = out["vector"].setdefault(p, [])
                for op in VECTOR_OPS:
                    for r, c in settings.vector_sizes:
                        if late():
                            break
                        x = torch.randn(r, c, device=device, dtype=dt)
                        y = torch.randn(r, c, device=device, dtype=dt)
                        w = torch.ones(c, device=device, dtype=dt)
                        s = timer.per_call(_vector_fn(op, x, y, w), budget_s=settings.budget_s)
                        rows.append({"op": op, "elements": float(r * c), "seconds": s})
        set_tf32(False)
    return out


def calibrate_device(device, target: Target, deadline: float | None = None,
                     settings: Settings | None = None, name: str | None = None) -> dict:
    """Micro-benchmarks on `device` fitted into `target`'s calibration class."""
    started = time.perf_counter()
    deadline = deadline or time.monotonic() + 600
    settings = settings or Settings(device.type)
    runtime = "pytorch-cuda" if device.type == "cuda" else "pytorch-cpu"
    precisions = precisions_for(target, device.type)
    load_before = _loadavg()
    raw = benchmarks(device, precisions, settings, deadline)
    bw = target.bandwidth()
    _, mem_eff, _ = fit_roofline(raw["copy"], 0.0, bw)
    compute, fits, curves = {}, {}, {}
    for p, rows in raw["gemm"].items():
        if not rows:
            continue
        peak = target.peak(p)
        e, _, o = fit_roofline(rows, peak, bw, mem_eff)
        fits[f"{runtime}:{p}"] = {"efficiency": e, "overhead_us": o * 1e6}
        compute[f"{runtime}:{p}"] = compute[p] = e
        curves[f"{runtime}:{p}"] = size_curve(rows, peak, settings.grid)
    for p, rows in raw["attention"].items():
        if rows:
            curves[f"{runtime}:attention:{p}"] = size_curve(rows, target.peak(p), settings.grid)
    rates = {}
    for p, rows in raw["vector"].items():
        if rows:  # fp32 is the runtime's own table; 16-bit ones are 'runtime:precision'
            rates[runtime if p == "fp32" else f"{runtime}:{p}"] = vector_table(rows)
    host = max(0.0, (raw["sync"] or 0.0) - (raw["tiny"] or 0.0)) if device.type == "cuda" \
        else 0.0
    info = device_info(device)
    info.update(hw_class=target.hw_class, target=target.name)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name or f"{target.hw_class}-{platform.node()}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "versions": _versions(),
        "threads": int(info.get("threads", 1)),
        "nominal": {**{f"peak_{p}_flops": target.peak(p) for p in precisions},
                    "bandwidth_bytes_s": bw},
        "classes": {target.hw_class: {
            "compute_efficiency": compute,
            "memory_efficiency": mem_eff,
            "kernel_overhead_us": {"pytorch": (raw["tiny"] or 0.0) * 1e6},
            "host_overhead_us": {"pytorch": host * 1e6},
            "gemm_curves": {k: v for k, v in curves.items() if v},
            "vector_rates": rates,
        }},
        "factors": {**FACTORS, "host_overhead_us": "fixed cost per inference call: one tiny "
                    "op and a device synchronisation, less the tiny op (PyTorch)"},
        "load_average": {"before": load_before, "after": _loadavg()},
        "fits": fits,
        "benchmarks": {"torch": raw},   # raw["stopped_at_deadline"]: cut short
        "wall_time_s": round(time.perf_counter() - started, 1),
        "method": "PyTorch micro-benchmarks only, on the device (Linear-shaped GEMMs and "
                  "attention-shaped batched matmuls over a grid of sizes per precision, "
                  "vector ops per precision, device memory copy, chains of tiny ops, one "
                  "synchronised tiny op); GEMM size curves, vector-op rates, and a "
                  "relative-error fit of the roofline form for the scalar fallbacks",
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("compress", "torch", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def calibrate_cuda(catalog: Catalog | None = None, target: str | None = None,
                   name: str | None = None) -> dict:
    """`compress calibrate` on a CUDA machine: the GPU's own class, full grid."""
    import torch

    from compress.errors import InputError

    if not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (torch "
                         f"{torch.__version__}, CUDA build {torch.version.cuda})")
    catalog = catalog or load_catalog()
    device = torch.device("cuda")
    t = resolve_target(device, catalog, target)
    if t.kind != "gpu":
        raise InputError(f"--target {t.name}: a {t.kind} target, expected a GPU")
    return calibrate_device(device, t, name=name)


def calibrate_here(device: str = "auto", threads: int = 1, target: str | None = None) -> dict:
    """Calibrate this machine: its CUDA device's GPU class (`device` cuda, or auto where
    CUDA is available), else its CPU class."""
    from compress.errors import InputError

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "auto":
        from compress.torchutil import cuda_available

        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        return calibrate_cuda(target=target)
    from compress.hardware.calibrate import calibrate

    return calibrate(threads=threads)
