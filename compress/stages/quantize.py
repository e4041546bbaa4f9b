"""quantize: one stage, several backends, chosen by the `backend` setting.

Each backend declares its own config, the artifact kinds it accepts and produces, and
where it runs (as data: see `compress.capabilities`), so that a wrong chain or an
unsupported device is refused at validation, not after an hour of work.

PyTorch backends (torch dynamic int8, torchao) save `torch.save(state_dict)`: their packed
params and tensor subclasses do not fit safetensors on transformers 4.57. The loader
(`compress.loading`) rebuilds the module, re-applies `apply_transform` and loads the state
with `torch.load(weights_only=True)`. bitsandbytes models save and reload with
save_pretrained; fp16/bf16 casts are safetensors.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import shutil
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationError

from compress.artifacts import Artifact, Kind
from compress.stages.base import Stage, StageConfig, StageContext, register

OPTIMISED_LEVELS = ("O2", "O3", "O4")


class Backend:
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    accepts: ClassVar[set[Kind]]
    produces: ClassVar[Kind]
    format: ClassVar[str]  # the catalog format its artifact computes in (catalog.yaml)
    devices: ClassVar[tuple[str, ...]]  # where the output runs fast
    # capability data for the recommender (compress.capabilities.backend_capabilities)
    runs_on: ClassVar[tuple[str, ...]] = ("cpu", "cuda")  # where the backend can run at all
    min_compute_capability: ClassVar[float | None] = None  # CUDA, for fast kernels
    weight_format: ClassVar[str] = ""
    activation_format: ClassVar[str] = ""
    bits: ClassVar[int] = 8
    tasks: ClassVar[tuple[str, ...]] = ("text-classification", "feature-extraction",
                                        "causal-lm")
    notes: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str | None] = None  # import name the backend needs

    def resolve(self, config):
        return config

    def check(self, config, task: str) -> str | None:
        if task not in self.tasks:
            return f"quantize backend {self.name} does not support task {task}"
        if self.package and importlib.util.find_spec(self.package) is None:
            return (f"quantize backend {self.name} needs the {self.package!r} package, "
                    "which is not installed here")
        if "cpu" not in self.runs_on and not _cuda_available():
            return (f"quantize backend {self.name} needs a CUDA GPU and this machine has "
                    f"none; on CPU use one of: " + ", ".join(
                        n for n, b in BACKENDS.items() if "cpu" in b.runs_on))
        return None

    def check_input(self, config, parent) -> str | None:
        return None

    def data_roles(self, config) -> dict[str, bool]:
        return {}

    def run(self, ctx: StageContext, source: Artifact, config, out_dir: Path) -> dict:
        raise NotImplementedError


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


BACKENDS: dict[str, Backend] = {}


def backend(cls):
    BACKENDS[cls.name] = cls()
    return cls


# ---------------------------------------------------------------- ONNX Runtime dynamic INT8

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


class OrtDynamicInt8Config(StageConfig):
    backend: Literal["ort-dynamic-int8"]
    per_channel: bool = Field(False, description="per-channel weight scales")
    isa: Literal["auto", "avx512_vnni", "avx2", "arm64"] = Field(
        "auto", description="instruction set the kernels target; auto detects this CPU")


@backend
class OrtDynamicInt8(Backend):
    name = "ort-dynamic-int8"
    format = "int8-dynamic-ort"  # catalog format key
    description = "ONNX Runtime dynamic INT8 (weights int8, activations quantized at run time)"
    Config = OrtDynamicInt8Config
    accepts = {Kind.ONNX}
    produces = Kind.ONNX_QUANTIZED
    devices = ("cpu",)  # ORT's CUDA provider has no INT8 kernels
    weight_format, activation_format = "int8", "int8 (dynamic, per batch)"
    notes = ("INT8 ONNX has no fast kernels on ORT's CUDA provider (quantized ops fall back "
             "to CPU); use TensorRT or PyTorch kernels on GPU",)

    def check_input(self, config, parent):
        return _refuse_optimised(self.name, parent)

    def resolve(self, config):
        if config.isa == "auto":
            config = config.model_copy(update={"isa": detect_isa()})
        return config

    def run(self, ctx, source, config, out_dir):
        from compress.quiet import import_transformers, quiet_fds

        import_transformers()
        with quiet_fds():
            from optimum.onnxruntime import ORTQuantizer
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

        qconfig = getattr(AutoQuantizationConfig, config.isa)(
            is_static=False, per_channel=config.per_channel)
        quantizer = ORTQuantizer.from_pretrained(source.path, file_name="model.onnx")
        with quiet_fds():
            quantizer.quantize(quantization_config=qconfig, save_dir=out_dir, file_suffix=None)
        _copy_side_files(source.path, out_dir)
        return _agreement(source.path, out_dir)


def _copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer and config files travel with the model; the source's weights do not."""
    from compress.artifacts import META_FILE

    for f in src.iterdir():
        if f.is_file() and f.suffix not in (".onnx", ".onnx_data") and f.name != META_FILE \
                and not (dst / f.name).exists():
            shutil.copy2(f, dst / f.name)



def _refuse_optimised(backend: str, parent) -> str | None:
    """ORT quantization of a graph optimised at O2/O3 fails in shape inference ("Unable to
    find data type for weight_name... shape_inference failed"): refuse that order."""
    config = getattr(parent, "config", None)
    level = getattr(config, "optimize", None) or getattr(config, "level", None)
    if level in OPTIMISED_LEVELS:
        return (f"quantize backend {backend} cannot take {parent.step!r}: it was optimised at "
                f"{level}, and ONNX Runtime quantization of an O2/O3-optimised graph fails in "
                "shape inference ('Unable to find data type for weight_name'). Export with "
                "optimize: O1 (or none), quantize, then add an `optimize` step at "
                f"{level} after the quantize step")
    return None


def _refuse_optimised_source(backend: str, source: Artifact) -> None:
    config = source.meta.get("config") or {}
    level = config.get("optimize") or config.get("level")
    if level in OPTIMISED_LEVELS:
        raise ValueError(f"{backend}: the input ONNX model was optimised at {level}; "
                         "quantize before O2/O3 optimisation (see the optimize stage)")


def _agreement(reference: Path, quantized: Path) -> dict:
    """Max abs diff and top-1 agreement of the quantized model against its ONNX source."""
    import numpy as np

    from compress.encoding import Encoder, OrtModel
    from compress.stages.export import SAMPLE_TEXTS

    feeds = Encoder(quantized)(SAMPLE_TEXTS, 64)
    ref_model, out_model = OrtModel(reference), OrtModel(quantized)
    ref = ref_model(feeds)
    out = out_model(feeds)
    return {"max_abs_diff_vs_input": float(np.max(np.abs(ref - out))),
            "top1_agreement_vs_input": float(np.mean(ref.argmax(-1) == out.argmax(-1)))}


# ---------------------------------------------------------------- ONNX Runtime static INT8

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
class OrtStaticInt8(Backend):
    name = "ort-static-int8"
    format = "int8-static-qdq"  # catalog format key
    description = "ONNX Runtime static INT8: activation ranges calibrated on the calibration data"
    Config = OrtStaticInt8Config
    accepts = {Kind.ONNX}
    produces = Kind.ONNX_QUANTIZED
    devices = ("cpu",)
    weight_format, activation_format = "int8", "uint8 (static, calibrated)"
    notes = OrtDynamicInt8.notes + ("calibration texts come from data role `calibration`",)

    def resolve(self, config):
        if config.isa == "auto":
            config = config.model_copy(update={"isa": detect_isa()})
        return config

    def check_input(self, config, parent):
        return _refuse_optimised(self.name, parent)

    def data_roles(self, config):
        return {"calibration": True}

    def run(self, ctx, source, config, out_dir):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        from compress.encoding import Encoder, OrtModel
        from compress.quiet import quiet_fds

        _refuse_optimised_source(self.name, source)
        texts = ctx.texts("calibration")[: config.max_samples]
        encoder, model = Encoder(source.path), OrtModel(source.path)
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
        advance = ctx.track("calibrate + quantize", 1)
        with quiet_fds():
            quantize_static(
                str(source.path / "model.onnx"), str(out_dir / "model.onnx"), Reader(),
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel, reduce_range=config.isa == "avx2",
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=method, extra_options=extra,
                # weights' matmuls only: element-wise ops would calibrate the attention
                # mask's -3.4e38 bias, which breaks the histogram calibrators
                op_types_to_quantize=["MatMul", "Gemm"])
        advance(1)
        _copy_side_files(source.path, out_dir)
        return {**_agreement(source.path, out_dir), "calibration_texts": len(texts),
                "calibration": config.calibration, "format": config.format}


# ---------------------------------------------------------------- ONNX Runtime INT4 weight-only

class OrtInt4WeightConfig(StageConfig):
    backend: Literal["ort-int4-weight"]
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        128, description="weights per quantization block (one scale per block)")
    symmetric: bool = Field(True, description="symmetric blocks (no zero point)")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8")


@backend
class OrtInt4Weight(Backend):
    name = "ort-int4-weight"
    format = "int4-weight-only"  # catalog format key
    description = "ONNX Runtime INT4 weight-only: MatMul -> MatMulNBits, activations stay float"
    Config = OrtInt4WeightConfig
    accepts = {Kind.ONNX}
    produces = Kind.ONNX_QUANTIZED
    devices = ("cpu", "cuda")
    bits = 4
    weight_format, activation_format = "int4 (blockwise)", "float"
    notes = ("MatMulNBits has CPU and CUDA kernels; it pays off for memory-bound decoding",
             "only MatMul nodes are quantized (Gemm and embeddings stay float)")

    def check_input(self, config, parent):
        return _refuse_optimised(self.name, parent)

    def run(self, ctx, source, config, out_dir):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from compress.quiet import quiet_fds

        _refuse_optimised_source(self.name, source)
        model = onnx.load(str(source.path / "model.onnx"))
        quant = MatMulNBitsQuantizer(model, bits=4, block_size=config.block_size,
                                     is_symmetric=config.symmetric,
                                     accuracy_level=config.accuracy_level)
        with quiet_fds():
            quant.process()
        quant.model.save_model_to_file(str(out_dir / "model.onnx"),
                                       use_external_data_format=False)
        _copy_side_files(source.path, out_dir)
        ops = [n.op_type for n in quant.model.model.graph.node]
        return {**_agreement(source.path, out_dir), "matmul_nbits_nodes": ops.count(
            "MatMulNBits"), "matmul_float_nodes": ops.count("MatMul")}


# ---------------------------------------------------------------- PyTorch backends

def apply_transform(model, spec: dict):
    """Quantize or cast a float module in place the way a backend did (also used by the
    loader, to rebuild the module its saved state dict fits). Returns the model."""
    import torch

    name = spec["backend"]
    if name == "torch-dynamic-int8":
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                      dtype=torch.qint8)
    if name in ("fp16", "bf16"):
        return model.to(torch.float16 if name == "fp16" else torch.bfloat16)
    if name.startswith("torchao-"):
        from compress.quiet import import_transformers, quiet_fds

        import_transformers()
        with quiet_fds():
            import torchao.quantization as tq
        if name == "torchao-int8-weight":
            cfg = tq.Int8WeightOnlyConfig()
        elif name == "torchao-int8-dynamic":
            cfg = tq.Int8DynamicActivationInt8WeightConfig()
        elif name == "torchao-int4-weight":
            model = model.to(device="cuda", dtype=torch.bfloat16)
            cfg = tq.Int4WeightOnlyConfig(group_size=spec.get("group_size", 128))
        else:
            raise ValueError(f"unknown torchao backend {name!r}")
        with quiet_fds():
            tq.quantize_(model, cfg)
        return model
    raise ValueError(f"no transform for backend {name!r}")


def _sample_outputs(model, tok, task: str):
    """Outputs on the export check texts: logits, or mean-pooled embeddings."""
    import torch

    from compress.models import mean_pool
    from compress.stages.export import SAMPLE_TEXTS

    device = next(model.parameters()).device
    batch = tok(SAMPLE_TEXTS, padding=True, truncation=True, max_length=64,
                return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model(**{k: v for k, v in batch.items() if k in _forward_args(model)})
    if task == "feature-extraction":
        return mean_pool(out.last_hidden_state.float(), batch["attention_mask"]).cpu()
    return out.logits.float().cpu()


def _forward_args(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _compare(ref, out, task: str) -> dict:
    import torch

    checks = {"max_abs_diff_vs_input": float((ref - out).abs().max())}
    if task == "feature-extraction":
        checks["cosine_vs_input"] = float(torch.nn.functional.cosine_similarity(
            ref, out, dim=-1).mean())
    else:
        checks["top1_agreement_vs_input"] = float(
            (ref.argmax(-1) == out.argmax(-1)).float().mean())
    return checks


def _torch_quantize(ctx, source: Artifact, spec: dict, fmt: str, out_dir: Path) -> dict:
    """Load (any PyTorch kind), transform, compare with the input, save for the loader."""
    from compress.loading import load_for_inference, read_load_info, save_for_inference
    from compress.models import load_tokenizer, weight_inventory

    model = load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                               revision=source.revision)
    tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
    advance = ctx.track(f"quantize {spec['backend']}", 1)
    ref = _sample_outputs(model, tok, ctx.task)
    model = apply_transform(model, spec)
    out = _sample_outputs(model, tok, ctx.task)
    source_info = read_load_info(source.path) or {}
    save_for_inference(model, out_dir, fmt, shapes=source_info.get("shapes"), transform=spec)
    tok.save_pretrained(out_dir)
    advance(1)
    return {**_compare(ref, out, ctx.task), "weights": weight_inventory(model)}


class TorchDynamicInt8Config(StageConfig):
    backend: Literal["torch-dynamic-int8"]


@backend
class TorchDynamicInt8(Backend):
    name = "torch-dynamic-int8"
    format = "int8-dynamic-torch"  # catalog format key
    description = "PyTorch quantize_dynamic: Linear weights int8, activations quantized at run time"
    Config = TorchDynamicInt8Config
    accepts = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}
    produces = Kind.PYTORCH_QUANTIZED
    devices = ("cpu",)
    runs_on = ("cpu",)
    weight_format, activation_format = "int8", "int8 (dynamic)"
    notes = ("CPU kernels only (fbgemm/qnnpack); torch.ao.quantization is deprecated",)

    def run(self, ctx, source, config, out_dir):
        return _torch_quantize(ctx, source, {"backend": self.name}, "torch-state-dict",
                               out_dir)


class TorchaoInt8WeightConfig(StageConfig):
    backend: Literal["torchao-int8-weight"]


@backend
class TorchaoInt8Weight(Backend):
    name = "torchao-int8-weight"
    format = "int8-weight-only"  # catalog format key
    description = "torchao int8 weight-only (activations stay float)"
    Config = TorchaoInt8WeightConfig
    accepts = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}
    produces = Kind.PYTORCH_QUANTIZED
    devices = ("cuda",)
    package = "torchao"
    weight_format, activation_format = "int8", "float"
    notes = ("halves weight memory vs fp16; speeds up memory-bound decoding on GPU, "
             "no speed-up on CPU",)

    def run(self, ctx, source, config, out_dir):
        return _torch_quantize(ctx, source, {"backend": self.name}, "torch-state-dict",
                               out_dir)


class TorchaoInt8DynamicConfig(StageConfig):
    backend: Literal["torchao-int8-dynamic"]


@backend
class TorchaoInt8Dynamic(Backend):
    name = "torchao-int8-dynamic"
    format = "int8-dynamic-torchao"  # catalog format key
    description = "torchao int8 weights with int8 dynamic activations"
    Config = TorchaoInt8DynamicConfig
    accepts = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}
    produces = Kind.PYTORCH_QUANTIZED
    devices = ("cuda",)
    min_compute_capability = 7.5
    package = "torchao"
    weight_format, activation_format = "int8", "int8 (dynamic)"
    notes = ("int8 tensor-core matmuls on CUDA; on CPU it runs but is not faster",)

    def run(self, ctx, source, config, out_dir):
        return _torch_quantize(ctx, source, {"backend": self.name}, "torch-state-dict",
                               out_dir)


class TorchaoInt4WeightConfig(StageConfig):
    backend: Literal["torchao-int4-weight"]
    group_size: Literal[32, 64, 128, 256] = Field(128, description="weights per scale group")


@backend
class TorchaoInt4Weight(Backend):
    name = "torchao-int4-weight"
    format = "int4-weight-only"  # catalog format key
    description = "torchao int4 weight-only (bf16 activations), CUDA only"
    Config = TorchaoInt4WeightConfig
    accepts = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}
    produces = Kind.PYTORCH_QUANTIZED
    devices = ("cuda",)
    runs_on = ("cuda",)
    min_compute_capability = 8.0
    bits = 4
    package = "torchao"
    weight_format, activation_format = "int4 (grouped)", "bfloat16"
    notes = ("CUDA only: torchao's int4 kernels need CUDA (seen failing on CPU)",
             "its tinygemm kernels need compute capability 8.0+ (bf16)")

    def run(self, ctx, source, config, out_dir):
        if not _cuda_available():
            raise ValueError("torchao-int4-weight needs a CUDA GPU; this machine has none")
        return _torch_quantize(ctx, source, {"backend": self.name,
                                             "group_size": config.group_size},
                               "torch-state-dict", out_dir)


class HalfConfig(StageConfig):
    backend: Literal["fp16", "bf16"]


class _Half(Backend):
    Config = HalfConfig
    accepts = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}
    produces = Kind.PYTORCH_QUANTIZED
    devices = ("cuda",)
    bits = 16

    def run(self, ctx, source, config, out_dir):
        return _torch_quantize(ctx, source, {"backend": self.name}, "safetensors", out_dir)


@backend
class Fp16(_Half):
    name = "fp16"
    format = "fp16"  # catalog format key
    description = "cast weights and activations to float16 (for GPU targets)"
    weight_format = activation_format = "float16"
    min_compute_capability = 7.0
    notes = ("tensor cores on every supported GPU; slow on CPU",)


@backend
class Bf16(_Half):
    name = "bf16"
    format = "bf16"  # catalog format key
    description = "cast weights and activations to bfloat16 (for GPU targets)"
    weight_format = activation_format = "bfloat16"
    min_compute_capability = 8.0
    notes = ("no BF16 on compute capability 7.5 (T4); needs 8.0+ (A100, A10, L4, H100)",)


class BnbConfig(StageConfig):
    backend: Literal["bnb-int8", "bnb-nf4", "bnb-fp4"]
    compute_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="4-bit matmul compute dtype; auto: bfloat16 on CUDA 8.0+, float16 "
                            "on older CUDA, float32 on CPU")
    double_quant: bool = Field(False, description="4-bit: quantize the quantization constants "
                                                  "too (saves ~0.4 bit/weight)")
    threshold: float = Field(6.0, gt=0, description="int8: LLM.int8() outlier threshold")


class _Bnb(Backend):
    Config = BnbConfig
    accepts = {Kind.PYTORCH}
    produces = Kind.PYTORCH_QUANTIZED
    devices = ("cuda",)
    package = "bitsandbytes"

    def resolve(self, config):
        if config.compute_dtype == "auto":
            dtype = "float32"
            if _cuda_available():
                import torch

                dtype = "bfloat16" if torch.cuda.get_device_capability()[0] >= 8 else "float16"
            config = config.model_copy(update={"compute_dtype": dtype})
        return config

    def run(self, ctx, source, config, out_dir):
        import torch

        from compress.loading import load_for_inference, save_for_inference
        from compress.models import load_pytorch, load_tokenizer, weight_inventory
        from compress.quiet import import_transformers, quiet_fds, verbose

        tf = import_transformers()
        if not verbose():  # "Failed to load CPU gemm_4bit_forward from kernels-community"
            logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        if self.name == "bnb-int8":
            qc = tf.BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.threshold)
        else:
            qc = tf.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=self.name.removeprefix("bnb-"),
                bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype),
                bnb_4bit_use_double_quant=config.double_quant)
        device = "cuda" if _cuda_available() else "cpu"
        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        advance = ctx.track(f"quantize {self.name}", 1)
        ref = _sample_outputs(load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                                                 revision=source.revision), tok, ctx.task)
        with quiet_fds():
            model = load_pytorch(source.path, ctx.task, ctx.trust_remote_code, source.revision,
                                 quantization_config=qc, device_map=device)
        out = _sample_outputs(model, tok, ctx.task)
        save_for_inference(model, out_dir, "hf", load_kwargs={"device_map": device})
        tok.save_pretrained(out_dir)
        advance(1)
        return {**_compare(ref, out, ctx.task), "weights": weight_inventory(model),
                "device": device}


@backend
class BnbInt8(_Bnb):
    name = "bnb-int8"
    format = "int8-bnb"  # catalog format key
    description = "bitsandbytes LLM.int8() through BitsAndBytesConfig"
    weight_format, activation_format = "int8 (+fp16 outliers)", "float16"
    notes = ("saves memory but is slower than fp16 on GPU", "very slow on CPU")


@backend
class BnbNf4(_Bnb):
    name = "bnb-nf4"
    format = "int4-bnb"  # catalog format key
    description = "bitsandbytes 4-bit NormalFloat weights"
    bits = 4
    weight_format, activation_format = "nf4 (blockwise)", "compute_dtype"
    notes = ("saves memory; dequantizes per matmul, so not faster than fp16 at large batch",)


@backend
class BnbFp4(_Bnb):
    name = "bnb-fp4"
    format = "int4-bnb"  # catalog format key
    description = "bitsandbytes 4-bit float weights"
    bits = 4
    weight_format, activation_format = "fp4 (blockwise)", "compute_dtype"
    notes = BnbNf4.notes


# ---------------------------------------------------------------- the stage

@register
class Quantize(Stage):
    name = "quantize"
    description = "Quantize weights (and activations) to INT8/INT4 with a chosen backend"
    Config = OrtDynamicInt8Config

    def parse_config(self, data: dict) -> StageConfig:
        name = data.get("backend")
        if name not in BACKENDS:
            raise ValidationError.from_exception_data("quantize", [{
                "type": "literal_error" if name is not None else "missing",
                "loc": ("backend",), "input": name,
                "ctx": {"expected": ", ".join(repr(b) for b in BACKENDS)}}])
        return BACKENDS[name].Config.model_validate(data)

    def config_types(self):
        seen, out = set(), {}
        for n, b in BACKENDS.items():
            if b.Config not in seen:
                seen.add(b.Config)
                out[f"quantize backend={n}"] = b.Config
        return out

    def accepts(self, config):
        return BACKENDS[config.backend].accepts

    def produces(self, config, input_kind):
        return BACKENDS[config.backend].produces

    def produces_format(self, config):
        return BACKENDS[config.backend].format

    def data_roles(self, config):
        return BACKENDS[config.backend].data_roles(config)

    def check(self, config, task):
        return BACKENDS[config.backend].check(config, task)

    def check_input(self, config, parent):
        """A reason to refuse this step's input node (called by the planner), or None."""
        return BACKENDS[config.backend].check_input(config, parent)

    def resolve(self, config):
        return BACKENDS[config.backend].resolve(config)

    def run(self, ctx, source, config, out_dir):
        return BACKENDS[config.backend].run(ctx, source, config, out_dir)
