"""prune: magnitude sparsity reached, structured pruning shrinks by exactly the expected
parameter count, pruned models reload only through compress.loading (in a new process),
export, and feed later training stages."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import inproc_outputs, reload_outputs, run_stage, text_frame


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_reaches_target_sparsity(tiny_bert_cls, tmp_path, scope):
    art, checks = run_stage("prune", {"method": "magnitude", "sparsity": 0.5, "scope": scope},
                            tiny_bert_cls, tmp_path / "mag", "text-classification")
    assert art.kind.value == "pytorch"  # same shapes, stored dense
    assert checks["sparsity"] == pytest.approx(0.5, abs=0.01)
    if scope == "layer":
        assert all(v == pytest.approx(0.5, abs=0.01)
                   for v in checks["sparsity_per_module"].values())
    assert checks["params_after"] == checks["params_before"]
    model, _ = inproc_outputs(art.path, "text-classification")
    dense = model.bert.encoder.layer[0].intermediate.dense.weight
    assert 0.2 < float((dense == 0).float().mean()) < 0.8


def test_structured_bert_param_count_reload_export_distill(tiny_bert_cls, tmp_path):
    from compress.models import load_pytorch

    train = {"train": text_frame(16)}
    art, checks = run_stage("prune", {"method": "structured", "heads": 0.5, "ffn": 0.25,
                                      "scope": "layer"},
                            tiny_bert_cls, tmp_path / "pruned", "text-classification",
                            data=train)
    assert art.kind.value == "pytorch-pruned"
    # hidden 32, 2 heads of 16, FFN 64, 2 layers: one head (q,k,v rows + biases, o columns)
    # and 16 FFN neurons (intermediate rows + biases, output columns) per layer
    per_layer = 3 * (16 * 32 + 16) + 16 * 32 + (16 * 32 + 16) + 16 * 32
    assert checks["params_before"] - checks["params_after"] == 2 * per_layer
    assert checks["ffn_sizes"] == [48, 48] and checks["heads_removed_per_layer"] == 1
    # plain from_pretrained cannot load it; compress.loading can, in a fresh process
    with pytest.raises(Exception):  # noqa: B017 - transformers' size-mismatch error
        load_pytorch(art.path, "text-classification")
    model, here = inproc_outputs(art.path, "text-classification")
    assert sum(p.numel() for p in model.parameters()) == checks["params_after"]
    fresh = reload_outputs([(art.path, "text-classification")])[str(art.path)]
    assert fresh["params"] == checks["params_after"]
    np.testing.assert_allclose(np.array(fresh["out"]), here, atol=1e-5)
    # export from the pruned artifact, verified against PyTorch
    onnx, echecks = run_stage("export", {}, art.path, tmp_path / "onnx", "text-classification")
    assert echecks["max_abs_diff"] <= echecks["atol"]
    # distill takes pytorch-pruned and keeps the pruned shapes
    student, dchecks = run_stage("distill", {"keep_layers": [1], "max_steps": 2,
                                             "batch_size": 8}, art.path, tmp_path / "student",
                                 "text-classification", data=train)
    assert student.kind.value == "pytorch-pruned" and dchecks["student_layers"] == 1
    fresh = reload_outputs([(student.path, "text-classification")])[str(student.path)]
    assert fresh["params"] == dchecks["student_params"]


def test_structured_llama_heads_ffn_and_export_with_past(tiny_llama, tmp_path):
    train = {"train": text_frame(16, labels=False)}
    art, checks = run_stage("prune", {"method": "structured", "heads": 0.5, "ffn": 0.5,
                                      "ffn_importance": "activation", "importance_batches": 2},
                            tiny_llama, tmp_path / "pruned", "causal-lm", data=train)
    # head_dim 16, 2 KV groups of 2 query heads: one group per layer = q 32 rows, k and v
    # 16 rows, o 32 columns, all 64 wide; FFN: 128 of 256 neurons, 3 x 64 weights each
    per_layer_attn = (32 + 16 + 16 + 32) * 64
    assert checks["params_before"] - checks["params_after"] == 2 * per_layer_attn + 128 * 192
    assert sum(checks["ffn_sizes"]) == 128 and min(checks["ffn_sizes"]) >= 1
    fresh = reload_outputs([(art.path, "causal-lm")])[str(art.path)]
    _, here = inproc_outputs(art.path, "causal-lm")
    np.testing.assert_allclose(np.array(fresh["out"]), here, atol=1e-5)
    onnx, echecks = run_stage("export", {}, art.path, tmp_path / "onnx", "causal-lm")
    assert echecks["with_past"] and echecks["max_abs_diff"] <= echecks["atol"]


def test_drop_layers_with_recovery_and_gradient_importance(tiny_bert, tmp_path):
    train = {"train": text_frame(16, labels=False)}
    art, checks = run_stage("prune", {"method": "structured", "drop_layers": [0], "ffn": 0.5,
                                      "ffn_importance": "gradient", "scope": "global",
                                      "recovery_steps": 2, "batch_size": 8},
                            tiny_bert, tmp_path / "p", "feature-extraction", data=train)
    assert checks["layers_after"] == 1 and checks["recovery"]["steps"] == 2
    assert checks["ffn_sizes"] == [32]
    fresh = reload_outputs([(art.path, "feature-extraction")])[str(art.path)]
    assert fresh["params"] == checks["params_after"]


def test_prune_config_refusals():
    from pydantic import ValidationError

    from compress.stages.base import get_stage

    stage = get_stage("prune")
    with pytest.raises(ValidationError, match="needs heads > 0, ffn > 0 or drop_layers"):
        stage.parse_config({"method": "structured"})
    with pytest.raises(ValidationError, match="needs sparsity"):
        stage.parse_config({"method": "magnitude"})
    with pytest.raises(ValidationError, match="sparsity"):
        stage.parse_config({"method": "magnitude", "sparsity": 1.5})
    cfg = stage.parse_config({"method": "structured", "ffn": 0.3})
    assert stage.data_roles(cfg) == {} and stage.produces(cfg, "pytorch") == "pytorch-pruned"
    assert stage.data_roles(stage.parse_config({"method": "structured", "heads": 0.5})) == {
        "train": True}
