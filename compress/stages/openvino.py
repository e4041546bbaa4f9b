"""openvino: convert an exported ONNX model to OpenVINO IR (openvino_model.xml/.bin).

The IR keeps the model's float weights (or stores them as f16 with `compress_to_fp16`,
which OpenVINO decompresses on load); the precision it RUNS at is not a property of the
file but of how it is compiled, and the suite decides it (`latency.openvino_precision`).
The conversion is checked against the ONNX input, both at fp32, on the sample texts.
A causal-LM export keeps its KV-cache inputs and outputs (past_key_values.* ->
present.*; a stateless IR): the openvino runtime feeds them as ONNX Runtime does, so
perplexity and decode are measured the same way on both. To quantize for OpenVINO, use
`quantize` with `backend: nncf-int8` (encoders) or `backend: nncf-weights` (weight
compression, for LLMs), on the ONNX model or on this IR.
"""

from __future__ import annotations

import importlib.util

from pydantic import Field

from compress.artifacts import Kind
from compress.stages.base import Stage, StageConfig, register
from compress.stages.common import copy_side_files, ov_agreement


class OpenVinoConfig(StageConfig):
    compress_to_fp16: bool = Field(False, description="store the weights as f16 in the .bin "
                                   "(half the size; decompressed on load, computed at the "
                                   "suite's openvino_precision)")


@register
class OpenVino(Stage):
    name = "openvino"
    description = "Convert an ONNX model to OpenVINO IR (measured with the openvino runtime)"
    Config = OpenVinoConfig

    def accepts(self, config):
        return {Kind.ONNX}

    def produces(self, config, input_kind):
        return Kind.OPENVINO

    def check(self, config, task):
        if importlib.util.find_spec("openvino") is None:
            return "the openvino stage needs the 'openvino' package (the cpu extra)"
        return None

    def check_input(self, config, parent):
        if parent.properties.get("graph_optimization") in ("O2", "O3", "O4"):
            return (f"the openvino stage cannot take {parent.step!r}: it was optimised for "
                    "ONNX Runtime (fused com.microsoft ops OpenVINO does not read); convert "
                    "the plain export (optimize: none or O1)")
        return None

    def run(self, ctx, source, config, out_dir):
        from compress.openvino import convert_onnx

        convert_onnx(source.path, out_dir, config.compress_to_fp16)
        copy_side_files(source.path, out_dir)
        return ov_agreement(source.path, out_dir)
