"""Feeding a decoder exported with a KV cache, whatever runtime runs it.

A causal-LM export takes `past_key_values.*` inputs (and often `position_ids`) besides the
tokenizer's feeds, and returns `present.*` outputs, the next call's past. How to complete
the feeds (an empty past for a fresh sequence, positions counted along the attention mask)
and how to hand the cache from one call to the next is the same for ONNX Runtime and
OpenVINO: it lives here once. A runtime subclasses `KvSession`, describes its inputs and
outputs, and implements `run`; `KvRunner` (prefill and decode for the measurement runners)
drives any of them.
"""

from __future__ import annotations

import numpy as np


def is_past(name: str) -> bool:
    return name.startswith(("past_key_values", "past."))


class KvSession:
    """A model session described by its inputs {name: (shape, numpy dtype)}, where a
    dynamic dimension is None, and its output names in order. Subclasses implement
    `run(feeds, names)`: the arrays of the named outputs (all of them when None)."""

    def __init__(self, inputs: dict[str, tuple[list, type]], outputs: list[str]):
        self.input_info = inputs
        self.inputs = list(inputs)
        self.past_inputs = [n for n in self.inputs if is_past(n)]
        self.outputs = list(outputs)
        self.output = self.outputs[0] if self.outputs else None

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None
            ) -> list[np.ndarray]:
        raise NotImplementedError

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        past = {}
        for name in self.past_inputs:
            shape, dtype = self.input_info[name]
            dims = [d if isinstance(d, int) else 0 for d in shape]
            dims[0] = batch
            past[name] = np.zeros(dims, dtype=dtype)
        return past

    def feeds(self, feeds: dict[str, np.ndarray], past: dict | None = None) -> dict:
        """Complete tokenizer feeds for this model: an empty past for a fresh sequence,
        and position ids counted along the attention mask (which covers past + new tokens,
        so padding and the cache are both accounted for)."""
        ids = feeds["input_ids"]
        out = {k: v for k, v in feeds.items() if k in self.input_info}
        if self.past_inputs:
            out.update(past if past is not None else self.empty_past(ids.shape[0]))
        if "position_ids" in self.input_info and "position_ids" not in out:
            mask = feeds.get("attention_mask", np.ones_like(ids))
            pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)[:, -ids.shape[1]:]
            out["position_ids"] = pos.astype(np.int64)
        return out

    def run_all(self, feeds: dict, past: dict | None = None) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.run(self.feeds(feeds, past)), strict=True))

    def present(self, named: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The KV cache a run returned, renamed as the next run's past inputs."""
        if not self.past_inputs:
            return None
        return {n: named[n.replace("past_key_values", "present").replace("past.", "present.")]
                for n in self.past_inputs}

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.run(self.feeds(feeds), [self.output])[0]


class KvRunner:
    """`prefill` and `decode` with the KV cache over `self.model` (a KvSession): the one
    generation step every runtime's measurement runner shares."""

    model: KvSession

    def prefill(self, feeds: dict):
        named = self.model.run_all(feeds)
        return named[self.model.output], self.model.present(named)

    def decode(self, next_ids: np.ndarray, attention_mask: np.ndarray, past):
        if not self.model.past_inputs:  # exported without a KV cache: recompute it all
            ids = np.concatenate([past, next_ids], axis=1)
            logits = self.model({"input_ids": ids, "attention_mask": attention_mask})
            return logits[:, -1:], ids
        named = self.model.run_all({"input_ids": next_ids, "attention_mask": attention_mask},
                                   past)
        return named[self.model.output], self.model.present(named)
