"""Training checkpoints: what a preempted finetune, distill or prune recovery resumes from.

A build's checkpoints live in the cache under `checkpoints/<key>/`, apart from `tmp/`: the
stale-temp cleanup and `compress cache --prune` leave them alone. Only the commit of the
key's artifact (`Store.commit`) or an explicit `compress cache --prune-checkpoints` removes
them. Layout of one key's area:

  step-00000012/     a complete checkpoint, taken after optimizer step 12:
                     model.safetensors      the model's weights
                     optimizer.safetensors  the optimizer's tensors (AdamW moments, step)
                     best.safetensors       the weights of the best dev epoch so far, if any
                     state.pt               the rest, read with torch.load(weights_only=True):
                                            optimizer param groups, scheduler, the RNG states
                                            (python, numpy, torch, CUDA, the data-order
                                            generator), the position in the data order, the
                                            history and the best epoch's record
                     checkpoint.json        step, total, label, sha256 of every file (last)
  .partial-<id>/     one being written; renamed to step-* once complete and fsynced

A checkpoint is used only if its checkpoint.json is there and every file matches its
digest; anything else (a torn write, a damaged file) is removed and never read. Only the
newest complete checkpoint is kept. The builder holds the key's lock while it trains, so
one writer per area; `prune_checkpoints` takes that lock before removing an area.

Checkpointing never changes the training trajectory (saving reads states, never draws from
a generator), so a run resumed from a checkpoint ends with the same bytes as one that was
never interrupted (on CPU; tests/test_checkpoints.py checks it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from compress.fsutil import fsync_dir, fsync_tree, sha256_file, strict_json

CHECKPOINT_FILE = "checkpoint.json"
DEFAULT_SECONDS = 120.0  # checkpoint_every unset: about every 2 minutes of training


def _read(path: Path) -> dict | None:
    """The manifest of a complete, intact checkpoint dir; None for anything else."""
    import json

    try:
        meta = json.loads((path / CHECKPOINT_FILE).read_text(encoding="utf-8"))
        files = meta["files"]
        present = {str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()}
        if not isinstance(files, dict) or present - {CHECKPOINT_FILE} != set(files):
            return None
        if any(sha256_file(path / name) != digest for name, digest in files.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


class CheckpointArea:
    """One key's checkpoints (`<cache>/checkpoints/<key>/`)."""

    def __init__(self, root: Path, label: str = ""):
        self.root = Path(root)
        self.label = label

    def latest(self) -> tuple[Path, dict] | None:
        """The newest complete checkpoint (dir, manifest); torn or damaged ones and
        unfinished writes are removed on the way (the caller holds the key's lock)."""
        if not self.root.is_dir():
            return None
        for stale in self.root.glob(".partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for path in sorted(self.root.glob("step-*"), reverse=True):
            meta = _read(path)
            if meta is not None:
                return path, meta
            shutil.rmtree(path, ignore_errors=True)
        return None

    def write(self, step: int, total: int, fill: Callable[[Path], None]) -> Path:
        """Write a checkpoint whole or not at all: `fill(dir)` writes the files into a
        partial dir; the manifest with their digests goes last, everything is fsynced,
        then one rename makes it visible. Older checkpoints are removed after that."""
        from compress.fsutil import file_digests

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            fill(tmp)
            meta = {"step": step, "total": total, "label": self.label,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "files": file_digests(tmp)}
            (tmp / CHECKPOINT_FILE).write_text(strict_json(meta) + "\n", encoding="utf-8")
            fsync_tree(tmp)
            final = self.root / f"step-{step:08d}"
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in self.root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final


def list_areas(root: Path) -> list[dict]:
    """Every key's checkpoint area under `root` (<cache>/checkpoints): key, label, step,
    total, created, bytes; step None when it holds no complete checkpoint."""
    out = []
    if not root.is_dir():
        return out
    for area in sorted(p for p in root.iterdir() if p.is_dir()):
        done = sorted(area.glob("step-*"))
        meta = _read(done[-1]) if done else None
        out.append({"key": area.name, "label": (meta or {}).get("label", ""),
                    "step": (meta or {}).get("step"), "total": (meta or {}).get("total"),
                    "created": (meta or {}).get("created"),
                    "bytes": sum(f.stat().st_size for f in area.rglob("*") if f.is_file())})
    return out


# ---------------------------------------------------------------- what a checkpoint holds

def _rng_states(gen) -> dict:
    import random

    import numpy as np
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
              "torch": torch.get_rng_state(), "data_order": gen.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict, gen) -> None:
    import random

    import numpy as np
    import torch

    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    gen.set_state(states["data_order"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training(path: Path, model, opt, sched, gen, progress: dict,
                  best_weights: dict | None) -> None:
    """Write the training state into a (partial) checkpoint dir."""
    import torch
    from safetensors.torch import save_file, save_model

    save_model(model, str(path / "model.safetensors"))
    state = opt.state_dict()
    tensors, other = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().contiguous()
            else:
                other.setdefault(idx, {})[name] = value
    save_file(tensors, str(path / "optimizer.safetensors"))
    if best_weights is not None:
        save_file({k: v.contiguous() for k, v in best_weights.items()},
                  str(path / "best.safetensors"))
    torch.save({"param_groups": state["param_groups"], "optimizer_other": other,
                "scheduler": sched.state_dict(), "rng": _rng_states(gen),
                "progress": progress}, path / "state.pt")


def read_progress(path: Path) -> dict:
    """The loop position a checkpoint dir holds (before anything is restored from it)."""
    import torch

    return torch.load(path / "state.pt", weights_only=True)["progress"]


def load_training(path: Path, model, opt, sched, gen) -> tuple[dict, dict | None]:
    """Restore model, optimizer, scheduler and RNG states from a checkpoint dir; returns
    (progress, best weights or None)."""
    import torch
    from safetensors.torch import load_file, load_model

    device = next(model.parameters()).device
    load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
    state = torch.load(path / "state.pt", weights_only=True)
    opt_state: dict = {}
    for key, value in load_file(str(path / "optimizer.safetensors"),
                                device=str(device)).items():
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = value
    for idx, entry in state["optimizer_other"].items():
        opt_state.setdefault(int(idx), {}).update(entry)
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    sched.load_state_dict(state["scheduler"])
    _set_rng_states(state["rng"], gen)
    best = path / "best.safetensors"
    return state["progress"], (load_file(str(best)) if best.is_file() else None)


# ---------------------------------------------------------------- when to checkpoint

class Checkpointer:
    """A training loop's checkpoint policy: every `every` optimizer steps, or with `every`
    None about every DEFAULT_SECONDS of training; 0 turns checkpoints off. SIGTERM (a spot
    instance's notice) asks for one more at the next step boundary, after which the signal
    is delivered as it would have been (the CLI unwinds; a default handler exits)."""

    def __init__(self, area: CheckpointArea | None, every: int | None,
                 log: Callable[[str], None] = lambda msg: None,
                 seconds: float = DEFAULT_SECONDS):
        self.area = area if every != 0 else None
        self.every, self.seconds, self.log = every, seconds, log
        self.last = time.monotonic()
        self.terminate = False
        self._previous = None

    @contextlib.contextmanager
    def guard(self) -> Iterator[Checkpointer]:
        """While training: SIGTERM sets a flag instead of acting at once (main thread only;
        elsewhere, or with the signal ignored, nothing changes)."""
        if self.area is None or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_IGN, None):
            yield self
            return

        def flag(signum, frame):
            self.terminate = True
        self._previous = previous
        signal.signal(signal.SIGTERM, flag)
        try:
            yield self
        finally:
            if self._previous is not None:  # not delivered yet
                self.deliver(again=self.terminate)

    def due(self, step: int) -> bool:
        if self.area is None:
            return False
        if self.terminate:
            return True
        if self.every is None:
            return time.monotonic() - self.last >= self.seconds
        return step % self.every == 0

    def save(self, step: int, total: int, fill: Callable[[Path], None]) -> None:
        self.area.write(step, total, fill)
        self.last = time.monotonic()
        if self.terminate:
            self.log(f"SIGTERM: checkpoint at step {step} of {total} written; stopping")

    def after_step(self, step: int, total: int, fill: Callable[[Path], None],
                   epoch_end: bool = False) -> None:
        """Called after each optimizer step, and after each epoch's evaluation (where only
        a SIGTERM checkpoints): checkpoint if due, then stop if SIGTERM came."""
        if self.terminate or (not epoch_end and self.due(step)):
            self.save(step, total, fill)
        if self.terminate:
            self.deliver()

    def deliver(self, again: bool = True) -> None:
        """Put the SIGTERM handler back and hand it the SIGTERM that came during
        training."""
        previous, self._previous = self._previous, None
        signal.signal(signal.SIGTERM, previous)
        if again:
            signal.raise_signal(signal.SIGTERM)
