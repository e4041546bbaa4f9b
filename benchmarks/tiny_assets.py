"""A tiny random BERT, synthetic 3-topic texts and tiny recipes, built offline: the one
builder behind tests/conftest.py and the benchmarks that need a model and data of their
own (concurrent_runs, chaos, ray_tiny_recipe, malformed_inputs). Tests import it as
`benchmarks.tiny_assets`, as test_malformed_inputs imports its benchmark. Each caller
passes its own sizes and seeds, so what it builds (and every cache key and figure that
depends on it) is what it built before this module existed."""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOPICS = {
    "sport": "goal match team win league cup player coach score season".split(),
    "business": "bank market profit shares growth price sales firm economy rates".split(),
    "tech": "phone chip software internet users data computer screen network app".split(),
}
LETTERS = set("abcdefghijklmnopqrstuvwxyz.,")


def topic_vocab(letters: bool) -> list[str]:
    """The topics' words, sorted; with `letters`, single letters and punctuation too (so
    WordPiece can spell words outside the topics)."""
    words = {w for ws in TOPICS.values() for w in ws}
    return sorted(words | LETTERS if letters else words)


def build_bert(path: Path, words: list[str], *, hidden: int, layers: int,
               intermediate: int, max_positions: int, heads: int = 2, seed: int = 0) -> Path:
    """A random BertModel of these sizes (weights drawn after torch.manual_seed(seed)) with
    a WordPiece tokenizer over the special tokens + `words`, saved into `path` like a hub
    model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + list(words)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=intermediate,
                     max_position_embeddings=max_positions)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def topic_rows(n: int, rng: random.Random | int, words: int = 12) -> list[tuple[str, str]]:
    """n (text, topic) rows, topics in turn, each text `words` words of its topic drawn by
    `rng` (a seed starts a new one)."""
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    return [(" ".join(rng.choices(TOPICS[label], k=words)), label)
            for label in (list(TOPICS)[i % len(TOPICS)] for i in range(n))]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """The rows as a text,label CSV."""
    import pandas as pd

    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def recipe_template(name: str, rest: str, *, dev: bool = True) -> str:
    """A tiny text-classification recipe (model {model}, suite.yaml, seed 0, data train
    {train} and, with `dev`, dev {dev}) followed by `rest` (more data keys, the pipeline,
    ...): a str.format template, so `rest` doubles its literal braces."""
    head = (f"name: {name}\ntask: text-classification\nmodel: {{model}}\nsuite: suite.yaml\n"
            "seed: 0\ndata:\n  train: {{source: {train}}}\n")
    return head + ("  dev: {{source: {dev}}}\n" if dev else "") + rest
