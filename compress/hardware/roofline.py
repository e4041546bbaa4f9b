"""Roofline projection of one candidate onto one target, through one runtime.

Per op group: time = max(FLOPs / (peak[precision] x compute_eff[precision]),
                         bytes / (bandwidth x memory_eff)) + kernels x kernel overhead,
plus a host overhead per inference. Efficiencies and overheads come from a calibration
of the target's hardware class (micro-benchmarks only, see calibrate.py) or, without one,
the catalog's published defaults; the projection says which.

Where the calibration of the target's class has them (the machine that ran
`compress calibrate`), two measured refinements replace the scalar factors:
- GEMMs and attention matmuls take their efficiency from the size curve at the group's
  flops PER CALL (a 64-token GEMM is charged what a 64-token GEMM reached, not what a
  512 x 3072 one did); the measured call includes its dispatch, so only attention's other
  kernels (transposes, scale, mask) add the per-kernel overhead;
- vector ops (GELU, SiLU x up, softmax, LayerNorm/RMSNorm, add) take
  elements / measured elements-per-second, which on one CPU thread exceeds bytes /
  bandwidth: they are bound by their arithmetic, not by memory.
Both are still max()-ed with the memory time, which covers weights streamed from DRAM
(decode) that the cache-resident micro-benchmarks do not see.
- Decode (one token per sequence): a GEMM at batch 1 is a GEMV that reads every stored
  weight once; it is charged its stored weight bytes at the measured batch-1 GEMV rate of
  the runtime and the artifact's format (`gemv_rates`: DRAM-sized chains, dispatch and
  INT8/INT4 unpacking included), not at the copy bandwidth; at batch > 1 the larger of that
  and the GEMM-curve compute time.
- A vector op costs at least its dispatch (kernels x overhead): at decode sizes (one row)
  the per-element rates measured on larger tensors would make it nearly free.
- In a decode step every dispatch runs with caches the GEMVs just flushed: where the
  calibration measured it (`decode_overhead_us`, dispatch.py), each non-GEMV op of a
  decode step costs that, not the hot-chain `kernel_overhead_us`; and the ops counted
  from the artifact's own graph or eager code path (nodes.py) are charged, not a
  per-layer estimate (the group "other ops").

A candidate is projected only through a runtime that can run THIS artifact at its
precision (the catalog's runtime table, the target's compute capability and peaks);
otherwise the pair is "unsupported", with the reason. Every figure is labelled projected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compress.hardware.catalog import Catalog, Target
from compress.hardware.formats import ArtifactInfo
from compress.hardware.work import Work


@dataclass
class Efficiency:
    """The derating of a target's peaks: from a calibration or published defaults."""

    compute: dict[str, float]           # "runtime:precision" or "precision" -> fraction
    memory: float
    kernel_overhead_s: float
    host_overhead_s: float
    source: str                          # calibration name/date, or default_efficiency_label
    default_compute: float = 0.7
    curves: dict[str, list] = field(default_factory=dict)        # calibrate.py `gemm_curves`
    vector_rates: dict[str, dict] = field(default_factory=dict)  # runtime -> op -> table
    gemv_rates: dict[str, list] = field(default_factory=dict)    # "runtime:format" -> table
    decode_overhead_s: float | None = None   # per op in a decode step (cold), if measured

    def gemv_rate(self, runtime: str, fmt: str | None, bytes_per_call: float
                  ) -> float | None:
        """Measured stored-weight bytes per second of a batch-1 GEMV in this format and
        runtime at this size, or None without a measurement."""
        table = self.gemv_rates.get(f"{runtime}:{fmt}")
        if not table or not bytes_per_call:
            return None
        from compress.hardware.calibrate import interp_log

        return interp_log(table, bytes_per_call)

    def curve(self, runtime: str, kind: str, precision: str, flops_per_call: float
              ) -> float | None:
        """Measured efficiency of one call of this size, or None without a curve."""
        key = f"{runtime}:attention:{precision}" if kind == "attention" \
            else f"{runtime}:{precision}"
        table = self.curves.get(key)
        if not table or not flops_per_call:
            return None
        from compress.hardware.calibrate import interp_log

        return interp_log(table, flops_per_call)

    def vector_rate(self, runtime: str, op: str | None, elements_per_call: float,
                    precision: str | None = None) -> float | None:
        """Measured elements per second of the vector op at this size, or None. A table
        measured at the op's precision ('runtime:precision', a GPU's 16-bit ops move half
        the bytes) wins over the runtime's own (fp32)."""
        table = ((self.vector_rates.get(f"{runtime}:{precision}") or {}).get(op or "")
                 or (self.vector_rates.get(runtime) or {}).get(op or ""))
        if not table or not elements_per_call:
            return None
        from compress.hardware.calibrate import interp_log

        return interp_log(table, elements_per_call)

    def for_precision(self, runtime: str, precision: str) -> tuple[float, str]:
        for key in (f"{runtime}:{precision}", precision):
            if key in self.compute:
                return self.compute[key], self.source
        if self.source.startswith("default efficiencies"):
            return self.default_compute, self.source
        return self.default_compute, f"default efficiency for {precision}, not in {self.source}"


def default_efficiency_label(target_kind: str = "gpu") -> str:
    """The one label a projection carries when no calibration covers its hardware class:
    the console table, the JSON, the HTML and benchmarks/gpu_validation.py all use it."""
    return f"default efficiencies, not calibrated on this {target_kind.upper()} class"


def efficiency_for(target: Target, catalog: Catalog, framework: str,
                   calibration: dict | None = None) -> Efficiency:
    d = catalog.defaults
    cls = ((calibration or {}).get("classes") or {}).get(target.hw_class)
    if cls:
        k = cls.get("kernel_overhead_us") or {}
        h = cls.get("host_overhead_us") or {}
        return Efficiency(
            compute=dict(cls.get("compute_efficiency") or {}),
            memory=float(cls.get("memory_efficiency", d.memory_efficiency)),
            kernel_overhead_s=float(k.get(framework, d.kernel_overhead_us[target.kind])) / 1e6,
            host_overhead_s=float(h.get(framework, d.host_overhead_us[target.kind])) / 1e6,
            source=f"calibration '{calibration.get('name', '?')}' of class "
                   f"{target.hw_class} ({calibration.get('created', '?')[:10]})",
            default_compute=d.compute_efficiency,
            curves=dict(cls.get("gemm_curves") or {}),
            vector_rates=dict(cls.get("vector_rates") or {}),
            gemv_rates=dict(cls.get("gemv_rates") or {}),
            decode_overhead_s=(float((cls.get("decode_overhead_us") or {})[framework]) / 1e6
                               if framework in (cls.get("decode_overhead_us") or {})
                               else None))
    return Efficiency({}, d.memory_efficiency, d.kernel_overhead_us[target.kind] / 1e6,
                      d.host_overhead_us[target.kind] / 1e6,
                      default_efficiency_label(target.kind),
                      d.compute_efficiency)


def runtimes_for(info: ArtifactInfo, target: Target, catalog: Catalog) -> list[str]:
    """The runtimes of the artifact's framework on the target's kind of device."""
    return [name for name, rt in catalog.runtimes.items()
            if rt.device == target.kind and rt.framework == info.framework]


def compute_precision(info: ArtifactInfo, catalog: Catalog) -> str:
    fmt = catalog.formats.get(info.format or "")
    if fmt is None or fmt.compute == "model":
        return info.model_dtype
    return fmt.compute


def capability(info: ArtifactInfo, target: Target, runtime: str, catalog: Catalog
               ) -> str | None:
    """None when `runtime` runs this artifact fast on `target`, else the reason why not."""
    if info.format is None:
        return info.why_unknown or "unknown format"
    rt = catalog.runtimes[runtime]
    if info.format in rt.slow:
        return f"{runtime}: {rt.slow[info.format]}"
    if info.format not in rt.fast:
        return f"{runtime} has no fast kernels for {info.format}"
    if info.format in rt.requires:
        return (f"{runtime}: {info.format} is fast only under {rt.requires[info.format]}, "
                "which compress does not apply (it measures and serves eager PyTorch)")
    need = rt.fast[info.format]
    cc = target.compute_capability
    if target.kind == "gpu" and need and (cc is None or cc < need):
        return (f"{info.format} on {runtime} needs compute capability {need:g}+; "
                f"{target.name} has {cc:g}")
    for p in {compute_precision(info, catalog), info.model_dtype}:
        if not target.peak(p):
            extra = f" (compute capability {cc:g})" if cc else ""
            return f"{target.name}{extra} has no {p} {'tensor cores' if cc else 'kernels'}"
    return None


@dataclass
class Projection:
    """Projected time of one Work on one target through one runtime."""

    target: str
    runtime: str
    phase: str
    batch_size: int
    seq_len: int
    time_s: float
    compute_s: float
    memory_s: float
    overhead_s: float
    efficiency_source: str
    rows: list[dict] = field(default_factory=list)
    provenance: str = "projected"

    @property
    def ms(self) -> float:
        return self.time_s * 1e3


def project(work: Work, target: Target, runtime: str, eff: Efficiency,
            kernel_scale: float = 1.0, matmul_precision: dict[str, str] | None = None
            ) -> Projection:
    """The roofline time of `work` on `target` (per single-stream worker).

    `matmul_precision` maps a precision to the one the runtime's matmuls run at by default
    where the target has it (the catalog's runtime field: ORT CUDA runs fp32 as tf32)."""
    bw = target.bandwidth() * eff.memory
    kov = eff.decode_overhead_s if work.phase == "decode" and eff.decode_overhead_s \
        else eff.kernel_overhead_s
    rows, total, comp_s, mem_s, over_s = [], 0.0, 0.0, 0.0, 0.0
    for g in work.groups:
        c, kernels, how = 0.0, g.kernels, "scalar"
        precision = g.precision
        if g.kind in ("gemm", "head", "attention") and (matmul_precision or {}).get(precision) \
                and target.peak(matmul_precision[precision]):
            precision = matmul_precision[precision]
        gemv = eff.gemv_rate(runtime, g.format or work.format,
                             g.weight_bytes / max(1, g.calls)) \
            if work.phase == "decode" and g.kind in ("gemm", "head") and g.weight_bytes \
            else None
        if g.flops:
            peak = target.peak(precision)
            if not peak:
                raise ValueError(f"{target.name} has no {precision} peak")
            e = eff.curve(runtime, g.kind, precision, g.flops_per_call) \
                if g.kind in ("gemm", "head", "attention") else None
            if e is not None:
                how = "size curve"
                kernels = max(0, g.kernels - g.calls) if g.kind == "attention" else 0
            else:
                e, _ = eff.for_precision(runtime, precision)
            c = g.flops / (peak * e)
        elif g.op:
            rate = eff.vector_rate(runtime, g.op, g.elements_per_call, g.precision)
            if rate:
                # never below its dispatch: at one row the rate of a large tensor is no guide
                c, how = max(g.elements / rate, kernels * kov), "vector rate"
                kernels = 0
        m = g.bytes / bw if bw else 0.0
        if gemv:
            # batch-1 GEMV: the stored weights at the measured rate (dispatch included)
            m = g.weight_bytes / gemv + g.act_bytes / bw if bw else g.weight_bytes / gemv
            c = c if work.batch_size * work.seq_len > 1 else 0.0
            kernels, how = 0, "gemv rate"
        o = kernels * kernel_scale * kov
        t = max(c, m) + o
        rows.append({"group": g.name, "precision": precision, "compute_ms": c * 1e3,
                     "memory_ms": m * 1e3, "overhead_ms": o * 1e3, "time_ms": t * 1e3,
                     "bound": "compute" if c >= m else "memory", "efficiency": how})
        total += t
        comp_s += c
        mem_s += m
        over_s += o
    total += eff.host_overhead_s
    return Projection(target.name, runtime, work.phase, work.batch_size, work.seq_len, total,
                      comp_s, mem_s, over_s + eff.host_overhead_s, eff.source, rows)
