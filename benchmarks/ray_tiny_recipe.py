"""Write a small stand-in for recipes/bbc-news-full.yaml into a folder: the same pipeline
(teacher; ONNX + two ORT INT8 backends; two PyTorch INT8 backends; two distilled students
with export and INT8; two structured prunings with recovery, export and INT8: 18
candidates, sweeps included) on a 4-layer random BERT and synthetic 3-topic texts built
offline, so that `--executor ray` and the local executor can both run it cold on a busy
2-core machine (benchmarks/ray_executor.py compares the two runs).

    python benchmarks/ray_tiny_recipe.py DIR      # writes DIR/recipe.yaml and its files
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

WORDS = {
    "sport": "goal match team win league cup player coach score season".split(),
    "business": "bank market profit shares growth price sales firm economy rates".split(),
    "tech": "phone chip software internet users data computer screen network app".split(),
}

SUITE = """\
name: tiny-topics
task: text-classification
dataset: {{source: {test}, text_column: text, label_column: label}}
quality: {{max_length: 32}}
latency: {{batch_sizes: [1], seq_lens: [32], warmup: 3, iterations: 20, threads: 1}}
"""

RECIPE = """\
# bbc-news-full's pipeline on a 4-layer random BERT (benchmarks/ray_tiny_recipe.py)
name: tiny-full
task: text-classification
model: {model}
suite: suite.yaml
seed: 0
data:
  train: {{source: {train}}}
  dev: {{source: {dev}}}
  calibration: {{source: {train}, limit: 32}}
pipeline:
  - id: teacher
    stage: finetune
    with: {{epochs: 4, lr: 3.0e-3, batch_size: 16, max_length: 32}}
  - id: teacher-onnx
    stage: export
    with: {{optimize: O1}}
  - id: teacher-int8
    stage: quantize
    sweep: {{backend: [ort-dynamic-int8, ort-static-int8]}}
  - id: teacher-torch-int8
    stage: quantize
    input: teacher
    sweep: {{backend: [torch-dynamic-int8, torchao-int8-dynamic]}}
  - id: student
    stage: distill
    input: teacher
    with: {{epochs: 2, lr: 3.0e-3, alpha: 0.5, temperature: 2.0, batch_size: 16,
           max_length: 32}}
    sweep: {{keep_layers: [[0, 2], [0, 3]]}}
  - id: student-onnx
    stage: export
    with: {{optimize: O1}}
  - id: student-int8
    stage: quantize
    with: {{backend: ort-dynamic-int8}}
  - id: pruned
    stage: prune
    input: teacher
    with: {{method: structured, ffn_importance: weight, recovery_steps: 10,
           batch_size: 16, max_length: 32}}
    sweep: {{ffn: [0.3, 0.5]}}
  - id: pruned-onnx
    stage: export
    with: {{optimize: O1}}
  - id: pruned-int8
    stage: quantize
    with: {{backend: ort-dynamic-int8}}
baseline: teacher
"""


def rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choices(WORDS[label], k=12)), label)
            for label in (list(WORDS)[i % len(WORDS)] for i in range(n))]


def main(out: Path) -> Path:
    import pandas as pd
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    model = out / "tiny-bert"
    model.mkdir(exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w for ws in WORDS.values() for w in ws} | set("abcdefghijklmnopqrstuvwxyz.,"))
    (model / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(model / "vocab.txt"))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=4,
                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(model)
    tok.save_pretrained(model)
    files = {}
    for split, n, seed in (("train", 96, 1), ("dev", 24, 2), ("test", 60, 3)):
        files[split] = out / f"{split}.csv"
        pd.DataFrame(rows(n, seed), columns=["text", "label"]).to_csv(files[split], index=False)
    (out / "suite.yaml").write_text(SUITE.format(test=files["test"]))
    recipe = out / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=model, **files))
    return recipe


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
