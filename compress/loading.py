"""Load any PyTorch-kind artifact for inference, whatever its kind.

Each artifact kind has one loading path: plain Hugging Face dirs through `from_pretrained`;
structurally pruned and quantized models through what their metadata records. Runners and
stages call `load_for_inference` and never need to know how a kind was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.artifacts import META_FILE, Kind


def artifact_kind(path: str | Path) -> Kind:
    """The kind recorded in an artifact's metadata; a plain model dir is `pytorch`."""
    meta = Path(path) / META_FILE
    return Kind(json.loads(meta.read_text())["kind"]) if meta.is_file() else Kind.PYTORCH


def load_for_inference(path: str | Path, task: str, trust_remote_code: bool = False):
    """A torch.nn.Module in eval mode for a PyTorch-kind artifact (or a plain model dir)."""
    from compress.models import load_pytorch

    kind = artifact_kind(path)
    if kind == Kind.PYTORCH:
        return load_pytorch(path, task, trust_remote_code)
    raise NotImplementedError(f"{path}: no loader for artifact kind {kind.value!r} yet")
