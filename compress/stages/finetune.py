"""finetune: train a task head (or the whole model) on labelled data.

This is what makes the demo teacher: the bundled MiniLM is a sentence encoder with no
classification head. With a dev split it keeps the epoch with the best dev accuracy (a
tie goes to the later epoch; `select: last` keeps the last); test data is never read here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from compress.artifacts import Artifact, Kind
from compress.errors import StageError
from compress.stages.base import Stage, StageConfig, StageContext, register
from compress.stages.common import checkpoint_every_field
from compress.stages.training import train_epochs


class FinetuneConfig(StageConfig):
    epochs: int = Field(1, ge=1, description="passes over the train data")
    max_steps: int | None = Field(None, gt=0, description="stop after this many steps")
    lr: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="tokens per example (truncated)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="linear warm-up share of steps")
    weight_decay: float = Field(0.01, ge=0)
    train: Literal["full", "head"] = Field("full", description="train all weights or the head")
    select: Literal["best", "last"] = Field(
        "best", description="checkpoint kept: best dev epoch (a tie goes to the later "
                            "epoch) or the last epoch")
    checkpoint_every: int | None = checkpoint_every_field()


@register
class Finetune(Stage):
    name = "finetune"
    description = "Fine-tune a task head (or the whole model) on the recipe's train data"
    Config = FinetuneConfig
    trains = True  # a build asks for memory (and a GPU with device: cuda)
    uses_seed = True
    default_baseline = True  # as a recipe's first step: the reference for its candidates

    def accepts(self, config):
        return {Kind.PYTORCH}

    def produces(self, config, input_kind):
        return Kind.PYTORCH

    def data_roles(self, config):
        return {"train": True, "dev": False}

    def check(self, config, task):
        if task != "text-classification":
            return f"finetune supports task text-classification, not {task}"
        return None

    def run(self, ctx: StageContext, source: Artifact, config: FinetuneConfig,
            out_dir: Path) -> dict:
        import torch

        from compress.models import load_pytorch, load_tokenizer
        from compress.quiet import import_transformers

        import_transformers()
        torch.manual_seed(ctx.seed)
        texts, labels = ctx.texts("train"), ctx.labels("train")
        if labels is None:
            raise StageError("finetune needs labels: set data.train.label_column")
        names = sorted(set(labels))
        label2id = {n: i for i, n in enumerate(names)}
        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        model = load_pytorch(source.path, ctx.task, ctx.trust_remote_code, source.revision,
                             num_labels=len(names), id2label=dict(enumerate(names)),
                             label2id=label2id, ignore_mismatched_sizes=True)
        if config.train == "head":
            for p in model.base_model.parameters():
                p.requires_grad_(False)
        y = torch.tensor([label2id[v] for v in labels])
        total = math.ceil(len(texts) / config.batch_size) * config.epochs
        if config.max_steps:
            total = min(total, config.max_steps)
        dev = (ctx.texts("dev"), ctx.labels("dev")) if "dev" in ctx.data else None

        def evaluate():
            if dev is None:
                return None
            return "dev_accuracy", _accuracy(model, tok, dev[0], dev[1], label2id,
                                             config.max_length), True

        result = train_epochs(
            model, tok, texts, lambda batch, idx: model(**batch, labels=y[idx]).loss,
            epochs=config.epochs, total=total, lr=config.lr, weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio, batch_size=config.batch_size,
            max_length=config.max_length, seed=ctx.seed, evaluate=evaluate,
            track=ctx.track, name="finetune", log=ctx.log, select=config.select,
            checkpoints=ctx.checkpoints, checkpoint_every=config.checkpoint_every)
        model.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)
        best = result["best"]
        return {"train_examples": len(texts), "steps": result["steps"],
                "history": result["history"], "best_epoch": result["best_epoch"],
                "selection": result["selection"],
                "dev_accuracy": best[1] if best else None}


def _accuracy(model, tok, texts, labels, label2id, max_length, batch_size=32) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tok(texts[start:start + batch_size], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
            pred = model(**batch).logits.argmax(-1).tolist()
            correct += sum(p == label2id.get(g, -1)
                           for p, g in zip(pred, labels[start:start + batch_size], strict=True))
    return correct / max(len(texts), 1)
