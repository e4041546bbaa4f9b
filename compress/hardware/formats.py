"""What format an artifact computes in, read from its kind, its metadata and its weights.

The projection must only use a runtime that can run THIS artifact at its precision, so the
format comes from the artifact itself: the quantize backend recorded in its metadata
(`meta["config"]["backend"]`), the op types of an ONNX graph when the backend is unknown,
and the dtypes its weights are stored in. Backends that do not exist yet map by name
(fp16, bf16, torchao, bnb-nf4, ort-static-int8, ...), so new stages need no change here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from compress.artifacts import META_FILE

FLOAT_DTYPES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "float32": "fp32",
                "float16": "fp16", "bfloat16": "bf16", "FLOAT": "fp32", "FLOAT16": "fp16",
                "BFLOAT16": "bf16", "torch.float32": "fp32", "torch.float16": "fp16",
                "torch.bfloat16": "bf16"}


@dataclass
class ArtifactInfo:
    """What the projection needs to know about one artifact."""

    path: Path | None
    kind: str                       # pytorch / pytorch-pruned / pytorch-quantized / onnx / ...
    framework: str                  # pytorch / onnxruntime
    format: str | None              # a catalog format name; None when unknown
    model_dtype: str                # the float dtype activations are computed in
    config: dict = field(default_factory=dict)       # config.json
    meta: dict = field(default_factory=dict)         # compress-artifact.json
    weights_by_dtype: dict[str, int] = field(default_factory=dict)
    tensor_shapes: dict[str, list[int]] = field(default_factory=dict)
    op_types: set[str] = field(default_factory=set)
    compute_nodes: int | None = None  # ONNX: nodes that launch a kernel per inference
    why_unknown: str | None = None
    # ONNX: weight matrices a quantized graph left in float (`lm_head.weight` where the
    # quantizer skipped a tied embedding): a decode step reads them at float width
    float_weights: set[str] = field(default_factory=set)

    @property
    def weight_bytes(self) -> int:
        return int(sum(self.weights_by_dtype.values()))


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


# shape arithmetic that ONNX Runtime folds or runs for free: not a kernel per inference
SHAPE_OPS = {"Constant", "Shape", "Unsqueeze", "Squeeze", "Concat", "Cast", "Equal", "Where",
             "Expand", "ConstantOfShape", "Slice", "Gather", "Range", "Identity"}


# ops that multiply activations by a stored weight matrix, and where that matrix sits
WEIGHT_MATMULS = {"MatMul": 1, "Gemm": 1, "MatMulInteger": 1, "QLinearMatMul": 3,
                  "DynamicQuantizeMatMul": 1, "MatMulNBits": 1}


def float_matmul_weights(graph) -> set[str]:
    """`module.path.weight` of every weight matrix a float MatMul/Gemm multiplies by (the
    rest of a quantized graph runs MatMulNBits, MatMulInteger, ...)."""
    inits = {i.name for i in graph.initializer}
    via = {n.output[0] for n in graph.node if n.op_type in ("Transpose", "Cast", "Identity")
           and n.input and n.input[0] in inits}
    return {n.name.strip("/").rsplit("/", 1)[0].replace("/", ".") + ".weight"
            for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.name
            and len(n.input) > 1 and (n.input[1] in inits or n.input[1] in via)}


def linear_shapes_from_graph(graph) -> dict[str, list[int]]:
    """`module.path.weight` -> [out, in], like a torch Linear, for every weight matrix of
    an ONNX graph, named after the node that consumes it.

    Exports name weight initializers anonymously (`onnx::MatMul_746`), but the consuming
    MatMul/Gemm node keeps the module path (`/encoder/layer.0/intermediate/dense/MatMul`),
    so a structurally pruned model's kept heads and FFN neurons are read from the graph,
    not from its config.json, which still describes the unpruned model."""
    inits = {i.name: list(i.dims) for i in graph.initializer}
    # a weight may reach its MatMul through a Transpose or DequantizeLinear
    passthrough = {}
    for n in graph.node:
        if n.op_type in ("Transpose", "DequantizeLinear", "Cast", "Identity") and n.input \
                and n.input[0] in inits:
            dims = inits[n.input[0]]
            passthrough[n.output[0]] = dims[::-1] if n.op_type == "Transpose" else dims
    out: dict[str, list[int]] = {}
    for n in graph.node:
        pos = WEIGHT_MATMULS.get(n.op_type)
        if pos is None or not n.name or len(n.input) <= pos:
            continue
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "MatMulNBits":  # packed blocks; K and N are attributes
            shape = [int(attrs["N"].i), int(attrs["K"].i)] if "N" in attrs and "K" in attrs \
                else None
        else:
            dims = inits.get(n.input[pos]) or passthrough.get(n.input[pos])
            if not dims or len(dims) != 2:
                continue
            trans_b = n.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i
            shape = list(dims) if trans_b else [dims[1], dims[0]]  # MatMul: [in, out]
        if shape:
            module = n.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            out[f"{module}.weight"] = shape
    return out


def read_weights(path: Path, float_weights: set[str] | None = None
                 ) -> tuple[dict[str, int], dict[str, list[int]], set[str], int | None]:
    """(bytes by dtype, tensor shapes, ONNX op types) from the stored files, never from a
    loaded model: packed quantized weights are not parameters and would be miscounted.
    ONNX: the weights left to float MatMuls are added to `float_weights` when given."""
    by_dtype: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    ops: set[str] = set()
    nodes = None
    if (path / "openvino_model.xml").is_file():  # OpenVINO IR: read from its XML
        from compress.openvino import ir_weights

        by_dtype, shapes, ops = ir_weights(path)
        return by_dtype, shapes, ops, None
    onnx_files = sorted(path.glob("*.onnx"))
    if onnx_files:
        import onnx
        from onnx import helper

        model = onnx.load(str(onnx_files[0]), load_external_data=False)
        for init in model.graph.initializer:
            numel = 1
            for d in init.dims:
                numel *= d
            np_dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
            name = onnx.TensorProto.DataType.Name(init.data_type).lower()
            by_dtype[name] = by_dtype.get(name, 0) + numel * np_dtype.itemsize
            shapes[init.name] = list(init.dims)
        shapes.update(linear_shapes_from_graph(model.graph))
        if float_weights is not None:
            float_weights |= float_matmul_weights(model.graph)
        ops = {n.op_type for n in model.graph.node}
        for g in (n for n in model.graph.node if n.op_type in ("If", "Loop", "Scan")):
            for a in g.attribute:
                if a.g is not None:
                    ops |= {n.op_type for n in a.g.node}
        nodes = sum(n.op_type not in SHAPE_OPS for n in model.graph.node)
        return by_dtype, shapes, ops, nodes
    for st in sorted(path.glob("*.safetensors")):
        for name, t in _safetensors_header(st).items():
            if name == "__metadata__":
                continue
            lo, hi = t["data_offsets"]
            by_dtype[t["dtype"].lower()] = by_dtype.get(t["dtype"].lower(), 0) + hi - lo
            shapes[name] = t["shape"]
    if by_dtype:
        return by_dtype, shapes, ops, nodes
    for pt in sorted(list(path.glob("*.pt")) + list(path.glob("*.bin"))):
        try:
            import torch

            sd = torch.load(pt, map_location="cpu", weights_only=True, mmap=True)
            for name, t in (sd.items() if isinstance(sd, dict) else []):
                if hasattr(t, "dtype") and hasattr(t, "shape"):
                    key = str(t.dtype).removeprefix("torch.")
                    by_dtype[key] = by_dtype.get(key, 0) + t.numel() * t.element_size()
                    shapes[name] = list(t.shape)
        except Exception:  # packed/unknown pickles: count the file, dtype unknown
            by_dtype["unknown"] = by_dtype.get("unknown", 0) + pt.stat().st_size
    return by_dtype, shapes, ops, nodes


def _float_dtype(config: dict, by_dtype: dict[str, int]) -> str:
    floats = {FLOAT_DTYPES.get(k.upper(), FLOAT_DTYPES.get(k)): v for k, v in by_dtype.items()}
    floats = {k: v for k, v in floats.items() if k}
    if floats:
        return max(floats, key=floats.get)
    return FLOAT_DTYPES.get(str(config.get("torch_dtype") or config.get("dtype")), "fp32")


def classify(kind: str, backend: str | None, cfg: dict, ops: set[str], dtype: str,
             declared: str | None = None) -> tuple[str | None, str | None]:
    """(format, why unknown): the format the artifact's metadata declares (written by the
    engine from the quantize backend's `format`); for artifacts built before that, from
    the artifact kind, its quantize backend's name and its graph ops."""
    if declared:
        return declared, None
    b = (backend or "").lower()
    if b in ("fp16", "bf16", "fp8"):
        return b, None
    if kind == "onnx":
        return dtype, None
    if kind == "openvino":  # compiled at fp32 unless the suite says else; NNCF: int8
        return ("int8-static-ov" if "FakeQuantize" in ops else "fp32"), None
    if kind == "onnx-quantized":
        if "int4" in b or "nbits" in b or "MatMulNBits" in ops:
            return "int4-weight-only", None
        if ("static" in b or "qdq" in b) or (not b and "QuantizeLinear" in ops
                                             and "DynamicQuantizeLinear" not in ops):
            return "int8-static-qdq", None
        if "dynamic" in b or "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops:
            return "int8-dynamic-ort", None
        return None, f"unknown ONNX quantization (backend {backend!r})"
    if kind in ("pytorch", "pytorch-pruned"):
        return dtype, None
    if kind == "pytorch-quantized":
        mode = json.dumps(cfg).lower()
        if "bnb" in b or "bitsandbytes" in b:
            if any(k in b for k in ("nf4", "fp4", "4bit", "int4")):
                return "int4-bnb", None
            return "int8-bnb", None
        if "int4" in b:
            return "int4-weight-only", None
        if "torchao" in b or "ao-" in b:
            if b.endswith("-weight") or any(k in mode for k in ("weight_only", "weight-only",
                                                                 "weightonly")):
                return "int8-weight-only", None
            return "int8-dynamic-torchao", None
        if "dynamic" in b or "torch" in b:
            return "int8-dynamic-torch", None
        return None, f"unknown PyTorch quantization (backend {backend!r})"
    return None, f"unknown artifact kind {kind!r}"


def framework_of(kind: str) -> str:
    """The runtime family an artifact kind is measured and projected on."""
    if kind == "openvino":
        return "openvino"
    return "onnxruntime" if kind.startswith("onnx") else "pytorch"


def inspect_artifact(path: str | Path | None, kind: str) -> ArtifactInfo:
    """Read an artifact directory (config, metadata, stored weights) into an ArtifactInfo."""
    framework = framework_of(kind)
    if not path or not Path(path).is_dir():
        return ArtifactInfo(None, kind, framework, None, "fp32",
                            why_unknown=f"artifact not found: {path}")
    p = Path(path)
    config = json.loads((p / "config.json").read_text()) if (p / "config.json").is_file() else {}
    meta = json.loads((p / META_FILE).read_text()) if (p / META_FILE).is_file() else {}
    floats: set[str] = set()
    by_dtype, shapes, ops, nodes = read_weights(p, floats)
    dtype = _float_dtype(config, by_dtype)
    cfg = meta.get("config") or {}
    fmt, why = classify(kind, cfg.get("backend"), cfg, ops, dtype, meta.get("format"))
    return ArtifactInfo(p, kind, framework, fmt, dtype, config, meta, by_dtype, shapes, ops,
                        nodes, why, floats if kind == "onnx-quantized" else set())
