"""NNCF backends: post-training INT8 of an OpenVINO model (`nncf-int8`), and weight
compression for LLMs (`nncf-weights`).

`nncf-int8` reads the ONNX export (or an `openvino` IR) with OpenVINO, runs
`nncf.quantize` on the recipe's `calibration` texts (encoded as served: one text at a
time, padded to `max_length`), and writes an OpenVINO IR with FakeQuantize nodes that the
CPU plugin runs as INT8 (VNNI on AVX-512 CPUs, AMX on Sapphire Rapids and later). Every
NNCF setting compress exposes is a typed field; the rest keep NNCF's defaults (which are
recorded in the artifact's config by their value here, not left implicit).

`nncf-weights` runs `nncf.compress_weights` on the OpenVINO model: INT8 (per output
channel) or INT4 (per group of `group_size` weights, `ratio` of the layers, the rest at
`backup_mode`), symmetric or asymmetric, optionally data-aware (AWQ, scale estimation,
GPTQ) on the `calibration` texts. Activations stay float: the CPU plugin decompresses the
weights inside its MatMul kernels, which pays off when decoding is memory bound.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Literal

from pydantic import Field, field_validator, model_validator

from compress.artifacts import Kind
from compress.stages.base import StageConfig
from compress.stages.common import copy_side_files, ov_agreement
from compress.stages.quantize.backend import OPTIMISED_LEVELS, Backend, backend


def refuse_ort_fused(name: str, parent) -> str | None:
    """OpenVINO cannot read a graph optimised for ONNX Runtime at O2+ (fused
    com.microsoft ops): refuse that input."""
    level = parent.properties.get("graph_optimization")
    if level in OPTIMISED_LEVELS:
        return (f"quantize backend {name} cannot take {parent.step!r}: it was optimised at "
                f"{level} for ONNX Runtime (fused ops OpenVINO does not read); give it the "
                "plain export (optimize: none or O1)")
    return None


class IgnoredScopeConfig(StageConfig):
    names: list[str] = Field([], description="node names kept in float")
    patterns: list[str] = Field([], description="regular expressions over node names")
    types: list[str] = Field([], description="OpenVINO op types kept in float (e.g. MatMul)")


class NncfInt8Config(StageConfig):
    backend: Literal["nncf-int8"]
    preset: Literal["performance", "mixed"] = Field(
        "mixed", description="performance: symmetric weights and activations; mixed: "
                             "asymmetric activations (NNCF's choice for transformers)")
    model_type: Literal["transformer", "none"] = Field(
        "transformer", description="transformer: NNCF's transformer rules (SmoothQuant, "
                                   "which ops stay float)")
    smooth_quant_alpha: float = Field(0.95, ge=-1, le=1, description="SmoothQuant alpha for "
                                      "MatMuls; a negative value switches SmoothQuant off")
    bias_correction: Literal["fast", "full", "none"] = Field(
        "fast", description="bias correction after quantization (full is much slower)")
    subset_size: int = Field(300, ge=1, description="calibration texts used (first N)")
    max_length: int = Field(128, ge=8, description="tokens per calibration text (padded, "
                                                    "as served)")
    ignored_scope: IgnoredScopeConfig = Field(default_factory=IgnoredScopeConfig)


@backend
class NncfInt8(Backend):
    name = "nncf-int8"
    format = "int8-static-ov"  # catalog format key
    description = "NNCF post-training INT8 on OpenVINO (calibrated, SmoothQuant, bias correction)"
    Config = NncfInt8Config
    accepts = {Kind.ONNX, Kind.OPENVINO}
    produces = Kind.OPENVINO
    runs_on = ("cpu",)
    weight_format, activation_format = "int8", "int8 (static, calibrated)"
    tasks = ("text-classification", "feature-extraction")
    package = "nncf"
    notes = ("measured with the openvino runtime (CPU plugin)",
             "calibration texts come from data role `calibration`")

    def data_roles(self, config):
        return {"calibration": True}

    def check_input(self, config, parent):
        return refuse_ort_fused(self.name, parent)

    def load(self, ctx, source, config):
        """The OpenVINO model and its calibration feeds (one text each, padded as served)."""
        import openvino as ov

        from compress.encoding import Encoder
        from compress.openvino import IR_FILE

        src = source.path / (IR_FILE if source.kind == Kind.OPENVINO else "model.onnx")
        model = ov.Core().read_model(str(src))
        names = {i.any_name for i in model.inputs}
        encoder = Encoder(source.path)
        texts = ctx.texts("calibration")[: config.subset_size]
        feeds = [{k: v for k, v in encoder([t], config.max_length, pad_to_max=True).items()
                  if k in names} for t in texts]
        return model, feeds

    def apply(self, ctx, loaded, config, out_dir):
        import nncf

        from compress.errors import StageError
        from compress.quiet import quiet_fds

        model, feeds = loaded
        scope = config.ignored_scope
        advanced = nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(
                matmul=config.smooth_quant_alpha),
            disable_bias_correction=config.bias_correction == "none")
        try:
            with quiet_fds():
                return nncf.quantize(
                    model, nncf.Dataset(feeds), subset_size=len(feeds),
                    preset=nncf.QuantizationPreset(config.preset),
                    model_type=nncf.ModelType.TRANSFORMER
                    if config.model_type == "transformer" else None,
                    fast_bias_correction=config.bias_correction != "full",
                    ignored_scope=nncf.IgnoredScope(names=scope.names, patterns=scope.patterns,
                                                    types=scope.types, validate=True),
                    advanced_parameters=advanced)
        except (nncf.ValidationError, RuntimeError) as exc:
            raise StageError(f"nncf-int8: {exc}") from None

    def save(self, ctx, source, loaded, applied, out_dir):
        import openvino as ov

        from compress.openvino import IR_FILE

        ov.save_model(applied, str(out_dir / IR_FILE))
        copy_side_files(source.path, out_dir)
        ops = [op.get_type_name() for op in applied.get_ops()]
        return {**ov_agreement(source.path, out_dir), "calibration_texts": len(loaded[1]),
                "fake_quantize_nodes": ops.count("FakeQuantize")}


# ---------------------------------------------------------------- weight compression

NO_OV_COMPRESSION = "NNCF_DISABLE_OPTIMIZED_COMPRESSION"
DATA_AWARE = ("awq", "scale_estimation", "gptq")


class NncfWeightsConfig(StageConfig):
    backend: Literal["nncf-weights"]
    mode: Literal["int8_sym", "int8_asym", "int4_sym", "int4_asym"] = Field(
        "int4_asym", description="weight precision and symmetry (activations stay float)")
    group_size: int | None = Field(
        None, description="int4: weights per scale (NNCF's default 128; -1 = one scale per "
                          "output channel); int8 modes are per channel and take none")
    group_size_fallback: Literal["error", "adjust", "ignore"] = Field(
        "error", description="int4: a layer whose input width group_size does not divide: "
                             "error (the build fails, naming the layers), adjust (the largest "
                             "power of two that divides it, at least 32), ignore (left at "
                             "backup_mode)")
    ratio: float | None = Field(
        None, gt=0, le=1, description="int4: share of the layers compressed to 4 bits (the "
                                      "rest get backup_mode); default 1")
    all_layers: bool = Field(False, description="int4: also the embeddings and the last "
                                                "layer (by default they get backup_mode)")
    backup_mode: Literal["int8_asym", "int8_sym", "none"] = Field(
        "int8_asym", description="int4: precision of the layers not compressed to 4 bits")
    awq: bool = Field(False, description="int4: activation-aware weight scaling (AWQ; "
                                         "needs data role `calibration`)")
    scale_estimation: bool = Field(False, description="int4: fit the group scales to the "
                                   "calibration activations (needs `calibration`)")
    gptq: bool = Field(False, description="int4: GPTQ error-compensating updates (needs "
                                          "`calibration`)")
    subset_size: int = Field(64, ge=1, description="calibration texts used (first N), for "
                                                   "the data-aware options")
    max_length: int = Field(128, ge=8, description="tokens per calibration text (cut, not "
                                                    "padded)")
    ignored_scope: IgnoredScopeConfig = Field(default_factory=IgnoredScopeConfig)

    @field_validator("group_size")
    @classmethod
    def _group(cls, v):
        if v is not None and v != -1 and v < 1:
            raise ValueError(f"got group_size {v}; expected a positive number of weights per "
                             "scale (e.g. 32, 64, 128) or -1 (one scale per output channel)")
        return v

    @model_validator(mode="after")
    def _int8_takes_no_int4_settings(self):
        if not self.mode.startswith("int8"):
            return self
        given = [f"{f}: {getattr(self, f)!r}" for f in ("group_size", "ratio")
                 if getattr(self, f) not in (None, -1, 1, 1.0)]
        given += [f"group_size_fallback: {self.group_size_fallback}"
                  ] if self.group_size_fallback != "error" else []
        given += [f"{f}: true" for f in ("all_layers", *DATA_AWARE) if getattr(self, f)]
        if given:
            raise ValueError(f"mode {self.mode} compresses every weight per output channel to "
                             f"8 bits; got {', '.join(given)}, which are for the int4 modes "
                             "(int4_sym, int4_asym)")
        return self


@contextmanager
def _numpy_compression(needed: bool):
    """NNCF 3.4.0 with openvino 2026.4.1: scale estimation through NNCF's OpenVINO-compiled
    compression functions (used for weights above a size threshold: every layer of a real
    LLM, none of a tiny test model) writes the group scales as i16 bit patterns, and the
    model computes garbage (SmolLM2: top-1 agreement 0). Its numpy path is correct: force
    it (NNCF's own switch) while scale estimation runs."""
    if not needed or os.environ.get(NO_OV_COMPRESSION) is not None:
        yield
        return
    os.environ[NO_OV_COMPRESSION] = "1"
    try:
        yield
    finally:
        del os.environ[NO_OV_COMPRESSION]


def _shorten(message: str, lines: int = 4) -> str:
    """NNCF lists every failed node (hundreds on an LLM): keep the first few."""
    parts = message.strip().splitlines()
    if len(parts) <= lines + 1:
        return message.strip()
    return "\n".join(parts[:lines + 1] + [f"\t... and {len(parts) - lines - 1} more"])


@backend
class NncfWeights(Backend):
    name = "nncf-weights"
    format = "int4-weight-ov"  # catalog format key of the int4 modes; int8 modes: format_for
    description = ("NNCF weight compression on OpenVINO: INT8/INT4 weights, group size, "
                   "ratio, AWQ, scale estimation, GPTQ (LLMs)")
    Config = NncfWeightsConfig
    accepts = {Kind.ONNX, Kind.OPENVINO}
    produces = Kind.OPENVINO
    runs_on = ("cpu",)
    bits = 4
    weight_format, activation_format = "int8 or int4 (per channel or per group)", "float"
    package = "nncf"
    notes = ("measured with the openvino runtime (CPU plugin), which decompresses the "
             "weights inside its MatMul kernels",
             "mode int8_* produces format int8-weight-ov; int4_* int4-weight-ov",
             "awq, scale_estimation and gptq calibrate on data role `calibration`")

    def format_for(self, config) -> str:
        return "int8-weight-ov" if config.mode.startswith("int8") else "int4-weight-ov"

    def resolve(self, config):
        """NNCF's defaults written out, so that the artifact's config says what ran."""
        int4 = config.mode.startswith("int4")
        update = {"group_size": config.group_size if config.group_size is not None
                  else (128 if int4 else -1),
                  "ratio": config.ratio if config.ratio is not None else 1.0}
        return config.model_copy(update=update)

    def data_roles(self, config):
        return {"calibration": True} if any(getattr(config, f) for f in DATA_AWARE) else {}

    def check_input(self, config, parent):
        return refuse_ort_fused(self.name, parent)

    def load(self, ctx, source, config):
        """The OpenVINO model and, for the data-aware options, its calibration feeds (one
        text each, cut to max_length, completed as the model is served: an empty KV cache
        and position ids for a decoder)."""
        import openvino as ov

        from compress.encoding import Encoder
        from compress.kvsession import KvSession
        from compress.openvino import IR_FILE, ov_inputs

        src = source.path / (IR_FILE if source.kind == Kind.OPENVINO else "model.onnx")
        model = ov.Core().read_model(str(src))
        feeds = []
        if self.data_roles(config):
            session, encoder = KvSession(ov_inputs(model.inputs), []), Encoder(source.path)
            feeds = [session.feeds(encoder([t], config.max_length))
                     for t in ctx.texts("calibration")[: config.subset_size]]
        return model, feeds

    def apply(self, ctx, loaded, config, out_dir):
        import nncf

        from compress.errors import StageError
        from compress.quiet import quiet_fds

        model, feeds = loaded
        scope = config.ignored_scope
        int4 = config.mode.startswith("int4")
        extra = {"group_size": config.group_size, "ratio": config.ratio,
                 "all_layers": config.all_layers,
                 "backup_mode": nncf.BackupMode(config.backup_mode),
                 "advanced_parameters": nncf.AdvancedCompressionParameters(
                     group_size_fallback_mode=nncf.GroupSizeFallbackMode(
                         config.group_size_fallback))} if int4 else {}
        if feeds:
            extra |= {"dataset": nncf.Dataset(feeds), "subset_size": len(feeds),
                      "awq": config.awq, "scale_estimation": config.scale_estimation,
                      "gptq": config.gptq}
        try:
            with quiet_fds(), _numpy_compression(config.scale_estimation):
                return nncf.compress_weights(
                    model, mode=nncf.CompressWeightsMode(config.mode),
                    ignored_scope=nncf.IgnoredScope(names=scope.names, patterns=scope.patterns,
                                                    types=scope.types, validate=True),
                    **extra)
        except (nncf.ValidationError, nncf.UnsupportedModelError, nncf.InvalidGroupSizeError,
                RuntimeError, ValueError) as exc:
            used = [f for f in DATA_AWARE if getattr(config, f)]
            if isinstance(exc, nncf.InvalidGroupSizeError):
                exc = (f"group_size {config.group_size} does not divide the input width of "
                       "these layers (set another group_size, or group_size_fallback: adjust "
                       f"or ignore): {exc}")
            if config.gptq and "Transpose is not supported" in str(exc):
                exc = ("its GPTQ takes only MatMuls whose weights are stored transposed "
                       "([out, in], as OpenVINO's PyTorch conversion writes them), and an "
                       "ONNX export stores them [in, out]; use awq and scale_estimation "
                       "here, or quantize backend ort-int4-weight with algorithm gptq")
            raise StageError(f"nncf-weights (mode {config.mode}"
                             + (f", {', '.join(used)}" if used else "")
                             + f"): NNCF {nncf.__version__} refused this model: "
                             + _shorten(str(exc))) from None

    def save(self, ctx, source, loaded, applied, out_dir):
        import openvino as ov

        from compress.errors import StageError
        from compress.openvino import IR_FILE, ir_weights

        ov.save_model(applied, str(out_dir / IR_FILE), compress_to_fp16=False)
        copy_side_files(source.path, out_dir)
        stored = ir_weights(out_dir)[0]
        if "int16" in stored:  # see _numpy_compression
            raise StageError("nncf-weights: NNCF wrote int16 constants (group scales as bit "
                             "patterns: the model would compute garbage); not saved")
        return {**ov_agreement(source.path, out_dir), "calibration_texts": len(loaded[1]),
                "stored_bytes_by_dtype": stored}
