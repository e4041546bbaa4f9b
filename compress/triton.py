"""A Triton model repository for an ONNX candidate: `compress export --format triton`.

Layout (Triton's): `DIR/<model>/config.pbtxt` and `DIR/<model>/1/model.onnx` (with the
tokenizer and config beside it, for the client). config.pbtxt carries

- the serving configuration the recommendation chose: max_batch_size, preferred batch
  sizes, max_queue_delay_microseconds, and the instance group (one model instance per
  worker of a machine, each with the suite's intra-op threads);
- the inputs and outputs as the ONNX graph declares them: names, data types and dims
  (without the batch dimension when batching; a dynamic dimension is -1).

The text is Triton's protobuf text format; the tests parse it with Triton's own
`model_config_pb2` (tritonclient) and check it against the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.errors import InputError

# ONNX TensorProto element type -> Triton data type
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16",
                  5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING",
                  9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
                  13: "TYPE_UINT64", 16: "TYPE_BF16"}


@dataclass
class Tensor:
    name: str
    data_type: str
    dims: list[int]          # full shape, -1 where dynamic


@dataclass
class ServingConfig:
    max_batch: int
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    workers: int = 1                 # model instances on one machine
    threads: int = 1                 # intra-op threads of each
    kind: str = "KIND_CPU"           # or KIND_GPU
    instances: int | None = None     # machines (for the comment; Triton runs one)


def graph_io(onnx_path: str | Path) -> tuple[list[Tensor], list[Tensor]]:
    """Inputs (initializers excluded) and outputs of an ONNX graph."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def tensors(values):
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            if t.elem_type not in ONNX_TO_TRITON:
                raise InputError(f"{onnx_path}: {v.name} has ONNX element type "
                                 f"{t.elem_type}, which Triton has no type for")
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out.append(Tensor(v.name, ONNX_TO_TRITON[t.elem_type], dims))
        return out

    return tensors(model.graph.input), tensors(model.graph.output)


def config_pbtxt(name: str, inputs: list[Tensor], outputs: list[Tensor],
                 serving: ServingConfig) -> str:
    """The config.pbtxt text. Batching needs a dynamic first dimension on every tensor;
    otherwise max_batch_size is 0 and the dims are given in full."""
    batchable = all(t.dims and t.dims[0] == -1 for t in inputs + outputs)
    max_batch = serving.max_batch if batchable else 0

    def block(kind, ts):
        items = []
        for t in ts:
            dims = t.dims[1:] if max_batch else t.dims
            items.append(f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n'
                         f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}")
        return f"{kind} [\n" + ",\n".join(items) + "\n]"

    lines = []
    if serving.instances:
        lines.append(f"# recommended: {serving.instances} machine(s) like this one, each "
                     f"running this config")
    lines += [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch}",
              block("input", inputs), block("output", outputs)]
    if max_batch:
        pref = [b for b in serving.preferred_batch_sizes if b <= max_batch] or [max_batch]
        lines.append("dynamic_batching {\n"
                     f"  preferred_batch_size: [ {', '.join(map(str, pref))} ]\n"
                     f"  max_queue_delay_microseconds: "
                     f"{int(round(serving.max_queue_delay_ms * 1000))}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {serving.workers}\n"
                 f"    kind: {serving.kind}\n  }}\n]")
    for key, value in (("intra_op_thread_count", serving.threads),
                       ("inter_op_thread_count", 1)):
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}'
                     "\n}")
    return "\n".join(lines) + "\n"


def write_repository(model_dir: Path, repo: Path, name: str, serving: ServingConfig) -> Path:
    """Copy an ONNX artifact into a Triton repository at `repo` (which the caller creates
    atomically) and write its config.pbtxt. Returns the config's path."""
    import shutil

    onnx_file = model_dir / "model.onnx"
    if not onnx_file.is_file():
        raise InputError(f"{model_dir}: no model.onnx; the Triton export needs an ONNX "
                         "candidate (kind onnx or onnx-quantized)")
    version = repo / name / "1"
    version.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != "compress-artifact.json":
            shutil.copy2(f, version / f.name)
    inputs, outputs = graph_io(onnx_file)
    cfg = repo / name / "config.pbtxt"
    cfg.write_text(config_pbtxt(name, inputs, outputs, serving))
    return cfg
