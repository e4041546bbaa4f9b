"""ONNX Runtime backends: dynamic INT8, static INT8 (calibrated), INT4 weight-only.

They take an ONNX model and write a quantized one beside its tokenizer and config, checked
against the input on the sample texts. ORT quantization of an O2/O3-optimised graph fails,
so they refuse such an input (from its `graph_optimization` property).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

from pydantic import Field

from compress.artifacts import Kind
from compress.stages.base import StageConfig
from compress.stages.common import copy_side_files, onnx_agreement
from compress.stages.quantize.backend import (
    Backend,
    backend,
    refuse_optimised,
    refuse_optimised_source,
)

# ---------------------------------------------------------------- dynamic INT8

def detect_isa() -> str:
    """The instruction set optimum's ORT quantization config should target on this CPU."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "avx2"
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


class OrtBackend(Backend):
    """The ONNX Runtime family: the input is an ONNX model not optimised past O1 (checked
    at plan time and again here); `apply` writes out_dir/model.onnx and returns its facts;
    `save` copies the tokenizer and config beside it and compares it with the input."""

    accepts = {Kind.ONNX}
    produces = Kind.ONNX_QUANTIZED

    def check_input(self, config, parent):
        return refuse_optimised(self.name, parent)

    def resolve(self, config):
        if getattr(config, "isa", None) == "auto":
            config = config.model_copy(update={"isa": detect_isa()})
        return config

    def load(self, ctx, source, config):
        refuse_optimised_source(self.name, source)
        return source.path

    def save(self, ctx, source, loaded, applied, out_dir):
        copy_side_files(source.path, out_dir)
        return {**onnx_agreement(source.path, out_dir), **applied}


class OrtDynamicInt8Config(StageConfig):
    backend: Literal["ort-dynamic-int8"]
    per_channel: bool = Field(False, description="per-channel weight scales")
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = Field(
        "auto", description="instruction set the kernels target; auto detects this CPU")


@backend
class OrtDynamicInt8(OrtBackend):
    name = "ort-dynamic-int8"
    format = "int8-dynamic-ort"  # catalog format key
    description = "ONNX Runtime dynamic INT8 (weights int8, activations quantized at run time)"
    Config = OrtDynamicInt8Config
    weight_format, activation_format = "int8", "int8 (dynamic, per batch)"
    notes = ("INT8 ONNX has no fast kernels on ORT's CUDA provider (quantized ops fall back "
             "to CPU); use TensorRT or PyTorch kernels on GPU",)

    def apply(self, ctx, loaded, config, out_dir):
        from compress.quiet import import_transformers, quiet_fds

        import_transformers()
        with quiet_fds():
            from optimum.onnxruntime import ORTQuantizer
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

        qconfig = getattr(AutoQuantizationConfig, config.isa)(
            is_static=False, per_channel=config.per_channel)
        quantizer = ORTQuantizer.from_pretrained(loaded, file_name="model.onnx")
        with quiet_fds():
            quantizer.quantize(quantization_config=qconfig, save_dir=out_dir, file_suffix=None)
        return {}


# ---------------------------------------------------------------- static INT8

class OrtStaticInt8Config(StageConfig):
    backend: Literal["ort-static-int8"]
    calibration: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="how activation ranges are taken from the calibration data")
    percentile: float = Field(99.999, gt=90, le=100, description="for calibration=percentile")
    format: Literal["qdq", "qoperator"] = Field(
        "qdq", description="QDQ (QuantizeLinear/DequantizeLinear pairs) or QOperator "
                           "(QLinear* ops)")
    per_channel: bool = Field(False, description="per-channel weight scales")
    max_samples: int = Field(64, ge=1, description="calibration texts used (first N)")
    max_length: int = Field(128, ge=8, description="tokens per calibration text")
    batch_size: int = Field(8, ge=1)
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = Field(
        "auto", description="avx2 uses reduce_range (7-bit weights) to avoid u8s8 overflow")


@backend
class OrtStaticInt8(OrtBackend):
    name = "ort-static-int8"
    format = "int8-static-qdq"  # catalog format key
    description = "ONNX Runtime static INT8: activation ranges calibrated on the calibration data"
    Config = OrtStaticInt8Config
    weight_format, activation_format = "int8", "uint8 (static, calibrated)"
    notes = OrtDynamicInt8.notes + ("calibration texts come from data role `calibration`",)

    def data_roles(self, config):
        return {"calibration": True}

    def apply(self, ctx, loaded, config, out_dir):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        from compress.encoding import Encoder, OrtModel
        from compress.quiet import quiet_fds

        texts = ctx.texts("calibration")[: config.max_samples]
        encoder, model = Encoder(loaded), OrtModel(loaded)
        batches = [model.feeds(encoder(texts[start:start + config.batch_size],
                                       config.max_length))
                   for start in range(0, len(texts), config.batch_size)]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(batches)

            def get_next(self):
                return next(self.it, None)

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[config.calibration]
        extra = {"CalibPercentile": config.percentile} if config.calibration == "percentile" \
            else {}
        with quiet_fds():
            quantize_static(
                str(loaded / "model.onnx"), str(out_dir / "model.onnx"), Reader(),
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel, reduce_range=config.isa == "avx2",
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=method, extra_options=extra,
                # weights' matmuls only: element-wise ops would calibrate the attention
                # mask's -3.4e38 bias, which breaks the histogram calibrators
                op_types_to_quantize=["MatMul", "Gemm"])
        return {"calibration_texts": len(texts), "calibration": config.calibration,
                "format": config.format}


# ---------------------------------------------------------------- INT4 weight-only

class OrtInt4WeightConfig(StageConfig):
    backend: Literal["ort-int4-weight"]
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        128, description="weights per quantization block (one scale per block)")
    symmetric: bool = Field(True, description="symmetric blocks (no zero point)")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8")


@backend
class OrtInt4Weight(OrtBackend):
    name = "ort-int4-weight"
    format = "int4-weight-only"  # catalog format key
    description = "ONNX Runtime INT4 weight-only: MatMul -> MatMulNBits, activations stay float"
    Config = OrtInt4WeightConfig
    bits = 4
    weight_format, activation_format = "int4 (blockwise)", "float"
    notes = ("MatMulNBits has CPU and CUDA kernels; it pays off for memory-bound decoding",
             "only MatMul nodes are quantized (Gemm and embeddings stay float)")

    def apply(self, ctx, loaded, config, out_dir):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from compress.quiet import quiet_fds

        model = onnx.load(str(loaded / "model.onnx"))
        quant = MatMulNBitsQuantizer(model, bits=4, block_size=config.block_size,
                                     is_symmetric=config.symmetric,
                                     accuracy_level=config.accuracy_level)
        with quiet_fds():
            quant.process()
        quant.model.save_model_to_file(str(out_dir / "model.onnx"),
                                       use_external_data_format=False)
        ops = [n.op_type for n in quant.model.model.graph.node]
        return {"matmul_nbits_nodes": ops.count("MatMulNBits"),
                "matmul_float_nodes": ops.count("MatMul")}
