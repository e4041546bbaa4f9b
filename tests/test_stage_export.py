"""export: optimum and dynamo exporters, decoders with past key values, ORT optimisation
levels and their order with ORT quantization."""

from __future__ import annotations

import pytest

from tests.conftest import run_stage


def test_causal_lm_export_with_past_then_int8(tiny_llama, tmp_path):
    onnx, checks = run_stage("export", {}, tiny_llama, tmp_path / "onnx", "causal-lm")
    assert checks["with_past"] is True and checks["exporter"] == "optimum"
    assert any(n.startswith("past_key_values") for n in checks["inputs"])
    assert checks["max_abs_diff"] <= checks["atol"]
    q, qchecks = run_stage("quantize", {"backend": "ort-dynamic-int8"}, onnx.path,
                           tmp_path / "int8", "causal-lm")
    assert qchecks["max_abs_diff_vs_input"] < 0.5
    # static INT8 calibrates through the empty past inputs too
    from tests.conftest import text_frame

    _, schecks = run_stage("quantize", {"backend": "ort-static-int8", "calibration": "entropy"},
                           onnx.path, tmp_path / "static", "causal-lm",
                           data={"calibration": text_frame(8, labels=False)})
    assert schecks["max_abs_diff_vs_input"] < 0.1


def test_dynamo_exporter_and_opset(tiny_bert_cls, tmp_path):
    _, checks = run_stage("export", {"exporter": "dynamo", "opset": 18}, tiny_bert_cls,
                          tmp_path / "dyn", "text-classification")
    assert checks["exporter"] == "dynamo" and checks["opset"] == 18
    assert checks["max_abs_diff"] <= 1e-3
    assert set(checks["inputs"]) == {"input_ids", "attention_mask", "token_type_ids"}


def test_optimisation_levels_and_quantize_order(tiny_bert_cls, tmp_path):
    o1, checks = run_stage("export", {"optimize": "O1"}, tiny_bert_cls, tmp_path / "o1",
                           "text-classification")
    assert checks["optimize"] == "O1" and checks["max_abs_diff"] <= 1e-3
    # O1 then quantize works
    q, _ = run_stage("quantize", {"backend": "ort-dynamic-int8"}, o1.path, tmp_path / "q",
                     "text-classification")
    # quantize then O2 works (the optimize stage)
    fused, fchecks = run_stage("optimize", {"level": "O2"}, q.path, tmp_path / "q-o2",
                               "text-classification")
    assert fused.kind.value == "onnx-quantized" and fchecks["max_abs_diff_vs_input"] < 1e-2
    o2, checks = run_stage("export", {"optimize": "O2"}, tiny_bert_cls, tmp_path / "o2",
                           "text-classification")
    import onnx

    ops = {n.op_type for n in onnx.load(str(o2.path / "model.onnx")).graph.node}
    assert ops & {"Attention", "SkipLayerNormalization", "FastGelu", "Gelu",
                  "EmbedLayerNormalization"}, ops  # O2 fuses transformer blocks
    # the failing order is refused even outside the planner
    assert o2.properties == {"graph_optimization": "O2"}  # declared by export, in its metadata
    from compress.errors import StageError

    with pytest.raises(StageError, match="optimised at O2"):
        run_stage("quantize", {"backend": "ort-int4-weight"}, o2.path, tmp_path / "bad",
                  "text-classification")


@pytest.mark.parametrize("has_cuda", [False, True])
def test_o4_refused_without_cuda_accepted_with_it(monkeypatch, has_cuda):
    """Both sides on every machine (the check sat under `if not cuda.is_available()` and
    said nothing on a GPU machine)."""
    from compress.stages import export as E
    from compress.stages.base import get_stage

    monkeypatch.setattr(E, "cuda_available", lambda: has_cuda)
    stage, opt = get_stage("export"), get_stage("optimize")
    reasons = [stage.check(stage.parse_config({"optimize": "O4"}), "text-classification"),
               opt.check(opt.parse_config({"level": "O4"}), "causal-lm")]
    if has_cuda:
        assert reasons == [None, None]
    else:
        assert all("O4" in r and "CUDA" in r for r in reasons), reasons


def test_export_refusals(tiny_bert_cls):
    from compress.stages.base import get_stage

    stage = get_stage("export")
    assert "exporter: optimum" in stage.check(
        stage.parse_config({"exporter": "dynamo", "with_past": True}), "causal-lm")
    assert "causal-lm" in stage.check(stage.parse_config({"with_past": True}),
                                      "text-classification")


def test_auto_exporter_knows_what_optimum_supports():
    from compress.stages.export import optimum_supports

    assert optimum_supports("bert", "text-classification")
    assert optimum_supports("llama", "causal-lm")
    assert not optimum_supports("no-such-architecture", "feature-extraction")  # -> dynamo
