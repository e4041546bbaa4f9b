"""The training loop shared by the stages that train (finetune, distill, prune recovery).

Seeded shuffles, dynamic padding per batch, AdamW with linear warm-up, optional gradient
clipping, evaluation on dev after each epoch, and checkpoint selection: `select: best`
keeps the epoch with the best dev metric, a tie going to the later epoch (it has trained
longer, and an early epoch that merely ties is no better); `select: last` keeps the last.
The kept epoch and the reason are logged and returned. What is trained (the loss) and
what is evaluated are the caller's.
"""

from __future__ import annotations

from collections.abc import Callable


def train_epochs(model, tok, texts: list[str], loss_fn: Callable, *, epochs: int, total: int,
                 lr: float, weight_decay: float, warmup_ratio: float, batch_size: int,
                 max_length: int, seed: int, evaluate: Callable | None = None,
                 clip_norm: float | None = None, advance: Callable = lambda n=1: None,
                 log: Callable | None = None, select: str = "best") -> dict:
    """Train for up to `epochs` epochs and `total` steps.

    `loss_fn(batch, idx)` returns the loss of one padded batch (idx: the example indices);
    `evaluate()` returns (name, value, higher_is_better) or None. The model ends in eval mode
    with the selected epoch's weights (see the module docstring). Returns steps, history,
    best_epoch (the kept epoch), best = (name, value) of the kept epoch or None, and
    selection (why that epoch was kept).
    """
    if select not in ("best", "last"):
        raise ValueError(f"select: expected best or last, got {select!r}")
    import torch

    from compress.quiet import import_transformers

    tf = import_transformers()
    enc = tok(texts, truncation=True, max_length=max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = tf.get_linear_schedule_with_warmup(opt, int(total * warmup_ratio), total)
    gen = torch.Generator().manual_seed(seed)
    history, best, step = [], None, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(texts), generator=gen).tolist()
        losses = []
        for start in range(0, len(order), batch_size):
            if step >= total:
                break
            idx = order[start:start + batch_size]
            batch = tok.pad({k: [enc[k][i] for i in idx] for k in enc}, return_tensors="pt")
            loss = loss_fn(batch, idx)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            step += 1
            advance(1)
        record = {"epoch": epoch + 1, "train_loss": sum(losses) / max(len(losses), 1)}
        result = evaluate() if evaluate is not None else None
        if result is not None:
            name, value, higher = result
            record[name] = value
            score = value if higher else -value
            if select == "best" and (best is None or score >= best[0]):  # tie: the later
                best = (score, epoch + 1, name, value,
                        {k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append(record)
        if log:
            log(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in record.items()
                                                    if k != "epoch"))
        if step >= total:
            break
    if best is not None:
        model.load_state_dict(best[4])
    model.eval()
    kept = best[1] if best else len(history)
    selection = _selection(select, history, best, kept)
    if log:
        log(f"kept epoch {kept} of {len(history)}: {selection}")
    kept_record = history[kept - 1] if history else {}
    metric = best[2] if best else next((k for k in kept_record if k not in ("epoch",
                                                                             "train_loss")),
                                       None)
    return {"steps": step, "history": history, "best_epoch": kept,
            "best": (metric, kept_record[metric]) if metric else None,
            "selection": selection}


def _selection(select: str, history: list[dict], best, kept: int) -> str:
    if select == "last":
        return "select: last (the last epoch, whatever its dev score)"
    if best is None:
        return "no dev data to select on: the last epoch"
    _, epoch, name, value, _ = best
    ties = [r["epoch"] for r in history if r.get(name) == value and r["epoch"] != epoch]
    why = f"best {name} {value:.4f}"
    if ties:
        why += (f", tied with epoch(s) {', '.join(map(str, ties))}: a tie goes to the later "
                "epoch")
    return why
