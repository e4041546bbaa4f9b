"""Shared fixtures: a tiny random BERT built offline, tiny labelled data, recipe writers.

Every test gets its own empty cache dir (COMPRESS_CACHE_DIR), so a cache left by earlier
runs can never hide a broken stage.
"""

from __future__ import annotations

import os
import random
import sys
import textwrap
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
WORDS = {
    "sport": "goal match team win league cup player coach score season".split(),
    "business": "bank market profit shares growth price sales firm economy rates".split(),
    "tech": "phone chip software internet users data computer screen network app".split(),
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w for ws in WORDS.values() for w in ws} | set("abcdefghijklmnopqrstuvwxyz.,"))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(WORDS)[i % len(WORDS)]
        rows.append((" ".join(rng.choices(WORDS[label], k=12)), label))
    return rows


@pytest.fixture
def tiny_data(tmp_path) -> dict[str, Path]:
    """train/dev/test CSVs of synthetic 3-topic texts (disjoint seeds)."""
    import pandas as pd

    out = {}
    for split, n, seed in (("train", 48, 1), ("dev", 12, 2), ("test", 18, 3)):
        out[split] = tmp_path / f"{split}.csv"
        pd.DataFrame(make_rows(n, seed), columns=["text", "label"]).to_csv(out[split],
                                                                           index=False)
    return out


SUITE = """\
name: tiny
task: text-classification
dataset: {{source: {test}, text_column: text, label_column: label}}
quality: {{max_length: 32, batch_size: 8}}
latency: {{batch_sizes: [1], seq_lens: [32], warmup: 1, iterations: 3, threads: 1}}
"""

RECIPE = """\
name: tiny
task: text-classification
model: {model}
suite: suite.yaml
seed: 0
data:
  train: {{source: {train}}}
  dev: {{source: {dev}}}
pipeline:
  - id: teacher
    stage: finetune
    with: {{epochs: 1, batch_size: 8, max_length: 32, lr: 1.0e-3}}
  - id: onnx
    stage: export
  - id: int8
    stage: quantize
    with: {{backend: ort-dynamic-int8}}
candidates: [teacher, onnx, int8]
"""


@pytest.fixture
def write_recipe(tmp_path, tiny_bert, tiny_data):
    """Write suite.yaml and a recipe (default: the tiny 3-candidate one) into tmp_path."""

    def write(text: str | None = None, name: str = "recipe.yaml", **fmt) -> Path:
        (tmp_path / "suite.yaml").write_text(SUITE.format(test=tiny_data["test"]))
        values = {"model": tiny_bert, **{k: v for k, v in tiny_data.items()}, **fmt}
        path = tmp_path / name
        path.write_text(textwrap.dedent(text or RECIPE).format(**values))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout=600):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})
