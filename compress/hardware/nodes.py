"""How many nodes ONNX Runtime executes per run of an exported graph, counted by ORT itself.

An exported decoder's graph holds thousands of nodes: shape arithmetic (Shape, Gather,
Unsqueeze, Concat), rotary embedding, KV-cache concat, mask building, norms. ORT folds
some at load time and fuses others (RMSNorm, GELU), so neither the stored node count nor
a per-layer estimate says how many it dispatches per run: on SmolLM2 the stored graph has
7,426 nodes (4,711 not constant-foldable), a per-layer estimate said 936, and ORT's
profiler counted 3,153 per decode step. At batch 1 each dispatch costs several
microseconds (dispatch.py), which is a third of a small decoder's step.

The count comes from ORT's own optimizer on the graph with its large weights replaced by
graph inputs of the same type and shape: no weights are read, the graph's structure is
what ORT optimizes, and the weight-fed MatMuls stay (they are GEMVs, counted apart)."""

from __future__ import annotations

import tempfile
from pathlib import Path

WEIGHT_INPUT_ELEMENTS = 1 << 16   # initializers this large become graph inputs

# ops whose B operand is a stored weight matrix: a decode step's GEMVs, charged at the
# GEMV rate, not per node
GEMV_OPS = {"MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulNBits",
            "MatMulIntegerToFloat", "QLinearMatMul", "FusedMatMul"}


def _weightless(model_path: Path):
    """The graph with every large initializer turned into a graph input (names kept), the
    small ones loaded from their external files."""
    import onnx
    from onnx import helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    model = onnx.load(str(model_path), load_external_data=False)
    g = model.graph
    keep, weights = [], []
    for init in g.initializer:
        numel = 1
        for d in init.dims:
            numel *= d
        if numel >= WEIGHT_INPUT_ELEMENTS:
            weights.append(helper.make_tensor_value_info(init.name, init.data_type,
                                                         list(init.dims)))
            continue
        if uses_external_data(init):
            load_external_data_for_tensor(init, str(model_path.parent))
            init.data_location = onnx.TensorProto.DEFAULT
            del init.external_data[:]
        keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    g.input.extend(weights)
    return model, {w.name for w in weights}


def ort_node_counts(model_path: str | Path) -> dict[str, int] | None:
    """{"nodes": nodes ORT runs per inference, "gemv": those fed a stored weight matrix}
    after ORT's default (all) graph optimizations, or None where ORT cannot build it."""
    import onnx
    import onnxruntime as ort

    path = Path(model_path)
    try:
        model, weights = _weightless(path)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "graph.onnx", Path(tmp) / "optimized.onnx"
            onnx.save(model, str(src))
            del model
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.intra_op_num_threads = 1
            so.optimized_model_filepath = str(out)
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
            opt = onnx.load(str(out), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a graph ORT cannot build has no count, not a guess
        return None
    stored = {i.name for i in opt.initializer} | weights
    gemv = sum(n.op_type in GEMV_OPS and len(n.input) > 1 and n.input[1] in stored
               for n in opt.node)
    nodes = sum(n.op_type != "Constant" for n in opt.node)
    return {"nodes": nodes, "gemv": gemv}


def _count_decode_step(config: dict, layers: int, prompt: int) -> tuple[int, int]:
    """(aten ops, Linear ops) one eager decode step of this architecture dispatches with
    `layers` layers, after a `prompt`-token prefill (the mask and cache paths depend on
    the length), with a small vocabulary: the head is one op whatever its size."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import AutoConfig, AutoModelForCausalLM

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops, self.linear = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            self.linear += func.overloadpacket.__name__ in ("linear", "addmm", "mm")
            return func(*args, **(kwargs or {}))

    cfg = {k: v for k, v in config.items() if k not in ("_name_or_path", "architectures",
                                                         "torch_dtype", "dtype")}
    cfg.update(num_hidden_layers=layers, vocab_size=256, tie_word_embeddings=False)
    for key in ("n_layer", "num_layers"):
        if key in cfg:
            cfg[key] = layers
    conf = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(conf).eval()
    ids = torch.randint(0, 256, (1, prompt))
    with torch.inference_mode():
        past = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                     use_cache=True).past_key_values
        with Count() as c:
            model(input_ids=ids[:, -1:], past_key_values=past, use_cache=True,
                  attention_mask=torch.ones(1, prompt + 1, dtype=torch.long))
    return c.ops, c.linear


def eager_decode_ops(config: dict, layers: int, prompt: int = 64
                     ) -> dict[str, int] | None:
    """{"ops", "gemv"}: the aten ops (and the Linear ones among them) one eager PyTorch
    decode step of this architecture dispatches with `layers` layers, counted with a
    TorchDispatchMode on the same architecture built from its config with one and two
    layers (the rest extrapolated: layers repeat), or None where transformers cannot build
    it. A work count, as FLOPs are: nothing is timed."""
    import json

    key = (json.dumps(config, sort_keys=True, default=str), layers, prompt)
    if key not in _CACHE:
        try:
            (o1, g1), (o2, g2) = (_count_decode_step(config, n, prompt) for n in (1, 2))
            _CACHE[key] = {"ops": o1 + (o2 - o1) * (layers - 1),
                           "gemv": g1 + (g2 - g1) * (layers - 1)}
        except Exception:  # noqa: BLE001 - an architecture transformers cannot build
            _CACHE[key] = None
    return _CACHE[key]


_CACHE: dict[tuple[str, int, int], dict[str, int] | None] = {}
