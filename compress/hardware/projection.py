"""Project one measured candidate onto every target: the glue between formats, work and
roofline, at the suite's batch size and sequence length.

For each (candidate, target, runtime) it yields either a projected latency (forward, or
prefill + per-token decode for causal LMs), the memory the batch needs, and the
efficiency source; or `unsupported` with the reason. On `local-cpu` the candidate's own
measured figures are reported as measured; projections elsewhere are labelled projected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compress.hardware.catalog import Catalog, Target
from compress.hardware.formats import ArtifactInfo, inspect_artifact
from compress.hardware.roofline import (
    capability,
    compute_precision,
    efficiency_for,
    project,
    runtimes_for,
)
from compress.hardware.work import arch_from, count_work


@dataclass
class Setting:
    """What one request is: batch, prompt/input length, and generated tokens (causal-lm)."""

    seq_len: int = 128
    gen_tokens: int = 0       # 0: one forward pass per request

    @property
    def decode_context(self) -> int:
        return self.seq_len + max(1, self.gen_tokens) // 2   # mean KV length while decoding

    @classmethod
    def of_suite(cls, suite) -> Setting:
        """The request a suite measures: its first sequence length, and its generated
        tokens for causal-lm."""
        gen = suite.latency.gen_tokens if suite.task == "causal-lm" else 0
        return cls((suite.latency.seq_lens or [128])[0], gen)


@dataclass
class TargetProjection:
    candidate: str
    target: str
    runtime: str | None
    supported: bool
    reason: str | None = None
    format: str | None = None
    precision: str | None = None
    batch_size: int = 1
    latency_ms: float | None = None          # forward, or prefill
    decode_ms_per_token: float | None = None
    request_ms: float | None = None          # one request of the batch, end to end
    memory_bytes: float | None = None        # weights + activations + workspace
    efficiency_source: str | None = None
    groups: list[dict] = field(default_factory=list)


class CandidateModel:
    """A candidate's artifact, inspected once, projectable at any batch size."""

    def __init__(self, name: str, artifact_path, kind: str, info: ArtifactInfo | None = None):
        self.name = name
        self.info = info or inspect_artifact(artifact_path, kind)
        self.arch = None
        self.error = None
        self._dispatch: dict[int | None, int | None] = {}
        try:
            self.arch = arch_from(self.info)
        except (ValueError, TypeError, KeyError) as exc:
            self.error = f"cannot count the work: {exc}"

    def decode_dispatch_ops(self, prompt: int) -> int | None:
        """The non-GEMV ops one decode step dispatches, counted from this artifact (ONNX:
        the nodes ORT runs, whatever the prompt: counted once; PyTorch: the eager ops of
        its architecture after that prompt), or None."""
        path = self.info.path
        onnx = self.info.framework == "onnxruntime" and path is not None
        key = None if onnx else prompt
        if key not in self._dispatch:
            from compress.hardware.nodes import eager_decode_ops, ort_node_counts

            counts = None
            if onnx:
                onnx_files = sorted(path.glob("*.onnx"))
                counts = ort_node_counts(onnx_files[0]) if onnx_files else None
                counts = counts and {"ops": counts["nodes"], "gemv": counts["gemv"]}
            elif self.arch is not None and self.info.config:
                counts = eager_decode_ops(self.info.config, self.arch.n_layers, prompt)
            self._dispatch[key] = counts["ops"] - counts["gemv"] if counts else None
        return self._dispatch[key]

    def supported(self, target: Target, catalog: Catalog) -> list[tuple[str, str | None]]:
        """(runtime, reason or None) for every runtime of its framework on the target."""
        rts = runtimes_for(self.info, target, catalog)
        if not rts:
            return [(None, f"no {self.info.framework} runtime for {target.kind} in the catalog")]
        return [(rt, self.error or capability(self.info, target, rt, catalog)) for rt in rts]

    def project(self, target: Target, runtime: str, catalog: Catalog, setting: Setting,
                batch_size: int, calibration: dict | None = None) -> TargetProjection:
        info, fw = self.info, self.info.framework
        eff = efficiency_for(target, catalog, fw, calibration)
        scale = catalog.runtimes[runtime].kernel_scale
        mm = catalog.runtimes[runtime].matmul_precision
        first = count_work(info, catalog.formats, batch_size, setting.seq_len,
                           "prefill" if setting.gen_tokens else "forward", arch=self.arch)
        p1 = project(first, target, runtime, eff, scale, mm)
        out = TargetProjection(self.name, target.name, runtime, True, format=info.format,
                               precision=compute_precision(info, catalog),
                               batch_size=batch_size, latency_ms=p1.ms,
                               efficiency_source=eff.source, groups=p1.rows)
        act = first.activation_bytes
        request = p1.ms
        if setting.gen_tokens:
            # counted dispatches only where their cost in decode was measured (CPU classes
            # calibrated with dispatch.py); elsewhere the per-layer estimate stays
            ops = self.decode_dispatch_ops(setting.seq_len) \
                if eff.decode_overhead_s else None
            dec = count_work(info, catalog.formats, batch_size, setting.seq_len, "decode",
                             context=setting.decode_context, arch=self.arch,
                             dispatch_ops=ops)
            p2 = project(dec, target, runtime, eff, scale, mm)
            out.decode_ms_per_token = p2.ms
            request += setting.gen_tokens * p2.ms
            act = max(act, dec.activation_bytes)
        out.request_ms = request
        ws = catalog.defaults.workspace_gb[target.kind] * 1e9
        out.memory_bytes = first.resident_bytes + act + ws
        return out
