"""LLM-grade ONNX Runtime quantization on a tiny causal LM: every MatMulNBits algorithm
gives a MatMulNBits graph whose logits stay close to the float model's, excluded nodes
stay float, and every new setting is validated (exit 2 naming file, field and value)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from compress.stages.quantize.ort_llm import ALGORITHMS
from tests.conftest import run_cli, run_stage, text_frame


@pytest.fixture(scope="module")
def llama_onnx(tiny_llama, tmp_path_factory):
    art, _ = run_stage("export", {}, tiny_llama, tmp_path_factory.mktemp("x") / "onnx",
                       "causal-lm")
    return art.path


def _logits(path):
    from compress.encoding import Encoder, OrtModel
    from compress.stages.common import SAMPLE_TEXTS

    return OrtModel(path)(Encoder(path)(SAMPLE_TEXTS, 32))


def _nodes(path, op):
    return [n for n in onnx.load(str(path / "model.onnx")).graph.node if n.op_type == op]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_int4_algorithm_gives_matmulnbits_close_to_float(llama_onnx, tmp_path,
                                                              algorithm):
    data = {"calibration": text_frame(8, seed=3, labels=False)}
    settings = {"backend": "ort-int4-weight", "algorithm": algorithm, "block_size": 16,
                "accuracy_level": 4}
    if algorithm == "gptq":
        settings |= {"max_samples": 4, "max_length": 16}
    art, checks = run_stage("quantize", settings, llama_onnx, tmp_path / "q", "causal-lm",
                            data=data if algorithm == "gptq" else None)
    nbits = _nodes(art.path, "MatMulNBits")
    # 2 layers x (q, k, v, o, gate, up, down) + lm_head
    assert len(nbits) == checks["matmul_nbits_nodes"] == 15, checks
    assert checks["algorithm"] == algorithm
    # accuracy_level is written on every node, whatever the algorithm writes itself
    assert all(onnx.helper.get_attribute_value(a) == 4 for n in nbits for a in n.attribute
               if a.name == "accuracy_level")
    assert all(any(a.name == "accuracy_level" for a in n.attribute) for n in nbits)
    ref, out = _logits(llama_onnx), _logits(art.path)
    # random weights quantized to 4 bits: the logits move, but stay close to the float ones
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert rel < 0.35, (algorithm, rel)
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.95, algorithm


def test_int4_excluded_nodes_stay_float(llama_onnx, tmp_path):
    art, checks = run_stage("quantize", {"backend": "ort-int4-weight", "algorithm": "rtn",
                                         "block_size": 16,
                                         "exclude_nodes": ["lm_head", "*/mlp/down_proj/*"]},
                            llama_onnx, tmp_path / "q", "causal-lm")
    floats = {n.name for n in _nodes(art.path, "MatMul")}
    assert "/lm_head/MatMul" in floats
    assert {f"/model/layers.{i}/mlp/down_proj/MatMul" for i in range(2)} <= floats
    assert sorted(checks["excluded_nodes"]) == sorted(floats & set(checks["excluded_nodes"]))
    assert checks["matmul_nbits_nodes"] == 15 - 3
    assert not any("lm_head" in n.name for n in _nodes(art.path, "MatMulNBits"))


def test_int8_per_channel_with_lm_head_excluded(llama_onnx, tmp_path):
    art, checks = run_stage("quantize", {"backend": "ort-dynamic-int8", "per_channel": True,
                                         "exclude_nodes": ["lm_head"], "weights_only": True,
                                         "op_types": ["MatMul"]},
                            llama_onnx, tmp_path / "q", "causal-lm")
    graph = onnx.load(str(art.path / "model.onnx")).graph
    float_matmuls = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert "/lm_head/MatMul" in float_matmuls
    assert checks["excluded_nodes"][0] == "/lm_head/MatMul"
    # weights_only: attention's two activation matmuls per layer and the rotary one stay
    # float (the default quantizes them too: 19 integer matmuls on this graph)
    assert {f"/model/layers.{i}/self_attn/MatMul" for i in range(2)} <= float_matmuls
    assert len(checks["excluded_nodes"]) == 1 + 2 * 2 + 1
    quantized = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(quantized) == 14  # every other weight matmul
    # op_types [MatMul]: the embedding Gather keeps its float table
    assert not any(n.op_type == "Gather" and "quant" in n.input[0].lower() for n in graph.node)
    # per-channel: one weight scale per output column
    scales = {i.name: i for i in graph.initializer if "scale" in i.name.lower()}
    assert any(len(i.dims) == 1 and i.dims[0] > 1 for i in scales.values())
    assert checks["top1_agreement_vs_input"] > 0.5


def test_a_pattern_that_matches_nothing_is_refused(llama_onnx, tmp_path):
    from compress.errors import StageError

    with pytest.raises(StageError, match=r"exclude_nodes: 'lm_haed' matches no node"):
        run_stage("quantize", {"backend": "ort-int4-weight", "exclude_nodes": ["lm_haed"]},
                  llama_onnx, tmp_path / "q", "causal-lm")


def test_gptq_asks_for_calibration_data_and_resolves_its_defaults():
    from compress.stages.base import get_stage

    stage = get_stage("quantize")
    gptq = stage.resolve(stage.parse_config({"backend": "ort-int4-weight",
                                             "algorithm": "gptq"}))
    assert stage.data_roles(gptq) == {"calibration": True}
    assert (gptq.max_samples, gptq.max_length, gptq.percdamp, gptq.actorder, gptq.symmetric) \
        == (32, 256, 0.01, False, True)
    hqq = stage.resolve(stage.parse_config({"backend": "ort-int4-weight", "algorithm": "hqq"}))
    assert stage.data_roles(hqq) == {} and hqq.symmetric is False and hqq.max_samples is None


SUITE = """name: s
task: causal-lm
dataset: {{source: {data}, text_column: text, label_column: null}}
quality: {{metrics: [perplexity], max_length: 32}}
"""

RECIPE = """name: bad-{field}
task: causal-lm
model: {model}
suite: suite.yaml
pipeline:
  - id: onnx
    stage: export
  - id: q
    stage: quantize
    with: {settings}
"""

BAD = [
    ("algorithm", "{backend: ort-int4-weight, algorithm: awq}", "'awq'"),
    ("block_size", "{backend: ort-int4-weight, block_size: 48}", "48"),
    ("accuracy_level", "{backend: ort-int4-weight, accuracy_level: 5}", "5"),
    ("symmetric", "{backend: ort-int4-weight, algorithm: hqq, symmetric: true}",
     "symmetric: true with algorithm hqq"),
    ("percdamp", "{backend: ort-int4-weight, algorithm: rtn, percdamp: 0.1}",
     "percdamp: 0.1 with algorithm rtn"),
    ("max_samples", "{backend: ort-int4-weight, algorithm: gptq, max_samples: 0}", "0"),
    ("max_length", "{backend: ort-int4-weight, algorithm: gptq, max_length: 4}", "4"),
    ("actorder", "{backend: ort-int4-weight, actorder: true}",
     "actorder: True with algorithm default"),
    ("exclude_nodes", "{backend: ort-int4-weight, exclude_nodes: lm_head}", "'lm_head'"),
    ("exclude_nodes", "{backend: ort-dynamic-int8, exclude_nodes: [1]}", "1"),
    ("op_types", "{backend: ort-dynamic-int8, op_types: [Matmul]}", "'Matmul'"),
]


@pytest.mark.parametrize("field,settings,value", BAD, ids=[f"{b[0]}-{i}" for i, b in
                                                             enumerate(BAD)])
def test_bad_settings_exit_2_naming_file_field_value(tiny_llama, tmp_path, field, settings,
                                                     value):
    data = tmp_path / "texts.csv"
    data.write_text("text\nthe cat sat\n")
    (tmp_path / "suite.yaml").write_text(SUITE.format(data=data))
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(field=field, model=tiny_llama, settings=settings))
    proc = run_cli("validate", str(path))
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "recipe.yaml" in err and field in err and value in err, err
    assert "Traceback" not in proc.stderr + proc.stdout


def test_smollm2_suite_scores_enough_held_out_text_to_resolve_a_few_percent():
    """2,048 tokens (16 windows) could not resolve a 2% perplexity ratio; the suite now
    scores every held-out article, at about one computed token per scored token."""
    from pathlib import Path

    from compress.data import demo_splits
    from compress.measure.metrics import sliding_windows
    from compress.suite import load_suite

    suite, _ = load_suite(Path(__file__).parents[1] / "eval" / "smollm2-perplexity.yaml")
    q = suite.quality
    assert q.max_tokens is None  # was 2048
    chars = sum(len(t) for t in demo_splits("lee-background")["test"]["text"])
    tokens = chars // 6  # a floor: English news runs at about 4-5 characters a token
    windows = sliding_windows(tokens, q.max_length, q.stride)
    scored = sum(end - start for _, end, start in windows)
    computed = sum(end - begin for begin, end, _ in windows)
    assert scored >= 10_000 and len(windows) >= 20
    assert computed / scored <= 1.2  # the demo's scoring time grows with the text only
