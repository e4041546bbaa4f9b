"""prune: unstructured magnitude pruning, or structured pruning that really shrinks the model.

- `method: magnitude` zeroes the smallest weights of the transformer blocks' Linear layers
  (global or per-layer ranking) to a target sparsity. The weights stay dense, so dense
  inference is NOT faster (the measurements show it); the output is a plain `pytorch` model.
- `method: structured` removes attention heads (by first-order Taylor importance,
  |W * dL/dW| of the attention output projection, on a few batches), FFN neurons (by
  weight, activation or gradient importance) and optionally whole layers. BERT-style
  encoders use their own `prune_heads`; Llama-style decoders have no `_prune_heads`, so
  heads are removed here in whole KV groups, the same number in every layer, which keeps
  config.json describing the attention (and so decoder export with a KV cache working).
  The output is `pytorch-pruned`: compress-load.json records every Linear's shape, and
  `compress.loading` rebuilds the model with them (plain from_pretrained cannot).
- `recovery_steps` > 0 trains the pruned model for a few steps by distillation from the
  unpruned one (no labels needed); magnitude masks stay applied during recovery.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from compress.artifacts import Artifact, Kind
from compress.errors import StageError
from compress.stages.base import Stage, StageConfig, StageContext, register
from compress.stages.common import checkpoint_every_field


class PruneConfig(StageConfig):
    method: Literal["magnitude", "structured"] = Field(
        description="magnitude: zero weights (same shapes); structured: remove heads/neurons/"
                    "layers")
    sparsity: float | None = Field(None, gt=0, lt=1, description="magnitude: share of the "
                                                                 "block weights set to zero")
    scope: Literal["global", "layer"] = Field(
        "global", description="rank weights (magnitude) or FFN neurons (structured) across "
                              "all layers, or within each layer")
    heads: float = Field(0.0, ge=0, lt=1, description="structured: share of attention heads "
                                                      "removed in each layer")
    ffn: float = Field(0.0, ge=0, lt=1, description="structured: share of FFN neurons removed")
    ffn_importance: Literal["weight", "activation", "gradient"] = Field(
        "weight", description="FFN neuron score: weight norms, mean |activation| or Taylor "
                              "|W * grad| on train batches")
    drop_layers: list[int] = Field(default_factory=list, description="structured: whole "
                                                                     "layers removed")
    importance_batches: int = Field(4, ge=1, description="train batches for importance scores")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(128, ge=8)
    recovery_steps: int = Field(0, ge=0, description="distillation steps from the unpruned "
                                                     "model after pruning (0: none)")
    recovery_lr: float = Field(5e-5, gt=0)
    recovery_select: Literal["best", "last"] = Field(
        "best", description="recovery checkpoint kept: best epoch on data.dev (agreement "
                            "with the unpruned model; a tie goes to the later epoch) or the "
                            "last")
    checkpoint_every: int | None = checkpoint_every_field()

    @model_validator(mode="after")
    def _consistent(self):
        structured = self.heads > 0 or self.ffn > 0 or bool(self.drop_layers)
        if self.method == "magnitude":
            if self.sparsity is None:
                raise ValueError("method magnitude needs sparsity (e.g. 0.5)")
            if structured:
                raise ValueError("heads, ffn and drop_layers are for method structured")
        else:
            if self.sparsity is not None:
                raise ValueError("sparsity is for method magnitude; structured pruning takes "
                                 "heads, ffn, drop_layers")
            if not structured:
                raise ValueError("method structured needs heads > 0, ffn > 0 or drop_layers")
        return self

    def needs_data(self) -> bool:
        return self.recovery_steps > 0 or self.heads > 0 or (
            self.ffn > 0 and self.ffn_importance != "weight")


@register
class Prune(Stage):
    name = "prune"
    description = "Magnitude (unstructured) or structured pruning of heads, FFN neurons, layers"
    Config = PruneConfig
    trains = True  # a build asks for memory (and a GPU with device: cuda)
    uses_seed = True

    def accepts(self, config):
        return {Kind.PYTORCH, Kind.PYTORCH_PRUNED}

    def produces(self, config, input_kind):
        return Kind.PYTORCH_PRUNED if config.method == "structured" else input_kind

    def data_roles(self, config):
        if not config.needs_data():
            return {}
        return {"train": True, "dev": False} if config.recovery_steps else {"train": True}

    def run(self, ctx: StageContext, source: Artifact, config: PruneConfig,
            out_dir: Path) -> dict:
        import torch

        from compress.loading import load_for_inference, record_shapes, save_for_inference
        from compress.models import load_tokenizer, weight_inventory

        torch.manual_seed(ctx.seed)
        model = load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                               revision=source.revision)
        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        params_before = _count(model)
        teacher = copy.deepcopy(model) if config.recovery_steps else None
        texts = ctx.texts("train") if "train" in ctx.data else []
        if config.needs_data() and not texts:
            raise StageError("prune needs train texts for importance scores or recovery")
        if config.method == "magnitude":
            checks = magnitude_prune(model, config.sparsity, config.scope)
        else:
            checks = structured_prune(model, tok, ctx, config, texts)
        if teacher is not None:
            from compress.stages.distillation import Settings, train_student

            checks["recovery"] = train_student(
                model, teacher, tok, ctx.task, texts, None,
                Settings(alpha=1.0, lr=config.recovery_lr, max_steps=config.recovery_steps,
                         batch_size=config.batch_size, max_length=config.max_length,
                         select=config.recovery_select,
                         checkpoint_every=config.checkpoint_every),
                ctx.seed, dev=(ctx.texts("dev"), None) if "dev" in ctx.data else None,
                track=ctx.track, log=ctx.log, checkpoints=ctx.checkpoints,
                name="prune recovery")
        if config.method == "magnitude":
            _make_permanent(model)
            checks.update(_sparsity(model))
        model.eval()
        if self.produces(config, source.kind) == Kind.PYTORCH_PRUNED:
            model.config.pruned_heads = {}  # the shapes record, not prune_heads at init
            save_for_inference(model, out_dir, "safetensors", shapes=record_shapes(model))
        else:
            model.save_pretrained(out_dir, safe_serialization=True)
        tok.save_pretrained(out_dir)
        return {**checks, "params_before": params_before, "params_after": _count(model),
                "weights": weight_inventory(model)}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- magnitude

def _block_linears(model):
    """(name, module) of every Linear inside the transformer blocks (not embeddings or
    task heads)."""
    import torch

    from compress.models import find_layers

    parent, attr = find_layers(model)
    return [(f"{i}.{n}", m) for i, layer in enumerate(getattr(parent, attr))
            for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]


def magnitude_prune(model, sparsity: float, scope: str) -> dict:
    import torch.nn.utils.prune as tp

    targets = [(m, "weight") for _, m in _block_linears(model)]
    if scope == "global":
        tp.global_unstructured(targets, pruning_method=tp.L1Unstructured, amount=sparsity)
    else:
        for module, name in targets:
            tp.l1_unstructured(module, name, amount=sparsity)
    return {"target_sparsity": sparsity, "scope": scope, "pruned_modules": len(targets),
            "note": "weights are stored dense: no speed-up for dense inference"}


def _make_permanent(model) -> None:
    import torch.nn.utils.prune as tp

    for _, module in _block_linears(model):
        if tp.is_pruned(module):
            tp.remove(module, "weight")


def _sparsity(model) -> dict:
    linears = _block_linears(model)
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    total = sum(m.weight.numel() for _, m in linears)
    per_layer = {n: round(float((m.weight == 0).float().mean()), 4) for n, m in linears}
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {"sparsity": zeros / total, "sparsity_all_params": all_zeros / _count(model),
            "sparsity_per_module": per_layer}


# ---------------------------------------------------------------- structured

class _Block:
    """Uniform access to one transformer block's attention and FFN projections."""

    def __init__(self, layer, config):
        if hasattr(layer, "attention") and hasattr(layer, "intermediate"):  # BERT family
            self.arch = "bert"
            self.attn = layer.attention.self
            self.o_proj = layer.attention.output.dense
            self.heads = self.attn.num_attention_heads
            self.kv_heads = self.heads
            self.head_dim = self.attn.attention_head_size
            self.ffn_in = [layer.intermediate.dense]
            self.ffn_out = layer.output.dense
        elif hasattr(layer, "self_attn") and hasattr(getattr(layer, "mlp", None), "down_proj"):
            self.arch = "llama"
            self.attn = layer.self_attn
            self.o_proj = layer.self_attn.o_proj
            self.head_dim = getattr(layer.self_attn, "head_dim", None) or \
                config.hidden_size // config.num_attention_heads
            self.heads = layer.self_attn.q_proj.out_features // self.head_dim
            self.kv_heads = layer.self_attn.k_proj.out_features // self.head_dim
            self.ffn_in = [layer.mlp.gate_proj, layer.mlp.up_proj]
            self.ffn_out = layer.mlp.down_proj
        else:
            raise StageError(f"structured pruning supports BERT-style encoders and "
                             f"Llama-style decoders, not {config.model_type} "
                             f"({type(layer).__name__}); use method: magnitude or distill")

    @property
    def ffn_size(self) -> int:
        return self.ffn_out.in_features


def _importance_loss(model, batch, task: str):
    """A loss whose gradient scores heads and neurons: the task loss (pseudo-labels from
    the model itself when unlabelled), or for embeddings the pooled-embedding norm."""
    import torch.nn.functional as F

    from compress.models import mean_pool

    out = model(**batch)
    if task == "causal-lm":
        labels = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0,
                                                       -100)
        return F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels.flatten(),
                               ignore_index=-100)
    if task == "feature-extraction":
        return mean_pool(out.last_hidden_state, batch["attention_mask"]).pow(2).sum(-1).mean()
    return F.cross_entropy(out.logits, out.logits.argmax(-1).detach())


def _scores(model, blocks, tok, task, texts, config):
    """Per block: head importance (Taylor on o_proj columns) and FFN neuron importance."""
    import inspect

    import torch

    need_grad = config.heads > 0 or (config.ffn > 0 and config.ffn_importance == "gradient")
    need_act = config.ffn > 0 and config.ffn_importance == "activation"
    head_cols = [torch.zeros(b.o_proj.in_features) for b in blocks]
    ffn_cols = [torch.zeros(b.ffn_size) for b in blocks]
    ffn_act = [torch.zeros(b.ffn_size) for b in blocks]
    hooks = []
    if need_act:
        for i, b in enumerate(blocks):
            hooks.append(b.ffn_out.register_forward_pre_hook(
                lambda mod, inp, i=i: ffn_act[i].add_(
                    inp[0].detach().abs().flatten(0, -2).mean(0))))
    args = set(inspect.signature(model.forward).parameters)
    batches = 0
    if need_grad or need_act:
        model.eval()  # no dropout: scores depend on the data only
        for start in range(0, len(texts), config.batch_size):
            if batches >= config.importance_batches:
                break
            enc = tok(texts[start:start + config.batch_size], truncation=True, padding=True,
                      max_length=config.max_length, return_tensors="pt")
            batch = {k: v for k, v in enc.items() if k in args}
            with torch.set_grad_enabled(need_grad):
                loss = _importance_loss(model, batch, task)
                if need_grad:
                    loss.backward()
                    for i, b in enumerate(blocks):
                        head_cols[i] += (b.o_proj.weight * b.o_proj.weight.grad).abs().sum(0)
                        ffn_cols[i] += (b.ffn_out.weight * b.ffn_out.weight.grad).abs().sum(0)
                    model.zero_grad()
            batches += 1
    for h in hooks:
        h.remove()
    heads = [c.view(b.heads, b.head_dim).sum(-1) for c, b in zip(head_cols, blocks,
                                                                  strict=True)]
    if config.ffn_importance == "weight":
        ffn = []
        for b in blocks:
            rows = sum(m.weight.detach().pow(2).sum(1) for m in b.ffn_in)
            ffn.append(rows.sqrt() * b.ffn_out.weight.detach().pow(2).sum(0).sqrt())
    else:
        ffn = ffn_act if need_act else ffn_cols
    return heads, ffn, batches


def structured_prune(model, tok, ctx: StageContext, config: PruneConfig, texts) -> dict:
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    from compress.models import find_layers, keep_layers

    parent, attr = find_layers(model)
    n_layers = len(getattr(parent, attr))
    checks: dict = {"layers_before": n_layers}
    if config.drop_layers:
        keep = [i for i in range(n_layers) if i not in set(config.drop_layers)]
        bad = [i for i in config.drop_layers if not 0 <= i < n_layers]
        if bad or not keep:
            raise StageError(f"drop_layers {config.drop_layers}: the model has layers "
                             f"0..{n_layers - 1} and must keep at least one")
        keep_layers(model, keep)
    layers = list(getattr(*find_layers(model)))
    blocks = [_Block(layer, model.config) for layer in layers]
    head_scores, ffn_scores, batches = _scores(model, blocks, tok, ctx.task, texts, config)
    checks["importance_batches"] = batches

    # attention heads: the same number per layer, lowest importance first
    removed_heads = {}
    if config.heads > 0:
        b0 = blocks[0]
        if b0.arch == "llama":
            group = b0.heads // b0.kv_heads
            n_remove = min(int(config.heads * b0.kv_heads), b0.kv_heads - 1)
            for i, b in enumerate(blocks):
                scores = head_scores[i].view(b.kv_heads, group).sum(-1)
                drop = sorted(scores.argsort()[:n_remove].tolist())
                removed_heads[i] = drop
                if drop:
                    _prune_llama_groups(b, drop, group, prune_linear_layer)
            if n_remove:
                model.config.num_key_value_heads = b0.kv_heads - n_remove
                model.config.num_attention_heads = (b0.kv_heads - n_remove) * group
                model.config.head_dim = b0.head_dim
        else:
            n_remove = min(int(config.heads * b0.heads), b0.heads - 1)
            for i in range(len(blocks)):
                removed_heads[i] = sorted(head_scores[i].argsort()[:n_remove].tolist())
            model.prune_heads({i: h for i, h in removed_heads.items() if h})
        checks["heads_removed_per_layer"] = n_remove
        checks["heads_removed"] = {str(k): v for k, v in removed_heads.items()}

    # FFN neurons: per layer, or ranked across layers (at least one neuron kept per layer)
    if config.ffn > 0:
        sizes = [b.ffn_size for b in blocks]
        if config.scope == "layer":
            n_drop = [min(int(config.ffn * n), n - 1) for n in sizes]
            drops = [s.argsort()[:k] for s, k in zip(ffn_scores, n_drop, strict=True)]
        else:
            flat = torch.cat(ffn_scores)
            n_total = min(int(config.ffn * flat.numel()), flat.numel() - len(sizes))
            threshold_idx = flat.argsort()[:n_total]
            owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            offsets = [sum(sizes[:i]) for i in range(len(sizes))]
            drops = []
            for i, n in enumerate(sizes):
                mine = threshold_idx[owner[threshold_idx] == i] - offsets[i]
                if len(mine) >= n:  # keep this layer's best neuron
                    mine = mine[mine != ffn_scores[i].argmax()]
                drops.append(mine)
        for b, drop in zip(blocks, drops, strict=True):
            keep = torch.tensor(sorted(set(range(b.ffn_size)) - set(drop.tolist())),
                                dtype=torch.long)
            for m in b.ffn_in:
                _replace(m, prune_linear_layer(m, keep, dim=0), model)
            _replace(b.ffn_out, prune_linear_layer(b.ffn_out, keep, dim=1), model)
        checks["ffn_sizes"] = [b.ffn_out.in_features for b in
                               (_Block(layer, model.config) for layer in layers)]
        checks["ffn_importance"] = config.ffn_importance
    checks["layers_after"] = len(layers)
    return checks


def _replace(old, new, model) -> None:
    """Swap module `old` for `new` wherever it sits in `model`."""
    for name, module in model.named_modules():
        if module is old:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
            return
    raise StageError("module to replace not found")


def _prune_llama_groups(block: _Block, drop: list[int], group: int, prune_linear_layer):
    """Remove whole KV groups (one KV head and its query heads) from a Llama attention."""
    import torch

    d = block.head_dim
    keep_kv = [g for g in range(block.kv_heads) if g not in set(drop)]
    q_idx = torch.tensor([g * group * d + j for g in keep_kv for j in range(group * d)])
    kv_idx = torch.tensor([g * d + j for g in keep_kv for j in range(d)])
    attn = block.attn
    attn.q_proj = prune_linear_layer(attn.q_proj, q_idx, dim=0)
    attn.k_proj = prune_linear_layer(attn.k_proj, kv_idx, dim=0)
    attn.v_proj = prune_linear_layer(attn.v_proj, kv_idx, dim=0)
    attn.o_proj = prune_linear_layer(attn.o_proj, q_idx, dim=1)
    block.o_proj = attn.o_proj
    for a in ("num_heads", "num_key_value_heads"):  # where a transformers version keeps them
        if isinstance(getattr(attn, a, None), int):
            setattr(attn, a, (len(keep_kv) * group) if a == "num_heads" else len(keep_kv))
