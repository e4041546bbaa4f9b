"""ONNX Runtime backends: dynamic INT8, static INT8 (calibrated), INT4 weight-only.

They take an ONNX model and write a quantized one beside its tokenizer and config, checked
against the input on the sample texts. ORT quantization of an O2/O3-optimised graph fails,
so they refuse such an input (from its `graph_optimization` property).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from compress.artifacts import Kind
from compress.stages.base import StageConfig
from compress.stages.common import copy_side_files, onnx_agreement
from compress.stages.quantize.backend import (
    Backend,
    backend,
    refuse_optimised,
    refuse_optimised_source,
)
from compress.stages.quantize.ort_llm import ALGORITHMS, ASYMMETRIC_ONLY

# ---------------------------------------------------------------- dynamic INT8

# what ORT's dynamic quantization can quantize (onnxruntime.quantization.registry
# IntegerOpsRegistry of the pinned version)
DYNAMIC_OPS = ("Conv", "MatMul", "Attention", "LSTM", "Gather", "Transpose",
               "EmbedLayerNormalization")


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
    exclude_nodes: list[str] = Field(
        [], description="nodes left in float: a node name, a glob over node names, or a "
                        "path segment (lm_head matches /lm_head/MatMul)")
    weights_only: bool = Field(
        False, description="quantize only MatMuls with a constant weight: those of two "
                           "activations (attention scores, rotary frequencies) stay float")
    op_types: list[Literal[DYNAMIC_OPS]] | None = Field(  # type: ignore[valid-type]
        None, description="op types quantized (default: all ORT dynamic-quantizes: "
                          + ", ".join(DYNAMIC_OPS) + ")")


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

        excluded = excluded_nodes(loaded, config.exclude_nodes, config.weights_only)
        qconfig = getattr(AutoQuantizationConfig, config.isa)(
            is_static=False, per_channel=config.per_channel, nodes_to_exclude=excluded,
            operators_to_quantize=list(config.op_types) if config.op_types else None)
        quantizer = ORTQuantizer.from_pretrained(loaded, file_name="model.onnx")
        with quiet_fds():
            quantizer.quantize(quantization_config=qconfig, save_dir=out_dir, file_suffix=None)
        return {"excluded_nodes": excluded} if excluded else {}


def excluded_nodes(model_dir: Path, patterns: list[str], weights_only: bool) -> list[str]:
    """The node names `patterns` (a config's exclude_nodes) select in model_dir/model.onnx,
    and with `weights_only` every MatMul none of whose inputs is a constant."""
    if not patterns and not weights_only:
        return []
    import onnx

    from compress.stages.quantize.ort_llm import match_nodes

    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    chosen = match_nodes(graph, patterns)
    if weights_only:
        consts = {i.name for i in graph.initializer} | {
            o for n in graph.node if n.op_type == "Constant" for o in n.output}
        chosen += [n.name for n in graph.node if n.op_type == "MatMul"
                   and not consts & set(n.input) and n.name not in chosen]
    return chosen


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
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        from compress.quiet import quiet_fds
        from compress.stages.quantize.ort_llm import FeedList, calibration_feeds

        batches = calibration_feeds(ctx, loaded, config.max_samples, config.max_length,
                                    config.batch_size)

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[config.calibration]
        extra = {"CalibPercentile": config.percentile} if config.calibration == "percentile" \
            else {}
        with quiet_fds():
            quantize_static(
                str(loaded / "model.onnx"), str(out_dir / "model.onnx"), FeedList(batches),
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel, reduce_range=config.isa == "avx2",
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=method, extra_options=extra,
                # weights' matmuls only: element-wise ops would calibrate the attention
                # mask's -3.4e38 bias, which breaks the histogram calibrators
                op_types_to_quantize=["MatMul", "Gemm"])
        texts = sum(len(b["input_ids"]) for b in batches)
        return {"calibration_texts": texts, "calibration": config.calibration,
                "format": config.format}


# ---------------------------------------------------------------- INT4 weight-only

class OrtInt4WeightConfig(StageConfig):
    backend: Literal["ort-int4-weight"]
    algorithm: Literal[ALGORITHMS] = Field(  # type: ignore[valid-type]
        "default", description="MatMulNBits quantizer algorithm: default (ORT's blockwise "
                               "round-to-nearest), rtn, hqq, gptq (calibrated), k_quant")
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        128, description="weights per quantization block (one scale per block)")
    symmetric: bool | None = Field(
        None, description="symmetric blocks (no zero point); default: true, false for hqq "
                          "and k_quant, which always write zero points")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8")
    exclude_nodes: list[str] = Field(
        [], description="MatMul nodes left in float: a node name, a glob, or a path segment "
                        "(lm_head matches /lm_head/MatMul)")
    max_samples: int | None = Field(
        None, ge=1, description="gptq: calibration texts used (first N; default 32)")
    max_length: int | None = Field(
        None, ge=8, description="gptq: tokens per calibration text (default 256)")
    percdamp: float | None = Field(
        None, gt=0, lt=1, description="gptq: dampening, a fraction of the mean Hessian "
                                      "diagonal (default 0.01)")
    actorder: bool | None = Field(
        None, description="gptq: quantize columns in order of decreasing Hessian diagonal")

    @field_validator("symmetric")
    @classmethod
    def _symmetric_fits(cls, v, info):
        algorithm = info.data.get("algorithm")
        if v and algorithm in ASYMMETRIC_ONLY:
            raise ValueError(f"got symmetric: true with algorithm {algorithm}; expected false "
                             f"or no setting ({algorithm} always writes zero points)")
        return v

    @field_validator("max_samples", "max_length", "percdamp", "actorder")
    @classmethod
    def _gptq_only(cls, v, info):
        algorithm = info.data.get("algorithm")
        if v is not None and algorithm != "gptq":
            raise ValueError(f"got {info.field_name}: {v!r} with algorithm {algorithm}; "
                             f"{info.field_name} is for algorithm gptq only")
        return v


GPTQ_DEFAULTS = {"max_samples": 32, "max_length": 256, "percdamp": 0.01, "actorder": False}


@backend
class OrtInt4Weight(OrtBackend):
    name = "ort-int4-weight"
    format = "int4-weight-only"  # catalog format key
    description = "ONNX Runtime INT4 weight-only: MatMul -> MatMulNBits, activations stay float"
    Config = OrtInt4WeightConfig
    bits = 4
    weight_format, activation_format = "int4 (blockwise)", "float"
    notes = ("MatMulNBits has CPU and CUDA kernels; it pays off for memory-bound decoding",
             "only MatMul nodes are quantized (Gemm and embeddings stay float)",
             "algorithm gptq calibrates on data role `calibration`")

    def resolve(self, config):
        update = {}
        if config.symmetric is None:
            update["symmetric"] = config.algorithm not in ASYMMETRIC_ONLY
        if config.algorithm == "gptq":
            update |= {k: v for k, v in GPTQ_DEFAULTS.items() if getattr(config, k) is None}
        return config.model_copy(update=update) if update else config

    def data_roles(self, config):
        return {"calibration": True} if config.algorithm == "gptq" else {}

    def apply(self, ctx, loaded, config, out_dir):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from compress.quiet import quiet_fds
        from compress.stages.quantize.ort_llm import (
            algo_config,
            calibration_feeds,
            match_nodes,
            set_accuracy_level,
        )

        model = onnx.load(str(loaded / "model.onnx"))
        excluded = match_nodes(model.graph, config.exclude_nodes)
        algo = algo_config(config, lambda: calibration_feeds(
            ctx, loaded, config.max_samples, config.max_length, 1))
        quant = MatMulNBitsQuantizer(model, bits=4, block_size=config.block_size,
                                     is_symmetric=config.symmetric,
                                     accuracy_level=config.accuracy_level,
                                     nodes_to_exclude=excluded, algo_config=algo)
        with quiet_fds():
            quant.process()
        set_accuracy_level(quant.model.model.graph, config.accuracy_level)
        quant.model.save_model_to_file(str(out_dir / "model.onnx"),
                                       use_external_data_format=False)
        ops = [n.op_type for n in quant.model.model.graph.node]
        facts = {"matmul_nbits_nodes": ops.count("MatMulNBits"),
                 "matmul_float_nodes": ops.count("MatMul"), "algorithm": config.algorithm}
        return {**facts, "excluded_nodes": excluded} if excluded else facts
