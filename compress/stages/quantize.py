"""quantize: one stage, several backends, chosen by the `backend` setting.

Each backend declares its own config, the artifact kinds it accepts and produces, and
where it runs, so that a wrong chain or an unsupported device is refused at validation.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationError

from compress.artifacts import Artifact, Kind
from compress.stages.base import Stage, StageConfig, StageContext, register


class Backend:
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    accepts: ClassVar[set[Kind]]
    produces: ClassVar[Kind]
    devices: ClassVar[tuple[str, ...]]  # where the output runs fast

    def resolve(self, config):
        return config

    def run(self, ctx: StageContext, source: Artifact, config, out_dir: Path) -> dict:
        raise NotImplementedError


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
    description = "ONNX Runtime dynamic INT8 (weights int8, activations quantized at run time)"
    Config = OrtDynamicInt8Config
    accepts = {Kind.ONNX}
    produces = Kind.ONNX_QUANTIZED
    devices = ("cpu",)  # ORT's CUDA provider has no INT8 kernels

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


def _agreement(reference: Path, quantized: Path) -> dict:
    """Max abs diff and top-1 agreement of the quantized model against its ONNX source."""
    import numpy as np

    from compress.encoding import Encoder, OrtModel
    from compress.stages.export import SAMPLE_TEXTS

    feeds = Encoder(quantized)(SAMPLE_TEXTS, 64)
    ref, out = OrtModel(reference)(feeds), OrtModel(quantized)(feeds)
    return {"max_abs_diff_vs_input": float(np.max(np.abs(ref - out))),
            "top1_agreement_vs_input": float(np.mean(ref.argmax(-1) == out.argmax(-1)))}


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
        return {f"quantize backend={n}": b.Config for n, b in BACKENDS.items()}

    def accepts(self, config):
        return BACKENDS[config.backend].accepts

    def produces(self, config, input_kind):
        return BACKENDS[config.backend].produces

    def resolve(self, config):
        return BACKENDS[config.backend].resolve(config)

    def run(self, ctx, source, config, out_dir):
        return BACKENDS[config.backend].run(ctx, source, config, out_dir)
