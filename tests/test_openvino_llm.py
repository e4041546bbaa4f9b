"""OpenVINO for causal LMs and NNCF weight compression, on the tiny Llama built in tests:
the openvino runtime scores perplexity and decodes with the KV cache exactly as ONNX
Runtime does on the same export (and imports neither torch nor transformers), and
`nncf-weights` writes INT8/INT4 weights, with its settings validated (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, run_stage, text_frame
from tests.test_openvino import BAD as BAD_INT8

pytest.importorskip("openvino")
pytest.importorskip("nncf")

# sliding windows of 12 tokens, stride 8, over the tiny vocabulary's sentences
QUALITY = {"max_length": 12, "stride": 8, "max_tokens": None, "batch_size": 1}
LATENCY = {"threads": 1, "device": "cpu", "providers": ["CPUExecutionProvider"],
           "openvino_precision": "fp32"}


def texts() -> list[str]:
    return text_frame(6, seed=5, labels=False).text.tolist()


def request(**extra) -> dict:
    return {"texts": texts(), "quality": QUALITY, "fidelity": {"top_k": 5},
            "quality_metrics": ["perplexity", "next_token_accuracy"],
            "fidelity_metrics": [], **extra}


@pytest.fixture(scope="module")
def llama_ov(tiny_llama, tmp_path_factory):
    """(ONNX export with a KV cache, its OpenVINO IR) of the tiny Llama."""
    tmp = tmp_path_factory.mktemp("ov-llm")
    onnx, _ = run_stage("export", {}, tiny_llama, tmp / "onnx", "causal-lm")
    # before: the openvino stage refused causal-lm ("converts encoders only")
    ir, checks = run_stage("openvino", {}, onnx.path, tmp / "ir", "causal-lm")
    return onnx, ir, checks


def greedy(runner, prompt: dict, steps: int) -> list[int]:
    """Greedy tokens from prefill + `steps` decode steps with the KV cache (the worker's
    timed generation loop)."""
    from compress.measure.worker import Generate

    gen = Generate(runner, prompt, steps)
    gen(record=False)
    return gen.tokens[0].tolist()


SCRIPT = """
import json, sys
import numpy as np
from compress.encoding import Encoder
from compress.measure import worker
from compress.measure.runners import make_runner
ir, req, latency = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
runner = make_runner(ir, "openvino", "causal-lm", latency)
enc = Encoder(ir)
figures, _, _ = worker.causal_lm(runner, enc, req)
ids = np.asarray(enc.ids(req["texts"][0])[:6], dtype=np.int64)[None]
gen = worker.Generate(runner, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, 8)
gen(record=False)
tokens = gen.tokens[0].tolist()
print("RESULT" + json.dumps({"figures": figures, "tokens": tokens, "prompt": ids.tolist(),
    "precision": runner.precision, "past": runner.model.past_inputs,
    "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def test_openvino_scores_and_decodes_a_causal_lm_as_ort_does(llama_ov):
    from compress.encoding import Encoder
    from compress.measure import worker
    from compress.measure.runners import make_runner

    onnx, ir, checks = llama_ov
    assert checks["max_abs_diff_vs_input"] < 1e-4 and checks["top1_agreement_vs_input"] == 1
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ir.path), json.dumps(request()),
                           json.dumps(LATENCY)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ov = json.loads(next(x for x in proc.stdout.splitlines()
                         if x.startswith("RESULT"))[len("RESULT"):])
    assert ov["torch"] is False and ov["transformers"] is False
    assert ov["precision"] == "fp32" and len(ov["past"]) == 4  # 2 layers x (key, value)
    ort = make_runner(str(onnx.path), "onnx", "causal-lm", LATENCY)
    ref, _, _ = worker.causal_lm(ort, Encoder(onnx.path), request())
    assert ov["figures"]["scored_tokens"] == ref["scored_tokens"] > 40
    assert ov["figures"]["perplexity"] == pytest.approx(ref["perplexity"], rel=1e-5)
    assert ov["figures"]["units"]["window_nll"] == pytest.approx(
        ref["units"]["window_nll"], rel=1e-5)
    ids = np.asarray(ov["prompt"], dtype=np.int64)
    assert ov["tokens"] == greedy(ort, {"input_ids": ids,
                                        "attention_mask": np.ones_like(ids)}, 8)


def test_openvino_decode_with_the_cache_equals_a_full_recompute(llama_ov):
    from compress.encoding import Encoder
    from compress.measure.runners import make_runner

    _, ir, _ = llama_ov
    runner = make_runner(str(ir.path), "openvino", "causal-lm", LATENCY)
    enc = Encoder(ir.path)
    ids = np.asarray(enc.ids(texts()[1])[:7], dtype=np.int64)[None]
    logits, past = runner.prefill({"input_ids": ids[:, :6],
                                   "attention_mask": np.ones((1, 6), np.int64)})
    assert past["past_key_values.0.key"].shape[2] == 6  # the cache holds the prompt
    step, past = runner.decode(ids[:, 6:], np.ones((1, 7), np.int64), past)
    full = runner({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    np.testing.assert_allclose(step[0, -1], full[0, -1], atol=1e-4)
    assert past["past_key_values.1.value"].shape[2] == 7


def test_worker_measures_an_openvino_causal_lm(llama_ov):
    """The whole measurement (latency with prefill and decode, quality) in a fresh worker:
    before, make_runner refused causal-lm on the openvino runtime."""
    from compress.measure.runner import run_worker

    _, ir, _ = llama_ov
    req = {"artifact": str(ir.path), "kind": "openvino", "task": "causal-lm", **request(),
           "latency": {**LATENCY, "batch_sizes": [1], "seq_lens": [6], "gen_tokens": 3,
                       "warmup": 1, "iterations": 2, "min_time_s": 0,
                       "noisy_spread": 0.25}}
    res = run_worker(req, threads=1, timeout_s=300)
    assert [r["phase"] for r in res["latency"]] == ["prefill", "decode"]
    assert res["latency"][1]["iterations"] == 6  # 2 generations x 3 steps
    assert res["env"]["backend"] == "openvino" and res["env"]["inference_precision"] == "fp32"
    assert res["quality"]["perplexity"] > 1 and res["quality"]["scored_tokens"] > 40


# ---------------------------------------------------------------- nncf-weights

def test_nncf_weights_int8_is_an_int8_openvino_artifact(llama_ov, tmp_path):
    from compress.artifacts import Kind
    from compress.encoding import Encoder
    from compress.openvino import OvModel, ir_weights
    from compress.stages.base import get_stage

    _, ir, _ = llama_ov
    art, checks = run_stage("quantize", {"backend": "nncf-weights", "mode": "int8_sym"},
                            ir.path, tmp_path / "q", "causal-lm")
    assert art.kind == Kind.OPENVINO
    assert art.meta["config"]["group_size"] == -1 and art.meta["config"]["ratio"] == 1.0
    stored, _, _ = ir_weights(art.path)
    fp32, _, _ = ir_weights(ir.path)
    assert stored == checks["stored_bytes_by_dtype"]
    assert stored.get("int8", 0) > 3 * stored.get("float32", 0)  # the weights are int8
    assert stored["int8"] < fp32["float32"] / 3
    from compress.capabilities import runs_fast_on

    stage = get_stage("quantize")
    assert stage.produces_format(stage.parse_config(art.meta["config"])) == "int8-weight-ov"
    assert runs_fast_on("int8-weight-ov", "cpu") and not runs_fast_on("int8-weight-ov",
                                                                       "cuda", 9.0)
    feeds = Encoder(ir.path)(texts(), 16)
    ref, out = OvModel(ir.path)(feeds), OvModel(art.path)(feeds)
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert checks["max_abs_diff_vs_input"] == pytest.approx(float(np.abs(out - ref).max()),
                                                            rel=0.5)


def test_nncf_weights_int4_awq_calibrates_and_stores_4_bits(llama_ov, tmp_path):
    from compress.openvino import ir_weights
    from compress.stages.base import get_stage

    onnx, _, _ = llama_ov
    settings = {"backend": "nncf-weights", "mode": "int4_asym", "group_size": 16,
                "awq": True, "scale_estimation": True, "subset_size": 6, "max_length": 16}
    stage = get_stage("quantize")
    assert stage.data_roles(stage.parse_config(settings)) == {"calibration": True}
    art, checks = run_stage("quantize", settings, onnx.path, tmp_path / "q", "causal-lm",
                            data={"calibration": text_frame(10, seed=3, labels=False)})
    assert checks["calibration_texts"] == 6
    stored, _, _ = ir_weights(art.path)
    assert stored.get("uint4", 0) > stored.get("float32", 0)
    assert stage.produces_format(stage.parse_config(settings)) == "int4-weight-ov"


def test_scale_estimation_on_large_weights_keeps_float_scales(llama_ov, tmp_path,
                                                             monkeypatch):
    """NNCF 3.4.0 compresses weights above a size threshold (every layer of a real LLM) with
    OpenVINO-compiled functions, and with scale estimation those wrote the group scales as
    int16: SmolLM2 came out with top-1 agreement 0. Lowering the threshold to 0 makes the
    tiny model take that path; the stage must give the same model as the numpy path."""
    import nncf.quantization.algorithms.weight_compression.weight_lowering as lowering

    from compress.openvino import ir_weights

    onnx, _, _ = llama_ov
    settings = {"backend": "nncf-weights", "mode": "int4_asym", "group_size": 16,
                "scale_estimation": True, "subset_size": 6, "max_length": 16}
    data = {"calibration": text_frame(10, seed=3, labels=False)}
    _, small = run_stage("quantize", settings, onnx.path, tmp_path / "numpy", "causal-lm",
                         data=data)
    monkeypatch.setattr(lowering, "MIN_INPUT_SIZE_FOR_OPTIMIZED_COMPRESSION", 0)
    art, large = run_stage("quantize", settings, onnx.path, tmp_path / "ov", "causal-lm",
                           data=data)
    assert "int16" not in ir_weights(art.path)[0]
    assert large["max_abs_diff_vs_input"] == pytest.approx(small["max_abs_diff_vs_input"],
                                                           rel=1e-3)
    assert large["top1_agreement_vs_input"] == small["top1_agreement_vs_input"]


def test_nncf_gptq_on_an_onnx_export_says_why_it_cannot(llama_ov, tmp_path):
    from compress.errors import StageError

    onnx, _, _ = llama_ov
    with pytest.raises(StageError, match=r"gptq\): NNCF .* stored transposed.*ort-int4-weight"):
        run_stage("quantize", {"backend": "nncf-weights", "mode": "int4_sym", "group_size": 16,
                               "gptq": True, "subset_size": 4, "max_length": 16},
                  onnx.path, tmp_path / "q", "causal-lm",
                  data={"calibration": text_frame(6, seed=3, labels=False)})


# the nncf-int8 test's recipe, with the nncf-weights setting under test
BAD = BAD_INT8.replace("backend: nncf-int8, preset: fastest", "backend: nncf-weights, SETTING")


@pytest.mark.parametrize("setting, says", [
    ("mode: int5_sym", ["mode", "int5_sym", "int4_asym", "int8_sym"]),
    ("ratio: 1.5", ["ratio", "1.5", "at most 1"]),
    ("ratio: 0", ["ratio", "got 0", "expected"]),
    ("group_size: 0", ["group_size", "positive", "-1"]),
    ("'mode: int8_asym, group_size: 64'", ["int8_asym", "group_size: 64", "int4"]),
    ("awq: true", ["calibration", "data"]),
])
def test_bad_nncf_weights_settings_exit_2(write_recipe, setting, says):
    proc = run_cli("validate", str(write_recipe(BAD.replace("SETTING", setting.strip("'")))))
    out = " ".join((proc.stderr + proc.stdout).split())
    assert proc.returncode == 2, out
    assert "recipe.yaml" in out and "Traceback" not in out
    for word in says:
        assert word in out, (word, out)
