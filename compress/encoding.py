"""Tokenization without torch or transformers, shared by every runner.

Runners for ONNX Runtime must not import torch or transformers (their import alone costs
about 0.5 GB, which would swamp an ONNX model's memory figure). Every runner tokenizes
with the `tokenizers` library from the artifact's tokenizer.json, so all backends see
exactly the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compress.kvsession import KvSession


class Encoder:
    def __init__(self, model_dir: str | Path):
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir}: no tokenizer.json (a fast tokenizer is needed)")
        self.tok = Tokenizer.from_file(str(path))
        self.pad_id = self._pad_id(model_dir)

    def _pad_id(self, model_dir: Path) -> int:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            f = model_dir / name
            if f.is_file():
                pad = json.loads(f.read_text()).get("pad_token")
                if isinstance(pad, dict):
                    pad = pad.get("content")
                if pad and self.tok.token_to_id(pad) is not None:
                    return self.tok.token_to_id(pad)
        return 0

    def __call__(self, texts: list[str], max_length: int, pad_to_max: bool = False
                 ) -> dict[str, np.ndarray]:
        """input_ids / attention_mask / token_type_ids as int64 arrays, padded on the right."""
        self.tok.enable_truncation(max_length)
        if pad_to_max:
            self.tok.enable_padding(pad_id=self.pad_id, length=max_length)
        else:
            self.tok.enable_padding(pad_id=self.pad_id)
        out = self.tok.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in out], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in out], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in out], dtype=np.int64),
        }


    def ids(self, text: str) -> list[int]:
        """Token ids of one whole text: no truncation, no padding (causal-lm scoring)."""
        self.tok.no_truncation()
        self.tok.no_padding()
        return self.tok.encode(text).ids


ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OrtModel(KvSession):
    """An ONNX Runtime session over an artifact's model.onnx, fed only the inputs it has.

    Decoders exported with a KV cache take `past_key_values.*` inputs: when none are given
    they get empty ones (a fresh sequence), and `position_ids` follow the past length
    (`compress.kvsession`).
    """

    def __init__(self, model_dir: str | Path, threads: int | None = None,
                 providers: list[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.requested = providers or ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        usable = [p for p in self.requested if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(Path(model_dir) / "model.onnx"), opts,
                                            providers=usable)
        super().__init__({i.name: (list(i.shape), ORT_DTYPES.get(i.type, np.float32))
                          for i in self.session.get_inputs()},
                         [o.name for o in self.session.get_outputs()])

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses (ORT silently falls back to CPU)."""
        return self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None
            ) -> list[np.ndarray]:
        return self.session.run(names, feeds)
