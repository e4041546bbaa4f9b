"""The work of one inference: FLOPs per precision and bytes moved, per op group.

Counted from the architecture's own shapes (config.json, overridden per layer by the
stored weight shapes of a pruned model) and the artifact's format, never from a traced or
loaded model: torch's FlopCounterMode counts 0 for quantized modules, and summing
parameters() is wrong for packed weights. Works for BERT-like encoders and Llama/GPT-like
decoders. Causal LMs get two phases: prefill (the prompt, all positions) and decode (one
token per step, reading every weight and the KV cache).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compress.hardware.formats import ArtifactInfo

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "int4": 0.5}
GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "smollm"}

# Kernels (or eager op dispatches) per op group and framework, estimated from the graphs
# these runtimes execute: eager PyTorch dispatches views/transposes as ops too.
KERNELS = {
    "pytorch": {"gemm": 1, "attention": 6, "norm": 1, "act": 1, "residual": 1, "embed": 4},
    "onnxruntime": {"gemm": 2, "attention": 8, "norm": 1, "act": 5, "residual": 1, "embed": 4},
    # OpenVINO's CPU plugin fuses bias, activation and FakeQuantize into its GEMMs
    # (estimate: the same graph as ONNX Runtime, GEMM epilogues fused)
    "openvino": {"gemm": 1, "attention": 8, "norm": 1, "act": 1, "residual": 1, "embed": 4},
}
QUANT_KERNELS = 2  # dynamic activation quantization adds quantize (+ dequantize) per GEMM


@dataclass
class LayerShape:
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int


@dataclass
class Arch:
    """The shapes that set the work, one entry per layer (pruned models differ by layer)."""

    model_type: str
    hidden: int
    vocab: int
    layers: list[LayerShape]
    gated_ffn: bool
    decoder: bool
    num_labels: int = 0

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def _get(cfg: dict, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return default


LAYER_RE = re.compile(r"(?:layers?|h|blocks?)\.(\d+)\.")


def arch_from(info: ArtifactInfo) -> Arch:
    """Architecture shapes from config.json, with per-layer sizes from the stored weights
    (or the config's pruned_heads / per-layer lists) where a pruned model differs."""
    cfg = info.config or {}
    if not cfg:
        raise ValueError("no config.json in the artifact: cannot count its work")
    mt = str(cfg.get("model_type", ""))
    hidden = int(_get(cfg, "hidden_size", "n_embd", "d_model", "dim"))
    n = int(_get(cfg, "num_hidden_layers", "n_layer", "n_layers", "num_layers"))
    heads = int(_get(cfg, "num_attention_heads", "n_head", "num_heads"))
    kv = int(_get(cfg, "num_key_value_heads", default=heads))
    hd = int(_get(cfg, "head_dim", default=hidden // heads))
    inter = int(_get(cfg, "intermediate_size", "n_inner", "hidden_dim", "ffn_dim",
                     default=4 * hidden) or 4 * hidden)
    vocab = int(_get(cfg, "vocab_size", default=0))
    gated = mt in GATED or str(cfg.get("hidden_act", "")).lower() in ("silu", "swiglu")
    decoder = bool(cfg.get("is_decoder")) or mt in GATED | {"gpt2", "gpt_neox", "opt",
                                                           "falcon", "phi"} \
        or any(a.endswith("CausalLM") or a.endswith("LMHeadModel")
               for a in cfg.get("architectures") or [])
    layers = [LayerShape(heads, kv, hd, inter) for _ in range(n)]
    # per-layer lists some pruning tools record in the config
    for key in ("layer_intermediate_sizes", "intermediate_sizes"):
        if isinstance(cfg.get(key), list) and len(cfg[key]) == n:
            for ly, size in zip(layers, cfg[key], strict=True):
                ly.intermediate = int(size)
    for key in ("layer_num_attention_heads", "num_attention_heads_per_layer"):
        if isinstance(cfg.get(key), list) and len(cfg[key]) == n:
            for ly, h in zip(layers, cfg[key], strict=True):
                ly.heads = ly.kv_heads = int(h)
    for i, pruned in (cfg.get("pruned_heads") or {}).items():
        if int(i) < n:
            layers[int(i)].heads -= len(pruned)
            layers[int(i)].kv_heads = layers[int(i)].heads
    _shapes_from_weights(info.tensor_shapes, layers, hidden)
    labels = len(cfg.get("id2label") or {}) if "ForSequenceClassification" in str(
        cfg.get("architectures")) else 0
    return Arch(mt, hidden, vocab, layers, gated, decoder, labels)


def _shapes_from_weights(shapes: dict[str, list[int]], layers: list[LayerShape],
                         hidden: int) -> None:
    """Stored weight shapes win over the config: a structurally pruned layer's Linear
    weights say how many heads and FFN neurons it kept."""
    for name, shape in shapes.items():
        m = LAYER_RE.search(name)
        if not m or len(shape) != 2 or not name.endswith("weight"):
            continue
        i = int(m.group(1))
        if i >= len(layers):
            continue
        ly = layers[i]
        out = shape[0]
        if re.search(r"(attention\.self\.query|q_proj|q_lin)\.weight$", name):
            ly.heads = max(1, out // ly.head_dim)
            if ly.kv_heads > ly.heads:
                ly.kv_heads = ly.heads
        elif re.search(r"(k_proj|attention\.self\.key|k_lin)\.weight$", name):
            ly.kv_heads = max(1, out // ly.head_dim)
        elif re.search(r"(intermediate\.dense|up_proj|fc1|lin1)\.weight$", name):
            ly.intermediate = out   # may equal `hidden`: an FFN pruned to the model width
        elif re.search(r"c_fc\.weight$", name):
            ly.intermediate = shape[1]  # GPT-2's Conv1D stores [in, out]


@dataclass
class OpGroup:
    """One kind of op in the network, summed over its occurrences."""

    name: str
    kind: str                 # gemm / attention / norm / act / residual / embed / head
    precision: str            # what its FLOPs run at
    flops: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    kernels: int = 0
    calls: int = 0            # GEMM / batched-matmul / vector-op invocations in `kernels`
    elements: float = 0.0     # elements a vector op (act, norm, softmax, add) works on
    op: str | None = None     # the vector op, for its measured throughput (calibrate.py)
    format: str | None = None  # GEMMs stored in another format than the artifact's (float)

    @property
    def flops_per_call(self) -> float:
        return self.flops / self.calls if self.calls else self.flops

    @property
    def elements_per_call(self) -> float:
        return self.elements / self.calls if self.calls else self.elements

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.act_bytes


@dataclass
class Work:
    """One inference (one forward, prefill or decode step) of a candidate."""

    phase: str                # forward / prefill / decode
    batch_size: int
    seq_len: int              # tokens processed per sequence (1 for decode)
    context: int              # tokens attended to (decode: the KV cache length)
    groups: list[OpGroup] = field(default_factory=list)
    resident_bytes: float = 0.0       # weights held in memory
    activation_bytes: float = 0.0     # peak activations + KV cache for the batch
    notes: list[str] = field(default_factory=list)
    format: str | None = None         # the artifact's catalog format (for its GEMV rate)

    @property
    def flops(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self.groups:
            out[g.precision] = out.get(g.precision, 0.0) + g.flops
        return out

    @property
    def total_flops(self) -> float:
        return sum(g.flops for g in self.groups)

    @property
    def total_bytes(self) -> float:
        return sum(g.bytes for g in self.groups)

    @property
    def kernels(self) -> int:
        return sum(g.kernels for g in self.groups)

    def as_rows(self) -> list[dict]:
        return [{"phase": self.phase, "group": g.name, "kind": g.kind, "precision": g.precision,
                 "flops": g.flops, "weight_bytes": g.weight_bytes, "act_bytes": g.act_bytes,
                 "kernels": g.kernels} for g in self.groups]


def count_work(info: ArtifactInfo, formats: dict, batch_size: int, seq_len: int,
               phase: str = "forward", context: int | None = None,
               arch: Arch | None = None, dispatch_ops: int | None = None) -> Work:
    """FLOPs and bytes of one inference of `info` at (batch, seq_len) in `phase`.

    phase forward/prefill: `seq_len` tokens per sequence, attention over them.
    phase decode: one new token per sequence, attention over `context` cached tokens.
    `formats` is the catalog's format table (weight bits, compute precision).
    `dispatch_ops` (decode): the non-GEMV ops or graph nodes one decode step really
    dispatches, counted (hardware/nodes.py); the ops the per-layer groups do not cover
    (rotary embedding, KV-cache concat, shape arithmetic, masks) become the group
    "other ops", charged per dispatch.
    """
    arch = arch or arch_from(info)
    fmt = formats.get(info.format) if info.format else None
    float_p = info.model_dtype if info.model_dtype in DTYPE_BYTES else "fp32"
    if fmt is None:
        compute, wbits, act_quant = float_p, DTYPE_BYTES[float_p] * 8, False
    else:
        compute = float_p if fmt.compute == "model" else fmt.compute
        wbits, act_quant = fmt.weight_bits, fmt.act_quant
    # activations stay in the float dtype; fp8 models keep bf16 activations between GEMMs
    abytes = DTYPE_BYTES[float_p] if float_p in ("fp32", "fp16", "bf16") else 2
    kern = KERNELS[info.framework if info.framework in KERNELS else "pytorch"]
    B = batch_size
    T = 1 if phase == "decode" else seq_len     # new tokens per sequence
    C = (context or seq_len) if phase == "decode" else seq_len
    tokens = B * T
    H = arch.hidden
    work = Work(phase, B, T, C, format=info.format)
    groups: dict[str, OpGroup] = {}

    def add(name, kind, precision, flops=0.0, wb=0.0, ab=0.0, k=0, calls=0, elements=0.0,
            op=None):
        g = groups.setdefault(name, OpGroup(name, kind, precision, op=op))
        g.flops += flops
        g.weight_bytes += wb
        g.act_bytes += ab
        g.kernels += k
        g.calls += calls
        g.elements += elements

    def gemm(name, n_in, n_out, count=1, calls=1):
        """`calls` separate matmuls of n_in x n_out/calls each (q, k, v; gate, up): the
        per-call size sets the efficiency a calibrated projection charges them. A weight
        the quantizer left in float (ONNX `float_weights`) costs float bytes and compute."""
        params = n_in * n_out
        ab = tokens * (n_in + n_out) * abytes
        k = kern["gemm"] * calls
        in_float = any(w == f"{name}.weight" or w.endswith(f".{name}.weight")
                       for w in info.float_weights)
        bits, prec, quant = (DTYPE_BYTES[float_p] * 8, float_p, False) if in_float \
            else (wbits, compute, act_quant)
        if quant:  # read float activations, write int8 copies, then the int GEMM
            ab += tokens * n_in * (abytes + 1)
            k += QUANT_KERNELS if info.framework == "onnxruntime" else 0
        add(name, "gemm", prec, 2.0 * tokens * params * count, params * bits / 8 * count,
            ab * count, k * count, calls * count)
        if in_float:
            groups[name].format = float_p

    kv_bytes = 0.0
    for ly in arch.layers:
        q_out, kv_out = ly.heads * ly.head_dim, ly.kv_heads * ly.head_dim
        gemm("attn.qkv", H, q_out + 2 * kv_out, calls=3)   # separate q, k, v projections
        gemm("attn.out", q_out, H)
        # scores and weighted sum: two batched matmuls (B x heads, T x C x head dim each)
        # in the float dtype; the softmax over the scores is its own vector-op group
        attn_flops = 2 * 2.0 * B * ly.heads * T * C * ly.head_dim
        scores = B * ly.heads * T * C * abytes
        cache_read = 2 * B * ly.kv_heads * C * ly.head_dim * abytes if phase == "decode" else 0
        add("attn.sdpa", "attention", float_p, attn_flops, 0.0,
            scores + cache_read + 2 * tokens * q_out * abytes, kern["attention"] - 1, calls=2)
        add("attn.softmax", "softmax", float_p, 0.0, 0.0, 2 * scores, 1, calls=1,
            elements=B * ly.heads * T * C, op="softmax")
        kv_bytes += 2 * B * ly.kv_heads * (C + T) * ly.head_dim * abytes
        n_up = 2 if arch.gated_ffn else 1
        gemm("ffn.up", H, n_up * ly.intermediate, calls=n_up)
        gemm("ffn.down", ly.intermediate, H)
        add("ffn.act", "act", float_p, 0.0, 0.0,
            tokens * ly.intermediate * abytes * (3 if arch.gated_ffn else 2), kern["act"],
            calls=1, elements=tokens * ly.intermediate,   # kernels: its graph's nodes
            op="silu_mul" if arch.gated_ffn else "gelu")
        add("norm", "norm", float_p, 0.0, 0.0, 2 * 2 * tokens * H * abytes, 2 * kern["norm"],
            calls=2 * kern["norm"], elements=2 * kern["norm"] * tokens * H,
            op="rms_norm" if arch.gated_ffn else "layer_norm")
        add("residual", "residual", float_p, 0.0, 0.0, 2 * 3 * tokens * H * abytes,
            2 * kern["residual"], calls=2 * kern["residual"],
            elements=2 * kern["residual"] * tokens * H, op="add")
    emb_bits = wbits if info.kind == "onnx-quantized" else DTYPE_BYTES[float_p] * 8
    add("embed", "embed", float_p, 0.0, tokens * H * emb_bits / 8, tokens * H * abytes * 2,
        kern["embed"])
    if arch.decoder and arch.vocab:
        # the LM head reads the whole vocab matrix; HF and ONNX exports score every position
        gemm("lm_head", H, arch.vocab)
        groups["lm_head"].kind = "head"
    elif arch.num_labels:
        gemm("head", H, H)
        gemm("head", H, arch.num_labels)
    if phase == "decode" and dispatch_ops is not None:
        covered = sum(g.kernels for g in groups.values() if g.kind not in ("gemm", "head"))
        if dispatch_ops > covered:
            add("other ops", "dispatch", float_p, k=dispatch_ops - covered)
        work.notes.append(f"decode dispatches {dispatch_ops} non-GEMV ops (counted)")
    work.groups = list(groups.values())
    work.resident_bytes = info.weight_bytes or _weights_estimate(arch, wbits)
    peak_act = max(B * T * max(ly.intermediate for ly in arch.layers) * abytes * 2,
                   B * max(ly.heads for ly in arch.layers) * T * C * abytes * 2)
    if arch.decoder and arch.vocab:
        peak_act = max(peak_act, B * T * arch.vocab * 4)
    work.activation_bytes = peak_act + (kv_bytes if arch.decoder else 0.0)
    if not info.weight_bytes:
        work.notes.append("weight bytes estimated from the architecture (no stored weights)")
    return work


def _weights_estimate(arch: Arch, wbits: float) -> float:
    H = arch.hidden
    n = 0
    for ly in arch.layers:
        n += H * (ly.heads + 2 * ly.kv_heads) * ly.head_dim + ly.heads * ly.head_dim * H
        n += (3 if arch.gated_ffn else 2) * H * ly.intermediate
    return n * wbits / 8 + arch.vocab * H * 4
