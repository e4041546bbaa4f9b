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

from compress.checkpoints import CheckpointArea, Checkpointer, save_training


def train_epochs(model, tok, texts: list[str], loss_fn: Callable, *, epochs: int, total: int,
                 lr: float, weight_decay: float, warmup_ratio: float, batch_size: int,
                 max_length: int, seed: int, evaluate: Callable | None = None,
                 clip_norm: float | None = None, track: Callable | None = None,
                 name: str = "train", log: Callable | None = None, select: str = "best",
                 checkpoints: CheckpointArea | None = None,
                 checkpoint_every: int | None = None) -> dict:
    """Train for up to `epochs` epochs and `total` steps.

    `loss_fn(batch, idx)` returns the loss of one padded batch (idx: the example indices);
    `evaluate()` returns (name, value, higher_is_better) or None. The model ends in eval mode
    with the selected epoch's weights (see the module docstring). Returns steps, history,
    best_epoch (the kept epoch), best = (name, value) of the kept epoch or None, and
    selection (why that epoch was kept). `track(description, total)` makes the progress
    callback. With `checkpoints` (the build's checkpoint area) it checkpoints every
    `checkpoint_every` steps (None: about every 2 minutes; 0: never) and resumes from the
    area's newest checkpoint (compress.checkpoints).
    """
    if select not in ("best", "last"):
        raise ValueError(f"select: expected best or last, got {select!r}")
    import torch

    from compress.quiet import import_transformers

    tf = import_transformers()
    log = log or (lambda msg: None)
    enc = tok(texts, truncation=True, max_length=max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = tf.get_linear_schedule_with_warmup(opt, int(total * warmup_ratio), total)
    gen = torch.Generator().manual_seed(seed)
    # where the loop stands: what a checkpoint holds besides model, optimizer, scheduler, RNG
    shape = {"examples": len(texts), "epochs": epochs, "total": total,
             "batch_size": batch_size}
    st = {"shape": shape, "step": 0, "epoch": 0, "pos": 0, "order": None, "losses": [],
          "history": [], "best": None}  # best: (score, epoch, metric, value)
    best_weights = None
    ckpt = Checkpointer(checkpoints, checkpoint_every, log)
    resumed = _resume(ckpt, model, opt, sched, gen, shape, log)
    if resumed is not None:
        st, best_weights = resumed
        log(f"{name}: resumed at step {st['step']} of {total} from its checkpoint")
    description = name if resumed is None else \
        f"{name} (resumed at step {st['step']} of {total})"
    advance = track(description, total) if track else (lambda n=1: None)
    if st["step"]:
        advance(st["step"])

    def fill(path):
        save_training(path, model, opt, sched, gen, st, best_weights)

    with ckpt.guard():
        while st["epoch"] < epochs and st["step"] < total:
            if st["order"] is None:
                st["order"] = torch.randperm(len(texts), generator=gen).tolist()
                st["losses"], st["pos"] = [], 0
            model.train()
            order = st["order"]
            while st["pos"] < len(order) and st["step"] < total:
                idx = order[st["pos"]:st["pos"] + batch_size]
                batch = tok.pad({k: [enc[k][i] for i in idx] for k in enc}, return_tensors="pt")
                loss = loss_fn(batch, idx)
                loss.backward()
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_norm)
                opt.step()
                sched.step()
                opt.zero_grad()
                st["losses"].append(loss.item())
                st["pos"] += batch_size
                st["step"] += 1
                advance(1)
                if st["step"] < total:  # the last step's state goes into the artifact
                    ckpt.after_step(st["step"], total, fill)
            epoch = st["epoch"]
            record = {"epoch": epoch + 1,
                      "train_loss": sum(st["losses"]) / max(len(st["losses"]), 1)}
            result = evaluate() if evaluate is not None else None
            if result is not None:
                metric, value, higher = result
                record[metric] = value
                score = value if higher else -value
                if select == "best" and (st["best"] is None or score >= st["best"][0]):
                    st["best"] = (score, epoch + 1, metric, value)  # a tie: the later
                    best_weights = {k: v.detach().clone()
                                    for k, v in model.state_dict().items()}
            st["history"].append(record)
            log(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in record.items()
                                                   if k != "epoch"))
            st.update(epoch=epoch + 1, order=None, pos=0, losses=[])
            if st["step"] < total:
                ckpt.after_step(st["step"], total, fill, epoch_end=True)
    history, best = st["history"], st["best"]
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    kept = best[1] if best else len(history)
    selection = _selection(select, history, best, kept)
    log(f"kept epoch {kept} of {len(history)}: {selection}")
    kept_record = history[kept - 1] if history else {}
    metric = best[2] if best else next((k for k in kept_record if k not in ("epoch",
                                                                             "train_loss")),
                                       None)
    return {"steps": st["step"], "history": history, "best_epoch": kept,
            "best": (metric, kept_record[metric]) if metric else None,
            "selection": selection}


def _resume(ckpt: Checkpointer, model, opt, sched, gen, shape: dict, log):
    """(loop state, best weights) from the newest checkpoint, or None. A checkpoint of a
    differently shaped loop (another data size or step count) is not used."""
    if ckpt.area is None:
        return None
    found = ckpt.area.latest()
    if found is None:
        return None
    path, _ = found
    from compress.checkpoints import load_training, read_progress

    if read_progress(path).get("shape") != shape:
        log(f"checkpoint {path.name} is of another training loop; starting afresh")
        return None
    st, best_weights = load_training(path, model, opt, sched, gen)
    if st["best"] is not None:
        st["best"] = tuple(st["best"])
    return st, best_weights


def _selection(select: str, history: list[dict], best, kept: int) -> str:
    if select == "last":
        return "select: last (the last epoch, whatever its dev score)"
    if best is None:
        return "no dev data to select on: the last epoch"
    _, epoch, name, value = best
    ties = [r["epoch"] for r in history if r.get(name) == value and r["epoch"] != epoch]
    why = f"best {name} {value:.4f}"
    if ties:
        why += (f", tied with epoch(s) {', '.join(map(str, ties))}: a tie goes to the later "
                "epoch")
    return why
