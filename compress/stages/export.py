"""export: ONNX through optimum, verified against PyTorch with ONNX Runtime.

`onnx_export_from_model` runs on the loaded model (not `main_export(path)`), so models whose
config does not describe their shapes (structurally pruned ones) export too. Every export is
checked: ONNX Runtime's outputs against PyTorch's on sample inputs; the max abs diff goes
into the artifact's metadata and the stage fails above `atol`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compress.artifacts import EXPORTABLE, Artifact, Kind
from compress.stages.base import Stage, StageConfig, StageContext, register

OPTIMUM_TASKS = {
    "text-classification": "text-classification",
    "feature-extraction": "feature-extraction",
    "causal-lm": "text-generation-with-past",
}

SAMPLE_TEXTS = [
    "The central bank raised interest rates by a quarter point on Thursday.",
    "A late goal gave the home side a deserved win in the cup final.",
    "The new phone has a faster chip, a brighter screen and a longer battery life.",
    "Ministers will publish the bill next week after months of debate.",
]


class ExportConfig(StageConfig):
    opset: int | None = Field(None, ge=11, le=23, description="ONNX opset; optimum's default "
                                                               "for the architecture if null")
    atol: float = Field(1e-3, gt=0, description="max abs diff allowed between ONNX Runtime "
                                                "and PyTorch outputs")
    check_length: int = Field(64, ge=8, description="tokens per sample input for the check")


@register
class Export(Stage):
    name = "export"
    description = "Export to ONNX (optimum) and verify ONNX Runtime against PyTorch"
    Config = ExportConfig

    def accepts(self, config):
        return set(EXPORTABLE)

    def produces(self, config, input_kind):
        return Kind.ONNX

    def run(self, ctx: StageContext, source: Artifact, config: ExportConfig,
            out_dir: Path) -> dict:
        import numpy as np
        import torch

        from compress.encoding import Encoder, OrtModel
        from compress.models import load_pytorch, load_tokenizer
        from compress.quiet import import_transformers, quiet_fds

        import_transformers()
        with quiet_fds():
            from optimum.exporters.onnx import onnx_export_from_model
        model = load_pytorch(source.path, ctx.task, ctx.trust_remote_code)
        tok = load_tokenizer(source.path, ctx.trust_remote_code)
        advance = ctx.track("export", 2)
        with quiet_fds():
            onnx_export_from_model(model, output=out_dir, task=OPTIMUM_TASKS[ctx.task],
                                   opset=config.opset, do_validation=False)
        tok.save_pretrained(out_dir)
        advance(1)

        feeds = Encoder(out_dir)(SAMPLE_TEXTS, config.check_length)
        ort_out = OrtModel(out_dir)(feeds)
        with torch.inference_mode():
            pt_in = {k: torch.from_numpy(v) for k, v in feeds.items()
                     if k in _forward_args(model)}
            pt = model(**pt_in)
            pt_out = (pt.logits if hasattr(pt, "logits") else pt.last_hidden_state).numpy()
        diff = float(np.max(np.abs(pt_out - ort_out)))
        advance(1)
        if not diff <= config.atol:
            raise ValueError(f"ONNX Runtime output differs from PyTorch by {diff:.2e} "
                             f"(atol {config.atol:g})")
        return {"max_abs_diff": diff, "atol": config.atol, "check_inputs": len(SAMPLE_TEXTS)}


def _forward_args(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
