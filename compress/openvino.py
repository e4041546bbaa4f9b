"""OpenVINO: converting an ONNX model to IR, compiling it with pinned threads and an explicit
inference precision, and reading what an IR stores, without torch or transformers.

The CPU plugin's default inference precision is bf16 wherever the CPU has native bf16 (and
f16 on some ARM CPUs): a model timed with the defaults is not the fp32 model it claims to
be. compress never compiles with the default: the precision is always given (the suite's
`latency.openvino_precision`), and the one the compiled model really uses is read back and
recorded, since a CPU without bf16 silently runs fp32 instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from compress.kvsession import KvSession

IR_FILE = "openvino_model.xml"
PRECISIONS = ("fp32", "bf16", "f16")
# compress's names -> OpenVINO element types
OV_TYPES = {"fp32": "f32", "bf16": "bf16", "f16": "f16"}
# IR element types -> (dtype name as the measurement records it, bits per element)
IR_DTYPES = {"f32": ("float32", 32), "f16": ("float16", 16), "bf16": ("bfloat16", 16),
             "i64": ("int64", 64), "i32": ("int32", 32), "i16": ("int16", 16),
             "u16": ("uint16", 16), "i8": ("int8", 8),
             "u8": ("uint8", 8), "i4": ("int4", 4), "u4": ("uint4", 4),
             "boolean": ("bool", 8)}


def compile_config(threads: int, precision: str) -> dict:
    """The CPU plugin settings compress measures and serves with: one stream, latency
    mode, `threads` inference threads, and the inference precision given, never defaulted."""
    if precision not in OV_TYPES:
        raise ValueError(f"OpenVINO inference precision must be one of {', '.join(PRECISIONS)}, "
                         f"not {precision!r}")
    return {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_TYPES[precision]}


def precision_name(ov_type) -> str:
    """compress's name (fp32, bf16, f16) of an OpenVINO element type (Type f32, 'bf16')."""
    name = getattr(ov_type, "get_type_name", lambda: str(ov_type))()
    return {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
            "f16": "f16", "float16": "f16"}.get(name, name)


def cpu_capabilities() -> list[str]:
    """OpenVINO's view of this CPU (e.g. ['FP32', 'INT8', 'BF16', ...])."""
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def ov_inputs(ports) -> dict[str, tuple[list, type]]:
    """A model's inputs as KvSession describes them: {name: (shape, numpy dtype)}, a
    dynamic dimension as None."""
    return {p.any_name: ([d.get_length() if d.is_static else None
                          for d in p.get_partial_shape()], p.get_element_type().to_dtype().type)
            for p in ports}


class OvModel(KvSession):
    """A compiled OpenVINO IR: same numpy feeds in, the first output out; a decoder's
    KV-cache inputs and outputs are fed and returned as for ONNX Runtime (the IR keeps the
    ONNX export's tensor names)."""

    def __init__(self, model_dir: str | Path, threads: int = 1, precision: str = "fp32"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(Path(model_dir) / IR_FILE))
        self.compiled = core.compile_model(model, "CPU", compile_config(threads, precision))
        self.requested_precision = precision
        self.precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.request = self.compiled.create_infer_request()
        self.ports = {p.any_name: p for p in self.compiled.outputs}
        super().__init__(ov_inputs(self.compiled.inputs), list(self.ports))

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None
            ) -> list[np.ndarray]:
        out = self.request.infer(feeds)  # copies the outputs (share_outputs=False)
        return [out[self.ports[n]] for n in (names or self.outputs)]


def convert_onnx(onnx_dir: Path, out_dir: Path, compress_to_fp16: bool = False) -> None:
    """Read `onnx_dir/model.onnx` and write `out_dir/openvino_model.{xml,bin}`."""
    import openvino as ov

    model = ov.Core().read_model(str(Path(onnx_dir) / "model.onnx"))
    ov.save_model(model, str(Path(out_dir) / IR_FILE), compress_to_fp16=compress_to_fp16)


def ir_weights(model_dir: str | Path) -> tuple[dict[str, int], dict[str, list[int]], set[str]]:
    """(stored bytes by dtype, Const shapes by name, op types) read from the IR's XML, never
    from a loaded model: what the .bin really holds (an NNCF INT8 model stores int8)."""
    xml = Path(model_dir) / IR_FILE
    by_dtype: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    ops: set[str] = set()
    for layer in ET.parse(xml).getroot().iter("layer"):
        ops.add(layer.get("type", ""))
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        if data is None:
            continue
        name, _ = IR_DTYPES.get(data.get("element_type", ""), (data.get("element_type"), 8))
        by_dtype[name] = by_dtype.get(name, 0) + int(data.get("size", 0))
        dims = [int(d) for d in (data.get("shape") or "").split(",") if d.strip()]
        shapes[layer.get("name", "")] = dims
    return by_dtype, shapes, ops
