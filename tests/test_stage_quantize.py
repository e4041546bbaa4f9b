"""quantize backends on tiny random models: layer types, agreement with the input model,
reload through compress.loading in a fresh process, refusals at validation."""

from __future__ import annotations

import numpy as np
import pytest

from compress.loading import STATE_FILE
from tests.conftest import inproc_outputs, reload_outputs, run_stage, text_frame


def _family(*modules: str, cpu: bool = True) -> list[str]:
    """Registered backends of these families (quantize submodules) that run on a CPU: read
    from the registry, so a new backend is tested without editing a list here."""
    from compress.stages.quantize import BACKENDS

    return [n for n, b in BACKENDS.items() if type(b).__module__.rsplit(".", 1)[-1] in modules
            and ("cpu" in b.runs_on) == cpu]


TORCH_BACKENDS = _family("pytorch", "casts")
BNB_BACKENDS = _family("bnb")
ORT_BACKENDS = _family("ort")
NNCF_BACKENDS = _family("nncf")  # run in tests/test_openvino*.py (OpenVINO IR outputs)
CUDA_ONLY = [n for fam in ("pytorch", "casts", "bnb", "ort", "nncf")
             for n in _family(fam, cpu=False)]


def test_every_backend_is_in_a_family_these_tests_run():
    """A backend of a new family (a new module under stages/quantize/) fails here until a
    test exercises it; the known families are found from the registry above."""
    from compress.stages.quantize import BACKENDS

    assert sorted(TORCH_BACKENDS + BNB_BACKENDS + ORT_BACKENDS + NNCF_BACKENDS
                  + CUDA_ONLY) == sorted(BACKENDS)
    # each one has its tests in tests/test_openvino.py and tests/test_openvino_llm.py
    assert NNCF_BACKENDS == ["nncf-int8", "nncf-weights"]
    assert {"torch-dynamic-int8", "torchao-int8-weight", "fp16"} <= set(TORCH_BACKENDS)
    assert "torchao-int4-weight" in CUDA_ONLY


def test_pytorch_backends_on_classifier_reload_in_new_process(tiny_bert_cls, tmp_path):
    import torch

    arts = {}
    for name in TORCH_BACKENDS:
        art, checks = run_stage("quantize", {"backend": name}, tiny_bert_cls,
                                tmp_path / name, "text-classification")
        assert art.kind.value == "pytorch-quantized"
        assert checks["top1_agreement_vs_input"] >= 0.75, (name, checks)
        arts[name] = art
    # the saved format: state dict (weights_only) for int8, safetensors for casts
    assert (arts["torch-dynamic-int8"].path / STATE_FILE).is_file()
    assert not (arts["torch-dynamic-int8"].path / "model.safetensors").exists()
    assert (arts["fp16"].path / "model.safetensors").is_file()
    # the quantized layer types are present after loading through compress.loading
    model, _ = inproc_outputs(arts["torch-dynamic-int8"].path, "text-classification")
    q = model.bert.encoder.layer[0].attention.self.query
    assert type(q).__module__.startswith("torch.ao.nn.quantized.dynamic")
    model, _ = inproc_outputs(arts["torchao-int8-weight"].path, "text-classification")
    assert "Int8" in type(model.bert.encoder.layer[0].output.dense.weight).__name__
    model, _ = inproc_outputs(arts["bf16"].path, "text-classification")
    assert model.bert.encoder.layer[0].output.dense.weight.dtype == torch.bfloat16
    # the cost model's inventory: every Linear with its format
    inv = arts["torch-dynamic-int8"].meta["checks"]["weights"]
    assert {x["format"] for x in inv["linears"]} == {"torch-dynamic-int8"}
    assert len(inv["linears"]) == 2 * 6 + 2  # q k v o up down per layer, pooler, classifier
    assert arts["fp16"].meta["checks"]["weights"]["linear_weight_bytes_by_format"]["float16"] \
        == inv["linear_weight_bytes_by_format"]["torch-dynamic-int8"] * 2
    # reload in a fresh process gives the same outputs
    fresh = reload_outputs([(a.path, "text-classification") for a in arts.values()])
    for name, art in arts.items():
        _, here = inproc_outputs(art.path, "text-classification")
        np.testing.assert_allclose(np.array(fresh[str(art.path)]["out"]), here, atol=1e-2,
                                   err_msg=name)


def test_decoder_and_embeddings_torch_backends(tiny_llama, tiny_bert, tmp_path):
    art, checks = run_stage("quantize", {"backend": "torch-dynamic-int8"}, tiny_llama,
                            tmp_path / "dyn", "causal-lm")
    assert checks["top1_agreement_vs_input"] > 0.5  # near-flat random logits
    art2, checks = run_stage("quantize", {"backend": "torchao-int8-weight"}, tiny_llama,
                             tmp_path / "ao", "causal-lm")
    assert checks["top1_agreement_vs_input"] > 0.5  # near-flat random logits
    emb, checks = run_stage("quantize", {"backend": "torch-dynamic-int8"}, tiny_bert,
                            tmp_path / "emb", "feature-extraction")
    assert checks["cosine_vs_input"] > 0.99
    fresh = reload_outputs([(art.path, "causal-lm"), (art2.path, "causal-lm"),
                            (emb.path, "feature-extraction")])
    assert np.array(fresh[str(art.path)]["out"]).shape[-1] == 36  # vocab of tiny_llama
    assert fresh[str(emb.path)]["type"] == "BertModel"


def test_bitsandbytes_backends_save_and_reload(tiny_llama, tmp_path):
    arts = []
    extras = {"bnb-nf4": {"double_quant": True}}
    for name in BNB_BACKENDS:
        extra = extras.get(name, {})
        art, checks = run_stage("quantize", {"backend": name, **extra}, tiny_llama,
                                tmp_path / name, "causal-lm")
        assert art.meta["config"]["compute_dtype"] in ("float32", "bfloat16", "float16")
        fmts = {x["format"] for x in checks["weights"]["linears"] if x["name"] != "lm_head"}
        assert fmts == {name}, fmts
        assert checks["max_abs_diff_vs_input"] < 0.3  # random logits: top-1 is fragile
        assert checks["top1_agreement_vs_input"] > 0.25  # chance is 1/36
        arts.append(art)
    fresh = reload_outputs([(a.path, "causal-lm") for a in arts])
    for art in arts:
        _, here = inproc_outputs(art.path, "causal-lm")
        np.testing.assert_allclose(np.array(fresh[str(art.path)]["out"]), here, atol=1e-4)


def test_ort_static_and_int4_backends(tiny_bert_cls, tmp_path):
    onnx, _ = run_stage("export", {}, tiny_bert_cls, tmp_path / "onnx", "text-classification")
    calib = {"calibration": text_frame(16, seed=5, labels=False)}
    qdq, checks = run_stage("quantize", {"backend": "ort-static-int8", "calibration": "minmax"},
                            onnx.path, tmp_path / "qdq", "text-classification", data=calib)
    assert qdq.kind.value == "onnx-quantized" and checks["calibration_texts"] == 16
    assert checks["top1_agreement_vs_input"] >= 0.75
    import onnx as onnx_lib

    ops = {n.op_type for n in onnx_lib.load(str(qdq.path / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    qop, checks = run_stage("quantize", {"backend": "ort-static-int8", "format": "qoperator",
                                         "calibration": "percentile", "per_channel": True},
                            onnx.path, tmp_path / "qop", "text-classification", data=calib)
    ops = {n.op_type for n in onnx_lib.load(str(qop.path / "model.onnx")).graph.node}
    assert any(o.startswith("QLinear") or o == "MatMulInteger" for o in ops), ops
    int4, checks = run_stage("quantize", {"backend": "ort-int4-weight", "block_size": 16},
                             onnx.path, tmp_path / "int4", "text-classification")
    assert checks["matmul_nbits_nodes"] == 12 and checks["top1_agreement_vs_input"] >= 0.75
    assert (int4.path / "tokenizer.json").is_file()


@pytest.mark.parametrize("has_cuda", [False, True])
def test_cuda_only_backends_refused_without_cuda_accepted_with_it(monkeypatch, has_cuda):
    """Both sides on every machine (the check sat under `if not cuda.is_available()` and
    said nothing on a GPU machine): the machine's answer is replaced for the check."""
    from compress.stages.base import get_stage
    from compress.stages.quantize import backend as B

    monkeypatch.setattr(B, "cuda_available", lambda: has_cuda)
    stage = get_stage("quantize")
    assert CUDA_ONLY
    for name in CUDA_ONLY:
        reason = stage.check(stage.parse_config({"backend": name}), "causal-lm")
        if has_cuda:
            assert reason is None, (name, reason)
        else:
            assert "needs a CUDA GPU" in reason and "torch-dynamic-int8" in reason, name


def test_refusals_are_clear_at_validation(tiny_bert_cls, tmp_path, write_recipe):
    from pydantic import ValidationError

    from compress.engine import prepare
    from compress.errors import RecipeError
    from compress.stages.base import get_stage

    stage = get_stage("quantize")
    with pytest.raises(ValidationError, match="block_size"):
        stage.parse_config({"backend": "ort-int4-weight", "block_size": 100})
    with pytest.raises(ValidationError, match="(?s)backend.*'torchao-int8-weight'.*'gptq'"):
        stage.parse_config({"backend": "gptq"})
    recipe = """\
name: tiny
task: text-classification
model: {model}
suite: suite.yaml
pipeline:
  - id: onnx
    stage: export
    with: {{optimize: O2}}
  - id: int8
    stage: quantize
    with: {{backend: ort-dynamic-int8}}
"""
    with pytest.raises(RecipeError, match="optimised at O2.*shape inference"):
        prepare(write_recipe(recipe))
    with pytest.raises(RecipeError, match="needs: onnx"):  # ORT backend on a PyTorch model
        prepare(write_recipe(recipe.replace("stage: export\n    with: {{optimize: O2}}",
                                            "stage: quantize\n    with: {{backend: fp16}}")))
    ok = prepare(write_recipe(recipe.replace("O2", "O1") + """\
  - id: fused
    stage: optimize
    with: {{level: O2}}
"""))
    assert [n.kind.value for n in ok.nodes] == ["onnx", "onnx-quantized", "onnx-quantized"]


def test_capabilities_are_queryable_data():
    from compress.capabilities import backend_capabilities, runs_fast_on
    from compress.stages.quantize import BACKENDS

    caps = {c["name"]: c for c in backend_capabilities()}
    assert set(caps) == set(BACKENDS) and len(caps) == 14
    assert caps["torchao-int4-weight"]["runs_on"] == ["cuda"]
    assert "no INT8 kernels" in caps["ort-dynamic-int8"]["slow"]["ort-cuda"]
    assert not runs_fast_on("bf16", "cuda", 7.5) and runs_fast_on("bf16", "cuda", 8.0)
    # static INT8 (QDQ) is fast on a GPU only through TensorRT, never the ORT CUDA provider
    paths = {f["runtime"] for f in caps["ort-static-int8"]["fast"] if f["device"] == "cuda"}
    assert paths == {"ort-tensorrt"} and "ort-cuda" in caps["ort-static-int8"]["slow"]
    assert runs_fast_on("ort-static-int8", "cuda", 7.5)
    assert not runs_fast_on("ort-dynamic-int8", "cuda", 9.0)
    assert runs_fast_on("torch-dynamic-int8", "cpu")
    # 4-bit kernels are batch-1 kernels on a GPU
    assert runs_fast_on("bnb-nf4", "cuda", 7.5) and not runs_fast_on("bnb-nf4", "cuda", 7.5,
                                                                     batch_size=8)


def test_every_backend_declares_a_catalog_format():
    """The capability loop: every registered quantize backend produces a format the
    catalog knows, and the catalog is where its runtimes are decided."""
    from compress.hardware.catalog import load_catalog
    from compress.hardware.formats import classify
    from compress.stages.quantize import BACKENDS

    cat = load_catalog()
    for name, b in BACKENDS.items():
        assert b.format in cat.formats, (name, b.format)
        assert any(b.format in rt.fast or b.format in rt.slow
                   for rt in cat.runtimes.values()), (name, b.format)
        # an artifact whose metadata names the format is read as that format
        kind = b.produces.value
        assert classify(kind, name, {}, set(), "fp32", declared=b.format)[0] == b.format


@pytest.mark.gpu
def test_cuda_only_backends_on_gpu(tiny_llama, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    art, checks = run_stage("quantize", {"backend": "torchao-int4-weight", "group_size": 32},
                            tiny_llama, tmp_path / "int4", "causal-lm")
    assert checks["top1_agreement_vs_input"] > 0.5
    assert {x["bits"] for x in checks["weights"]["linears"] if x["name"] != "lm_head"} == {4}


def test_tied_embeddings_survive_dynamic_int8_reload(tiny_llama, tmp_path):
    """SmolLM2 ties lm_head to the input embeddings: once lm_head is quantized it keeps its
    own packed copy, and reloading must not try to re-tie it (it used to fail)."""
    import shutil

    from transformers import LlamaForCausalLM

    tied = tmp_path / "tied"
    shutil.copytree(tiny_llama, tied)
    model = LlamaForCausalLM.from_pretrained(tiny_llama)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tied)
    art, checks = run_stage("quantize", {"backend": "torch-dynamic-int8"}, tied,
                            tmp_path / "dyn", "causal-lm")
    assert checks["top1_agreement_vs_input"] > 0.5
    fresh = reload_outputs([(art.path, "causal-lm")])
    assert np.array(fresh[str(art.path)]["out"]).shape[-1] == model.config.vocab_size
