"""Write a small stand-in for recipes/bbc-news-full.yaml into a folder: the same pipeline
(teacher; ONNX + two ORT INT8 backends; two PyTorch INT8 backends; two distilled students
with export and INT8; two structured prunings with recovery, export and INT8: 18
candidates, sweeps included) on a 4-layer random BERT and synthetic 3-topic texts built
offline, so that `--executor ray` and the local executor can both run it cold on a busy
2-core machine (benchmarks/ray_executor.py compares the two runs).

    python benchmarks/ray_tiny_recipe.py DIR      # writes DIR/recipe.yaml and its files
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import tiny_assets as tiny  # noqa: E402 - after the path setup

SUITE = """\
name: tiny-topics
task: text-classification
dataset: {{source: {test}, text_column: text, label_column: label}}
quality: {{max_length: 32}}
latency: {{batch_sizes: [1], seq_lens: [32], warmup: 3, iterations: 20, threads: 1}}
"""

RECIPE = ("# bbc-news-full's pipeline on a 4-layer random BERT (benchmarks/ray_tiny_recipe.py)\n"
          + tiny.recipe_template("tiny-full", """\
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
"""))


def main(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model = tiny.build_bert(out / "tiny-bert", tiny.topic_vocab(letters=True), hidden=64,
                            layers=4, intermediate=128, max_positions=64)
    files = {}
    for split, n, seed in (("train", 96, 1), ("dev", 24, 2), ("test", 60, 3)):
        files[split] = tiny.write_csv(out / f"{split}.csv", tiny.topic_rows(n, seed))
    (out / "suite.yaml").write_text(SUITE.format(test=files["test"]))
    recipe = out / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=model, **files))
    return recipe


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
