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
compress.stages.training's. `train_student` is shared with the prune stage's recovery step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from compress.artifacts import Artifact, Kind
from compress.stages.base import Stage, StageConfig, StageContext, register
from compress.stages.training import train_epochs


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
                    raise ValueError(f"student_config: {type(cfg).__name__} has no "
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
            track=ctx.track, log=ctx.log)
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
        raise ValueError(f"labels {unknown[:5]} are not among the teacher's labels "
                         f"({', '.join(label2id)})")
    return [label2id[v] for v in labels]


# ---------------------------------------------------------------- the training loop

@dataclass
class Settings:
    alpha: float = 1.0
    temperature: float = 2.0
    hidden_mse: float = 0.0
    layer_map: list[int] | None = None  # student layer j <- teacher layer layer_map[j]
    embedding_loss: str = "cosine"
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    batch_size: int = 16
    max_length: int = 128

    @classmethod
    def from_config(cls, config, layer_map=None) -> Settings:
        fields = {k: getattr(config, k) for k in cls.__dataclass_fields__ if hasattr(config, k)}
        return cls(**{**fields, "layer_map": layer_map})


def train_student(student, teacher, tok, task: str, texts: list[str], labels: list[int] | None,
                  s: Settings, seed: int, dev=None, track=None, log=None) -> dict:
    """Train `student` against the frozen `teacher`; keep the best dev epoch. Returns
    history, steps and the best epoch's dev metric."""
    import torch

    if task == "text-classification" and labels is None and s.alpha < 1:
        raise ValueError("classification with alpha < 1 needs labels (set "
                         "data.train.label_column) or alpha: 1 (teacher loss only)")
    torch.manual_seed(seed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    y = torch.tensor(labels) if labels is not None else None
    steps_per_epoch = math.ceil(len(texts) / s.batch_size)
    total, epochs = steps_per_epoch * s.epochs, s.epochs
    if s.max_steps:  # as in HF Trainer: max_steps overrides epochs
        total, epochs = s.max_steps, math.ceil(s.max_steps / steps_per_epoch)

    def loss_fn(batch, idx):
        return distill_loss(student, teacher, batch, task, s, y[idx] if y is not None else None)

    def dev_metric():
        return None if dev is None else evaluate(student, teacher, tok, task, dev[0], dev[1],
                                                 s.max_length)

    result = train_epochs(student, tok, texts, loss_fn, epochs=epochs, total=total, lr=s.lr,
                          weight_decay=s.weight_decay, warmup_ratio=s.warmup_ratio,
                          batch_size=s.batch_size, max_length=s.max_length, seed=seed,
                          evaluate=dev_metric, clip_norm=1.0,
                          advance=track("distill", total) if track else (lambda n=1: None),
                          log=log)
    out = {k: result[k] for k in ("steps", "history", "best_epoch")}
    if result["best"] is not None:
        name, value = result["best"]
        out[f"best_{name}"] = value
    return out


def _hidden(student_out, teacher_out, s: Settings):
    """MSE between student layer j's output and its teacher layer's output."""
    import torch

    loss = 0.0
    for j, t in enumerate(s.layer_map or []):
        loss = loss + torch.nn.functional.mse_loss(student_out.hidden_states[j + 1],
                                                   teacher_out.hidden_states[t + 1])
    return loss / max(len(s.layer_map or []), 1)


def distill_loss(student, teacher, batch, task: str, s: Settings, y=None):
    import torch
    import torch.nn.functional as F

    from compress.models import mean_pool

    args = _forward_args(student)
    inputs = {k: v for k, v in batch.items() if k in args}
    want_hidden = s.hidden_mse > 0
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=want_hidden)
    s_out = student(**inputs, output_hidden_states=want_hidden)
    mask = batch["attention_mask"]
    if task == "feature-extraction":
        s_emb = mean_pool(s_out.last_hidden_state, mask)
        t_emb = mean_pool(t_out.last_hidden_state, mask)
        loss = F.mse_loss(s_emb, t_emb) if s.embedding_loss == "mse" else \
            (1 - F.cosine_similarity(s_emb, t_emb, dim=-1)).mean()
    else:
        T = s.temperature
        log_p = F.log_softmax(s_out.logits / T, dim=-1)
        q = F.softmax(t_out.logits / T, dim=-1)
        kl = F.kl_div(log_p, q, reduction="none").sum(-1) * T * T
        if task == "causal-lm":
            m = mask.to(kl.dtype)
            soft = (kl * m).sum() / m.sum().clamp(min=1)
            target = batch["input_ids"][:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            hard = F.cross_entropy(s_out.logits[:, :-1].flatten(0, 1), target.flatten(),
                                   ignore_index=-100) if s.alpha < 1 else 0.0
        else:
            soft = kl.mean()
            hard = F.cross_entropy(s_out.logits, y) if (y is not None and s.alpha < 1) else 0.0
        loss = s.alpha * soft + (1 - s.alpha) * hard
    if want_hidden:
        loss = loss + s.hidden_mse * _hidden(s_out, t_out, s)
    return loss


def evaluate(student, teacher, tok, task, texts, labels, max_length, batch_size=32):
    """(metric name, value, higher is better) on dev: accuracy (or agreement with the
    teacher without labels), causal-lm loss, or embedding cosine to the teacher."""
    import torch
    import torch.nn.functional as F

    from compress.models import mean_pool

    student.eval()
    args = _forward_args(student)
    total, n = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tok(texts[start:start + batch_size], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
            inputs = {k: v for k, v in batch.items() if k in args}
            mask = batch["attention_mask"]
            if task == "causal-lm":
                lm_labels = batch["input_ids"].masked_fill(mask == 0, -100)
                tokens = int((lm_labels[:, 1:] != -100).sum())
                total += student(**inputs, labels=lm_labels).loss.item() * tokens
                n += tokens
                continue
            out = student(**inputs)
            if task == "feature-extraction":
                ref = teacher(**inputs).last_hidden_state
                cos = F.cosine_similarity(mean_pool(out.last_hidden_state, mask),
                                          mean_pool(ref, mask), dim=-1)
                total += cos.sum().item()
            else:
                pred = out.logits.argmax(-1)
                gold = torch.tensor(labels[start:start + batch_size]) if labels is not None \
                    else teacher(**inputs).logits.argmax(-1)
                total += (pred == gold).sum().item()
            n += len(mask)
    value = total / max(n, 1)
    if task == "causal-lm":
        return "dev_loss", value, False
    if task == "feature-extraction":
        return "dev_cosine", value, True
    return ("dev_accuracy" if labels is not None else "dev_agreement"), value, True


def _forward_args(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
