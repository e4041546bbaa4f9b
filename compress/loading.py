"""Load any PyTorch-kind artifact for inference, whatever its kind.

Each artifact kind has one loading path: plain Hugging Face dirs through `from_pretrained`;
structurally pruned and quantized models through what their `compress-load.json` records.
Runners and stages call `load_for_inference` and never need to know how a kind was saved.

`compress-load.json` holds:
- `format`: how the weights are stored: `safetensors` (model.safetensors), `torch-state-dict`
  (quantized.pt, read with `torch.load(weights_only=True)`: the one exception to
  safetensors, for quantize_dynamic and torchao modules that safetensors cannot hold), or
  `hf` (a dir that `from_pretrained` loads itself, e.g. bitsandbytes).
- `shapes`: for structurally pruned models, every Linear's (in, out, bias) and the module
  attributes (head counts) that differ from what config.json describes.
- `transform`: the quantization or cast to re-apply to the rebuilt module before loading.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from compress.artifacts import META_FILE, Kind

LOAD_FILE = "compress-load.json"
STATE_FILE = "quantized.pt"
WEIGHTS_FILE = "model.safetensors"


def artifact_kind(path: str | Path) -> Kind:
    """The kind recorded in an artifact's metadata; a plain model dir is `pytorch`."""
    meta = Path(path) / META_FILE
    return Kind(json.loads(meta.read_text())["kind"]) if meta.is_file() else Kind.PYTORCH


def read_load_info(path: str | Path) -> dict | None:
    f = Path(path) / LOAD_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def write_load_info(out_dir: str | Path, info: dict) -> None:
    (Path(out_dir) / LOAD_FILE).write_text(json.dumps(info, indent=1, sort_keys=True),
                                           encoding="utf-8")


def load_for_inference(path: str | Path, task: str, trust_remote_code: bool = False,
                       revision: str | None = None):
    """A torch.nn.Module in eval mode for a PyTorch-kind artifact (or a plain model dir, or
    a hub id at `revision`)."""
    from compress.models import load_pytorch

    info = read_load_info(path)
    if info is None:
        kind = artifact_kind(path)
        if kind != Kind.PYTORCH:
            raise ValueError(f"{path}: a {kind.value} artifact needs {LOAD_FILE}, which is "
                             "missing")
        return load_pytorch(path, task, trust_remote_code, revision)
    if info["format"] == "hf":
        from compress.quiet import quiet_fds

        with quiet_fds():  # bitsandbytes prints kernel-loading lines
            return load_pytorch(path, task, trust_remote_code, **info.get("load_kwargs", {}))
    model = build_model(path, task, info.get("shapes"), trust_remote_code)
    if info.get("transform"):
        from compress.transforms import apply_transform

        model = apply_transform(model, info["transform"])
    load_weights(model, Path(path), info["format"])
    return model.eval()


def build_model(path: str | Path, task: str, shapes: dict | None = None,
                trust_remote_code: bool = False):
    """The architecture described by config.json plus the recorded pruned shapes, with
    uninitialised weights (they are loaded next)."""
    import torch

    from compress.models import auto_class
    from compress.quiet import import_transformers

    tf = import_transformers()
    config = tf.AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    with _no_init():
        model = auto_class(task).from_config(config, trust_remote_code=trust_remote_code)
    for name, (n_in, n_out, bias) in (shapes or {}).get("linears", {}).items():
        old = model.get_submodule(name)
        if (old.in_features, old.out_features, old.bias is not None) != (n_in, n_out, bias):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr,
                    torch.nn.Linear(n_in, n_out, bias=bias))
    for name, attrs in (shapes or {}).get("attributes", {}).items():
        module = model.get_submodule(name)
        for attr, value in attrs.items():
            setattr(module, attr, value)
    return model.eval()


def _no_init():
    try:
        from transformers.modeling_utils import no_init_weights

        return no_init_weights()
    except ImportError:  # moved in transformers 5; random init is only slower
        return contextlib.nullcontext()


def load_weights(model, path: Path, fmt: str) -> None:
    """Load saved weights onto a rebuilt module; every weight must be found (tied ones
    excepted, re-tied afterwards)."""
    import torch

    if fmt == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path / WEIGHTS_FILE))
        missing, unexpected = model.load_state_dict(state, strict=False)
    elif fmt == "torch-state-dict":
        state = torch.load(path / STATE_FILE, weights_only=True, map_location="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    else:
        raise ValueError(f"{path}: unknown weights format {fmt!r} in {LOAD_FILE}")
    tied = _tied_keys(model)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the rebuilt model: missing "
                         f"{missing[:5]}, unexpected {list(unexpected)[:5]}")
    # re-tie only a float output layer: a quantized lm_head carries its own packed copy
    if tied and type(model.get_output_embeddings()) is torch.nn.Linear:
        model.tie_weights()


def _tied_keys(model) -> set[str]:
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    keys = getattr(model, "_tied_weights_keys", None) or []
    return set(keys if not isinstance(keys, dict) else keys.keys())


def save_for_inference(model, out_dir: str | Path, fmt: str, shapes: dict | None = None,
                       transform: dict | None = None, load_kwargs: dict | None = None) -> None:
    """Write a model so that `load_for_inference` rebuilds it: config.json, the weights in
    `fmt`, and compress-load.json."""
    import torch

    out_dir = Path(out_dir)
    if fmt == "hf":
        model.save_pretrained(out_dir, safe_serialization=True)
    else:
        model.config.save_pretrained(out_dir)
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(out_dir)
        if fmt == "safetensors":
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            for k in _tied_keys(model):
                state.pop(k, None)
            save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
        elif fmt == "torch-state-dict":
            torch.save(model.state_dict(), out_dir / STATE_FILE)
        else:
            raise ValueError(f"unknown weights format {fmt!r}")
    info = {"format": fmt}
    if shapes:
        info["shapes"] = shapes
    if transform:
        info["transform"] = transform
    if load_kwargs:
        info["load_kwargs"] = load_kwargs
    write_load_info(out_dir, info)


def record_shapes(model) -> dict:
    """Every Linear's (in, out, bias) and the attention modules' head attributes: enough to
    rebuild a structurally pruned model from its (unpruned-looking) config."""
    import torch

    linears, attributes = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linears[name] = [module.in_features, module.out_features, module.bias is not None]
        attrs = {a: getattr(module, a) for a in ("num_attention_heads", "all_head_size",
                                                 "num_heads", "num_key_value_heads",
                                                 "num_key_value_groups")
                 if isinstance(getattr(module, a, None), int) and name}
        if attrs:
            attributes[name] = attrs
    return {"linears": linears, "attributes": attributes}
