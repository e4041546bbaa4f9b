"""distill: build a smaller student and train it against the teacher.

The student is the teacher with only some transformer layers kept (`keep_layers` or
`every_k`, initialised from the teacher's weights, as DistilBERT does), or a fresh model
from the teacher's config with overrides (`student_config`). Losses, by task:
- text-classification, causal-lm: temperature-scaled KL on logits, mixed with the hard
  loss by `alpha` (labels for classification; the text itself for causal-lm);
- feature-extraction: MSE or cosine loss to the teacher's mean-pooled embeddings, on
  unlabelled text;
- optionally hidden-state MSE on mapped layers.
With a dev split it evaluates each epoch (classification accuracy, causal-lm loss,
embedding cosine to the teacher) and keeps the best epoch; the loop itself is
compress.stages.training's, the losses compress.stages.distillation's (shared with the prune
stage's recovery step).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from compress.artifacts import Artifact, Kind
from compress.errors import StageError
from compress.stages.base import Stage, StageConfig, StageContext, register
from compress.stages.common import checkpoint_every_field
from compress.stages.distillation import Settings, train_student


class DistillConfig(StageConfig):
    keep_layers: list[int] | None = Field(
        None, min_length=1, description="teacher layers the student keeps, e.g. [0, 2, 4]")
    every_k: int | None = Field(None, ge=2, description="keep layers 0, k, 2k, ...")
    student_config: dict[str, Any] | None = Field(
        None, description="a fresh student: the teacher's config with these overrides, "
                          "e.g. {num_hidden_layers: 2, intermediate_size: 512}")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft (teacher) loss; "
                                                      "1 - alpha goes to the hard loss")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of the KL loss")
    hidden_mse: float = Field(0.0, ge=0, description="weight of hidden-state MSE on mapped "
                                                     "layers (0: off)")
    embedding_loss: Literal["cosine", "mse"] = Field(
        "cosine", description="feature-extraction: loss to the teacher's pooled embeddings")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, gt=0, description="train this many steps (overrides "
                                                          "epochs)")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8)
    select: Literal["best", "last"] = Field(
        "best", description="checkpoint kept: best dev epoch (a tie goes to the later "
                            "epoch) or the last epoch")
    checkpoint_every: int | None = checkpoint_every_field()

    @model_validator(mode="after")
    def _one_student(self):
        given = [n for n in ("keep_layers", "every_k", "student_config")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of keep_layers, every_k, student_config "
                             f"(got {', '.join(given) or 'none'})")
        if self.keep_layers is not None and (
                sorted(set(self.keep_layers)) != self.keep_layers or min(self.keep_layers) < 0):
            raise ValueError(f"keep_layers {self.keep_layers}: expected distinct layer indices "
                             "in increasing order, from 0")
        if self.hidden_mse and self.student_config and "hidden_size" in self.student_config:
            raise ValueError("hidden_mse needs the student's hidden_size to equal the "
                             "teacher's; drop hidden_size from student_config or set "
                             "hidden_mse: 0")
        return self


@register
class Distill(Stage):
    name = "distill"
    description = "Distil the model into a student with fewer layers (or a smaller config)"
    Config = DistillConfig
    trains = True  # a build asks for memory (and a GPU with device: cuda)
    uses_seed = True

    def accepts(self, config):
        return {Kind.PYTORCH, Kind.PYTORCH_PRUNED}

    def produces(self, config, input_kind):
        # a student cut from a pruned teacher keeps its pruned shapes
        return Kind.PYTORCH if config.student_config is not None else input_kind

    def data_roles(self, config):
        return {"train": True, "dev": False}

    def run(self, ctx: StageContext, source: Artifact, config: DistillConfig,
            out_dir: Path) -> dict:
        import torch

        from compress.loading import load_for_inference, record_shapes, save_for_inference
        from compress.models import auto_class, keep_layers, load_tokenizer, weight_inventory

        torch.manual_seed(ctx.seed)
        teacher = load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                               revision=source.revision)
        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        n_teacher = teacher.config.num_hidden_layers
        if config.student_config is not None:
            cfg = copy.deepcopy(teacher.config)
            for k, v in config.student_config.items():
                if not hasattr(cfg, k):
                    raise StageError(f"student_config: {type(cfg).__name__} has no "
                                     f"setting {k!r}")
                setattr(cfg, k, v)
            student = auto_class(ctx.task).from_config(cfg)
            n_student = cfg.num_hidden_layers
            layer_map = [round((j + 1) * n_teacher / n_student) - 1 for j in range(n_student)]
        else:
            keep = config.keep_layers or list(range(0, n_teacher, config.every_k))
            student = copy.deepcopy(teacher)
            keep_layers(student, keep)
            layer_map = keep
        labels = _label_ids(teacher, ctx.labels("train"), ctx.task)
        dev = None
        if "dev" in ctx.data:
            dev = (ctx.texts("dev"), _label_ids(teacher, ctx.labels("dev"), ctx.task))
        result = train_student(
            student, teacher, tok, ctx.task, ctx.texts("train"), labels,
            Settings.from_config(config, layer_map), ctx.seed, dev=dev,
            track=ctx.track, log=ctx.log, checkpoints=ctx.checkpoints)
        student.eval()
        if source.kind == Kind.PYTORCH_PRUNED and config.student_config is None:
            save_for_inference(student, out_dir, "safetensors", shapes=record_shapes(student))
        else:
            student.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)
        return {**result, "teacher_layers": n_teacher,
                "student_layers": student.config.num_hidden_layers, "layer_map": layer_map,
                "teacher_params": sum(p.numel() for p in teacher.parameters()),
                "student_params": sum(p.numel() for p in student.parameters()),
                "train_examples": len(ctx.texts("train")),
                "weights": weight_inventory(student)}


def _label_ids(teacher, labels: list[str] | None, task: str):
    """Class ids of string labels through the teacher's label2id (classification only)."""
    if task != "text-classification" or labels is None:
        return None
    label2id = {str(k): v for k, v in (teacher.config.label2id or {}).items()}
    unknown = sorted(set(labels) - set(label2id))
    if unknown:
        raise StageError(f"labels {unknown[:5]} are not among the teacher's labels "
                         f"({', '.join(label2id)})")
    return [label2id[v] for v in labels]
