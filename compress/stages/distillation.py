"""Knowledge distillation: a student trained against a frozen teacher, shared by the
distill stage and the prune stage's recovery step.

Losses, by task: temperature-scaled KL on logits mixed with the hard loss by `alpha`
(text-classification, causal-lm); MSE or cosine to the teacher's mean-pooled embeddings
(feature-extraction); optionally hidden-state MSE on mapped layers. The loop is
compress.stages.training's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compress.errors import StageError
from compress.stages.training import train_epochs
from compress.torchutil import forward_args


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
    select: str = "best"
    checkpoint_every: int | None = None

    @classmethod
    def from_config(cls, config, layer_map=None) -> Settings:
        fields = {k: getattr(config, k) for k in cls.__dataclass_fields__ if hasattr(config, k)}
        return cls(**{**fields, "layer_map": layer_map})


def train_student(student, teacher, tok, task: str, texts: list[str], labels: list[int] | None,
                  s: Settings, seed: int, dev=None, track=None, log=None, checkpoints=None,
                  name: str = "distill") -> dict:
    """Train `student` against the frozen `teacher`; keep the best dev epoch. Returns
    history, steps and the best epoch's dev metric. With `checkpoints` (the build's
    checkpoint area) it checkpoints and resumes (see compress.stages.training)."""
    import torch

    if task == "text-classification" and labels is None and s.alpha < 1:
        raise StageError("classification with alpha < 1 needs labels (set "
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
                          track=track, name=name, log=log, select=s.select,
                          checkpoints=checkpoints, checkpoint_every=s.checkpoint_every)
    out = {k: result[k] for k in ("steps", "history", "best_epoch", "selection")}
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

    args = forward_args(student)
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
    args = forward_args(student)
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
