"""NNCF backends: post-training INT8 of an OpenVINO model (`nncf-int8`).

`nncf-int8` reads the ONNX export (or an `openvino` IR) with OpenVINO, runs
`nncf.quantize` on the recipe's `calibration` texts (encoded as served: one text at a
time, padded to `max_length`), and writes an OpenVINO IR with FakeQuantize nodes that the
CPU plugin runs as INT8 (VNNI on AVX-512 CPUs, AMX on Sapphire Rapids and later). Every
NNCF setting compress exposes is a typed field; the rest keep NNCF's defaults (which are
recorded in the artifact's config by their value here, not left implicit).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.artifacts import Kind
from compress.stages.base import StageConfig
from compress.stages.common import copy_side_files, ov_agreement
from compress.stages.quantize.backend import Backend, backend


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
        level = parent.properties.get("graph_optimization")
        if level in ("O2", "O3", "O4"):
            return (f"quantize backend nncf-int8 cannot take {parent.step!r}: it was "
                    f"optimised at {level} for ONNX Runtime (fused ops OpenVINO does not "
                    "read); give it the plain export (optimize: none or O1)")
        return None

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
