"""export: ONNX through optimum (or torch.onnx dynamo), optional ORT graph optimisation,
verified against PyTorch with ONNX Runtime.

The model is loaded through `compress.loading` and exported with `onnx_export_from_model`
(not `main_export(path)`), so structurally pruned models, whose config does not describe
their shapes, export too. Causal-lm exports carry past key values (optimum task
text-generation-with-past), so generation works; the check feeds an empty past. Every export
is checked: ONNX Runtime's outputs against PyTorch's on sample inputs; the max abs diff goes
into the artifact's metadata and the stage fails above `atol`.

Graph optimisation (O1-O3, O4 = O3 + fp16 for GPU) uses optimum's ORTOptimizer. ORT
quantization of an O2/O3 graph fails in shape inference, so quantize refuses such inputs:
optimise at O1 before quantizing, or use the `optimize` stage after it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from compress.artifacts import EXPORTABLE, Artifact, Kind
from compress.errors import StageError
from compress.stages.base import Stage, StageConfig, StageContext, register
from compress.stages.common import SAMPLE_TEXTS, copy_side_files, masked_max
from compress.torchutil import cuda_available, forward_args

OPTIMUM_TASKS = {
    "text-classification": "text-classification",
    "feature-extraction": "feature-extraction",
    "causal-lm": "text-generation-with-past",
}


Level = Literal["O1", "O2", "O3", "O4"]


def _o4_refusal(level: str | None) -> str | None:
    if level == "O4" and not cuda_available():
        return ("optimize O4 (O3 plus fp16 conversion) is for GPU targets and needs a CUDA GPU "
                "here to build; this machine has none: use O1, O2 or O3")
    return None


class ExportConfig(StageConfig):
    opset: int | None = Field(None, ge=11, le=23, description="ONNX opset; the exporter's "
                                                               "default if null")
    atol: float = Field(1e-3, gt=0, description="max abs diff allowed between ONNX Runtime "
                                                "and PyTorch outputs")
    check_length: int = Field(64, ge=8, description="tokens per sample input for the check")
    exporter: Literal["auto", "optimum", "dynamo"] = Field(
        "auto", description="optimum, or torch.onnx.export(dynamo=True); auto: optimum where "
                            "it has a config for the architecture, else dynamo")
    optimize: Level | None = Field(
        None, description="ORT graph optimisation: O1 basic, O2 extended fusions, O3 + GELU "
                          "approximation, O4 = O3 + fp16 (GPU). Quantize only after O1 or none")
    with_past: bool | None = Field(
        None, description="causal-lm: export past key values for generation (default: yes "
                          "with optimum; the dynamo path exports without)")


@register
class Export(Stage):
    name = "export"
    description = "Export to ONNX (optimum or dynamo), optionally optimise, verify against PyTorch"
    Config = ExportConfig
    version = "2"

    def accepts(self, config):
        return set(EXPORTABLE)

    def produces(self, config, input_kind):
        return Kind.ONNX

    def properties(self, config, input_properties):
        return {"graph_optimization": config.optimize} if config.optimize else {}

    def check(self, config, task):
        if config.with_past and task != "causal-lm":
            return f"with_past is for task causal-lm, not {task}"
        if config.with_past and config.exporter == "dynamo":
            return ("with_past: true needs exporter optimum (the dynamo path here exports "
                    "logits without past key values); set with_past: false or exporter: optimum")
        return _o4_refusal(config.optimize)

    def run(self, ctx: StageContext, source: Artifact, config: ExportConfig,
            out_dir: Path) -> dict:
        from compress.loading import load_for_inference
        from compress.models import load_tokenizer

        model = load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                               revision=source.revision)
        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        exporter = config.exporter
        if exporter == "auto":
            exporter = "optimum" if optimum_supports(model.config.model_type, ctx.task) \
                else "dynamo"
        with_past = ctx.task == "causal-lm" and exporter == "optimum" \
            and config.with_past is not False
        advance = ctx.track("export", 3)
        if exporter == "optimum":
            _export_optimum(model, out_dir, ctx.task, config.opset, with_past)
        else:
            _export_dynamo(model, out_dir, ctx.task, config.opset)
        tok.save_pretrained(out_dir)
        advance(1)
        if config.optimize:
            ort_optimize(out_dir, config.optimize)
        advance(1)
        diff = verify(model, out_dir, config.check_length)
        advance(1)
        if not diff <= config.atol:
            raise StageError(f"ONNX Runtime output differs from PyTorch by {diff:.2e} "
                             f"(atol {config.atol:g})")
        import onnx

        proto = onnx.load(str(out_dir / "model.onnx"), load_external_data=False)
        return {"max_abs_diff": diff, "atol": config.atol, "check_inputs": len(SAMPLE_TEXTS),
                "exporter": exporter, "optimize": config.optimize, "with_past": with_past,
                "opset": next((o.version for o in proto.opset_import if o.domain in ("",
                                                                                   "ai.onnx")),
                              None),
                "inputs": [i.name for i in proto.graph.input]}


def optimum_supports(model_type: str, task: str) -> bool:
    """Whether optimum has an ONNX export config for this architecture and task."""
    from compress.quiet import import_transformers, quiet_fds

    import_transformers()
    with quiet_fds():
        import optimum.exporters.onnx.model_configs  # noqa: F401 - registers ONNX configs
        from optimum.exporters.tasks import TasksManager
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(
            model_type.replace("_", "-"), "onnx", library_name="transformers")
    except (KeyError, ValueError):
        return False
    return OPTIMUM_TASKS[task] in tasks or OPTIMUM_TASKS[task].removesuffix("-with-past") in tasks


def _export_optimum(model, out_dir: Path, task: str, opset: int | None, with_past: bool):
    from compress.quiet import import_transformers, quiet_fds

    import_transformers()
    with quiet_fds():
        from optimum.exporters.onnx import onnx_export_from_model
    optimum_task = OPTIMUM_TASKS[task] if with_past or task != "causal-lm" else "text-generation"
    with quiet_fds():
        onnx_export_from_model(model, output=out_dir, task=optimum_task, opset=opset,
                               do_validation=False)


class _Outputs:
    """Wraps a HF model so the exported graph returns one named tensor (logits or
    last_hidden_state), without caches."""

    def __new__(cls, model, task):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    kwargs["token_type_ids"] = token_type_ids
                if task == "causal-lm":
                    kwargs["use_cache"] = False
                out = self.model(**kwargs)
                return out.logits if task != "feature-extraction" else out.last_hidden_state

        return Wrapper().eval()


def _export_dynamo(model, out_dir: Path, task: str, opset: int | None):
    """torch.onnx.export(dynamo=True): for architectures optimum has no config for."""
    import torch

    from compress.quiet import quiet_fds

    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in forward_args(model) and task != "causal-lm":
        names.append("token_type_ids")
    sample = {n: torch.ones(2, 16, dtype=torch.long) for n in names}
    sample["token_type_ids"] = torch.zeros(2, 16, dtype=torch.long) if len(names) == 3 \
        else None
    args = tuple(sample[n] for n in names)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2,
                                                                             max=4096)
    output = "logits" if task != "feature-extraction" else "last_hidden_state"
    with quiet_fds(), torch.no_grad():
        program = torch.onnx.export(
            _Outputs(model, task), args, dynamo=True, input_names=names, output_names=[output],
            dynamic_shapes=tuple({0: batch, 1: seq} for _ in names),
            opset_version=opset, external_data=False)
    program.save(str(out_dir / "model.onnx"))
    model.config.save_pretrained(out_dir)


def ort_optimize(model_dir: Path, level: str) -> None:
    """Optimise model_dir/model.onnx in place with optimum's ORTOptimizer at `level`."""
    import tempfile

    from compress.quiet import import_transformers, quiet_fds

    import_transformers()
    with quiet_fds():
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig
    config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=level == "O4")
    # scratch beside model_dir: inside the builder's own workspace in the store (tmp/<key>-<id>/),
    # which no other run cleans up while this builder holds the key's lock
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix="ort-optimize-") as tmp:
        optimizer = ORTOptimizer.from_pretrained(model_dir, file_names=["model.onnx"])
        with quiet_fds():
            optimizer.optimize(optimization_config=config, save_dir=tmp, file_suffix=None)
        if not (Path(tmp) / "model.onnx").is_file():
            raise RuntimeError(f"ORT optimisation at {level} wrote no model.onnx; refusing to "
                               "store the unoptimised graph under that level")
        for name in ("model.onnx", "model.onnx_data"):
            if (Path(tmp) / name).is_file():
                shutil.move(str(Path(tmp) / name), str(model_dir / name))
            elif name == "model.onnx_data" and (model_dir / name).is_file():
                (model_dir / name).unlink()  # the optimised model holds its weights inline
        if (Path(tmp) / "ort_config.json").is_file():
            shutil.copy2(Path(tmp) / "ort_config.json", model_dir / "ort_config.json")


def verify(model, model_dir: Path, length: int) -> float:
    """Max abs diff between ONNX Runtime (model_dir) and PyTorch (model) on SAMPLE_TEXTS."""
    import numpy as np
    import torch

    from compress.encoding import Encoder, OrtModel

    ort_model = OrtModel(model_dir)
    # complete feeds (position ids, empty past) so PyTorch sees the same positions
    feeds = ort_model.feeds(Encoder(model_dir)(SAMPLE_TEXTS, length))
    ort_out = ort_model(feeds).astype(np.float32)
    args = forward_args(model)
    with torch.inference_mode():
        pt_in = {k: torch.from_numpy(v) for k, v in feeds.items()
                 if k in args and k in ("input_ids", "attention_mask", "token_type_ids",
                                        "position_ids")}
        if "use_cache" in args:
            pt_in["use_cache"] = False
        pt = model(**pt_in)
        pt_out = (pt.logits if hasattr(pt, "logits") else pt.last_hidden_state).float().numpy()
    return masked_max(np.abs(pt_out - ort_out), feeds["attention_mask"])


# ---------------------------------------------------------------- optimize (after quantize)

class OptimizeConfig(StageConfig):
    level: Level = Field(description="ORT graph optimisation level (O4 adds fp16, GPU only)")
    atol: float = Field(1e-2, gt=0, description="max abs diff allowed against the input model")


@register
class Optimize(Stage):
    name = "optimize"
    description = "ORT graph optimisation of an ONNX model, e.g. after quantization"
    Config = OptimizeConfig

    def accepts(self, config):
        return {Kind.ONNX, Kind.ONNX_QUANTIZED}

    def produces(self, config, input_kind):
        return input_kind

    def properties(self, config, input_properties):
        return {"graph_optimization": config.level}

    def check(self, config, task):
        return _o4_refusal(config.level)

    def run(self, ctx, source, config, out_dir):
        import numpy as np

        from compress.encoding import Encoder, OrtModel

        for f in ("model.onnx", "model.onnx_data"):
            if (source.path / f).is_file():
                shutil.copy2(source.path / f, out_dir / f)
        copy_side_files(source.path, out_dir)
        ort_optimize(out_dir, config.level)
        feeds = Encoder(out_dir)(SAMPLE_TEXTS, 64)
        before, after = OrtModel(source.path), OrtModel(out_dir)
        ref = before(feeds)
        out = after(feeds).astype(np.float32)
        diff = masked_max(np.abs(ref - out), feeds["attention_mask"])
        if not diff <= config.atol:
            raise StageError(f"optimised model differs from its input by {diff:.2e} "
                             f"(atol {config.atol:g})")
        return {"max_abs_diff_vs_input": diff, "optimize": config.level}
