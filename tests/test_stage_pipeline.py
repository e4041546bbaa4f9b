"""The new stages chained in a recipe, built by the engine and measured by the subprocess
worker: every kind they produce loads through compress.loading in a fresh process."""

from __future__ import annotations

from benchmarks.tiny_assets import recipe_template
from compress.engine import run_recipe
from tests.conftest import check_quality_from_units

PIPELINE = recipe_template("tiny", """\
pipeline:
  - id: teacher
    stage: finetune
    with: {{epochs: 1, batch_size: 8, max_length: 32, lr: 1.0e-3}}
  - id: student
    stage: distill
    with: {{keep_layers: [1], max_steps: 4, batch_size: 8, max_length: 32, lr: 1.0e-3}}
  - id: pruned
    stage: prune
    with: {{method: structured, ffn: 0.5}}
  - id: int8
    stage: quantize
    with: {{backend: torch-dynamic-int8}}
  - id: onnx
    stage: export
    input: pruned
    with: {{optimize: O1}}
candidates: [teacher, student, pruned, int8, onnx]
""")


def test_new_stages_build_and_measure_end_to_end(write_recipe, tmp_path):
    run = run_recipe(write_recipe(PIPELINE), out_dir=tmp_path / "run")
    table = run.summary().set_index("candidate")
    assert run.ok, table.get("error")
    assert table.loc[["student", "pruned", "int8", "onnx"], "kind"].tolist() == [
        "pytorch", "pytorch-pruned", "pytorch-quantized", "onnx"]
    check_quality_from_units(run.path, table)   # every figure is its model's own
    sizes = table["size_mb"]
    assert sizes["student"] < sizes["teacher"] and sizes["pruned"] < sizes["student"]
    # the pruned model measures like its ONNX export
    assert abs(table.loc["onnx", "accuracy"] - table.loc["pruned", "accuracy"]) <= 1 / 18 + 1e-9
