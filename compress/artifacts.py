"""Artifact kinds: what a stage produces, and so what the next stage may do with it.

Kinds are richer than "PyTorch dir" and "ONNX dir": a PyTorch model quantized with
dynamic int8, torchao or bitsandbytes can be measured but not exported or trained, and a
structurally pruned model needs its own loading path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

META_FILE = "compress-artifact.json"


class Kind(StrEnum):
    PYTORCH = "pytorch"
    PYTORCH_PRUNED = "pytorch-pruned"
    PYTORCH_QUANTIZED = "pytorch-quantized"
    ONNX = "onnx"
    ONNX_QUANTIZED = "onnx-quantized"
    OPENVINO = "openvino"

    @property
    def runtime(self) -> str:
        if self is Kind.OPENVINO:
            return "openvino"
        return "onnxruntime" if self.value.startswith("onnx") else "pytorch"

    @property
    def describe(self) -> str:
        return KIND_DESCRIPTIONS[self]


KIND_DESCRIPTIONS = {
    Kind.PYTORCH: "Hugging Face model dir (safetensors); trainable, exportable, quantizable",
    Kind.PYTORCH_PRUNED: "structurally pruned PyTorch model; reloads through compress's loader",
    Kind.PYTORCH_QUANTIZED: "quantized PyTorch model; measurable, not exportable or trainable",
    Kind.ONNX: "ONNX model (fp32/fp16) with tokenizer and config; ORT-quantizable",
    Kind.ONNX_QUANTIZED: "quantized ONNX model; measurable",
    Kind.OPENVINO: "OpenVINO IR (openvino_model.xml/.bin, fp32 or NNCF-quantized) with "
                   "tokenizer and config; measurable with the openvino runtime",
}

TRAINABLE = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}
EXPORTABLE = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}


@dataclass(frozen=True)
class Artifact:
    """A built model directory in the store (or the input model), with its metadata."""

    key: str
    path: Path
    kind: Kind
    meta: dict

    @classmethod
    def read(cls, path: Path) -> Artifact:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return cls(key=meta["key"], path=path, kind=Kind(meta["kind"]), meta=meta)

    @property
    def properties(self) -> dict:
        """Facts its producing stage declared (e.g. graph_optimization); see
        `Stage.properties`."""
        return self.meta.get("properties") or {}

    @property
    def revision(self) -> str | None:
        """The hub revision to pass to from_pretrained (the model as given, by hub id)."""
        return None if self.path.is_dir() else self.meta.get("revision")

    def size_bytes(self) -> int:
        """Serialized bytes of the model's own files (metadata excluded)."""
        return sum(f.stat().st_size for f in self.path.rglob("*")
                   if f.is_file() and f.name != META_FILE)
