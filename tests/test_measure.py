"""Runners and the measurement worker: perplexity on a tiny decoder against a hand
computation, ONNX Runtime with a KV cache, error propagation, provider fallback, CUDA."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from compress.encoding import Encoder
from compress.errors import MeasureError
from compress.measure import worker
from compress.measure.runner import run_worker
from compress.measure.runners import OrtRunner, TorchRunner

WORDS = "the a cat dog sat ran on under mat rug and then it was big small red blue".split()
TEXTS = ["the cat sat on the mat and then it ran", "a dog was under the red rug",
         "the big blue cat and a small dog sat on a rug"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 2-layer random Llama with a word-level tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[EOS]")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=128, pad_token_id=0, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def causal_request(**quality):
    return {"texts": TEXTS, "quality": {"max_length": 256, "stride": None, "max_tokens": None,
                                        "batch_size": 1, **quality},
            "fidelity": {"top_k": 5}, "quality_metrics": ["perplexity", "next_token_accuracy"],
            "fidelity_metrics": ["top1_agreement", "kl_divergence"]}


def hand_nll(model, ids: list[int], windows) -> tuple[float, int]:
    """Sum of -log p(token) for the tokens each (begin, end, first) window scores."""
    total, count = 0.0, 0
    for begin, end, first in windows:
        x = torch.tensor([ids[begin:end]])
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0].double(), -1)
        for j in range(first, end):
            total -= logp[j - 1 - begin, ids[j]].item()
            count += 1
    return total, count


def test_perplexity_matches_hand_computation(tiny_llama):
    runner = TorchRunner(str(tiny_llama), "causal-lm", 1, "cpu")
    encoder = Encoder(tiny_llama)
    ids = encoder.ids("\n\n".join(TEXTS))
    n = len(ids)
    assert n > 20
    # one window over the whole text: plain cross-entropy of the shifted sequence
    figures, _, _ = worker.causal_lm(runner, encoder, causal_request())
    total, count = hand_nll(runner.model, ids, [(0, n, 1)])
    assert figures["scored_tokens"] == count == n - 1
    assert figures["perplexity"] == pytest.approx(np.exp(total / count), rel=1e-5)
    # sliding windows of 8 tokens, stride 4: written out by hand
    figures, _, _ = worker.causal_lm(runner, encoder, causal_request(max_length=8, stride=4))
    windows = [(0, 8, 1)] + [(b, min(b + 8, n), b + 4) for b in range(4, n - 4, 4)]
    total, count = hand_nll(runner.model, ids, windows)
    assert figures["scored_tokens"] == count == n - 1
    assert figures["perplexity"] == pytest.approx(np.exp(total / count), rel=1e-5)


def test_onnx_with_kv_cache_matches_pytorch_and_decodes(tiny_llama, tmp_path):
    from optimum.exporters.onnx import main_export

    onnx_dir = tmp_path / "onnx"
    main_export(str(tiny_llama), onnx_dir, task="text-generation-with-past", do_validation=False)
    shutil.copy(tiny_llama / "tokenizer.json", onnx_dir / "tokenizer.json")
    ort = OrtRunner(str(onnx_dir), 1, ["CPUExecutionProvider"])
    assert ort.model.past_inputs  # exported with a KV cache
    pt = TorchRunner(str(tiny_llama), "causal-lm", 1, "cpu")
    enc = Encoder(tiny_llama)
    req = causal_request(max_length=8, stride=4)
    pt_fig, _, ref = worker.causal_lm(pt, enc, req)
    np.savez(tmp_path / "ref.npz", **ref)
    ort_fig, fid, _ = worker.causal_lm(ort, enc, {**req, "reference_outputs":
                                                  str(tmp_path / "ref.npz")})
    assert ort_fig["perplexity"] == pytest.approx(pt_fig["perplexity"], rel=1e-4)
    assert fid["top1_agreement"] == 1.0 and fid["kl_divergence"] < 1e-6
    # prefill then decode with the cache gives the logits of a full recompute
    feeds = enc(["the cat sat on the"], 5)
    logits, past = ort.prefill(feeds)
    nxt = np.array([[enc.ids("mat")[0]]])
    mask = np.ones((1, 6), dtype=np.int64)
    step, _ = ort.decode(nxt, mask, past)
    full = ort({"input_ids": np.concatenate([feeds["input_ids"], nxt], 1),
                "attention_mask": mask})
    assert np.allclose(step[0, -1], full[0, -1], atol=1e-4)
    records = worker.latency(ort, enc, "causal-lm", TEXTS, {
        "batch_sizes": [1], "seq_lens": [6], "gen_tokens": 3, "warmup": 1, "iterations": 3,
        "min_time_s": 0, "noisy_spread": 0.25})
    assert [r["phase"] for r in records] == ["prefill", "decode"]
    assert records[0]["iterations"] == 3 and records[1]["iterations"] == 9
    assert records[1]["throughput_unit"] == "tokens/s" and records[1]["throughput"] > 0


def test_a_broken_artifact_fails_clearly(tiny_bert, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    request = {"artifact": str(broken), "kind": "onnx", "task": "text-classification",
               "texts": ["a"], "labels": ["x"], "latency": {"threads": 1, "device": "cpu",
                                                           "providers": None}}
    with pytest.raises(MeasureError, match=r"model\.onnx"):
        run_worker(request, threads=1, timeout_s=120)


def test_provider_fallback_is_flagged_not_reported_as_cuda(write_recipe, tmp_path):
    from compress.engine import run_recipe

    run = run_recipe(write_recipe(), out_dir=tmp_path / "run",
                     overrides=["suite.latency.device=cuda"])
    s = run.summary().set_index("candidate")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nothing falls back")
    # ORT was asked for CUDAExecutionProvider and PyTorch for cuda: both ran on the CPU
    assert s["fell_back"].all()
    assert set(s["device"]) == {"cpu"}
    assert s.loc["onnx", "providers"] == "CPUExecutionProvider"
    tidy = run.table()
    assert set(tidy["device"]) == {"cpu"} and tidy["fell_back"].all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pytorch_cuda_runner(tiny_bert):
    runner = TorchRunner(str(tiny_bert), "feature-extraction", 1, "cuda")
    assert runner.device == "cuda" and not runner.fell_back
    enc = Encoder(tiny_bert)
    records = worker.latency(runner, enc, "feature-extraction", ["a cat"], {
        "batch_sizes": [1, 4], "seq_lens": [16], "warmup": 2, "iterations": 5,
        "min_time_s": 0, "noisy_spread": 0.25})
    assert len(records) == 2 and all(r["p50_ms"] > 0 for r in records)
    mem = runner.cuda_memory()
    assert mem["cuda_peak_allocated_bytes"] > 0
    assert torch.cuda.get_device_name() in runner.device_name


EXACT_METRIC = '''
import datasets
import evaluate


class Exact(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of exact matches", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        hits = sum(p == r for p, r in zip(predictions, references))
        return {"exact": hits / len(references)}
'''


def test_a_local_evaluate_module_is_used(tiny_bert, tmp_path):
    from compress.suite import load_suite

    (tmp_path / "exact.py").write_text(EXACT_METRIC)
    (tmp_path / "suite.yaml").write_text(
        "name: s\ntask: text-classification\n"
        "dataset: {source: x.csv, text_column: text, label_column: label}\n"
        "quality: {evaluate_module: ./exact.py, batch_size: 4, max_length: 16}\n")
    suite, _ = load_suite(tmp_path / "suite.yaml")
    assert suite.quality.evaluate_module == str((tmp_path / "exact.py").resolve())
    runner = TorchRunner(str(tiny_bert), "text-classification", 1, "cpu")
    gold = ["LABEL_0", "LABEL_1", "LABEL_0", "LABEL_1", "LABEL_1"]
    req = {"artifact": str(tiny_bert), "texts": ["goal", "bank", "phone", "cup win", "app"],
           "labels": gold, "quality": suite.quality.model_dump(),
           "latency": suite.latency.model_dump(),
           "quality_metrics": ["accuracy"], "fidelity_metrics": []}
    _, _, outputs = worker.classification(runner, Encoder(tiny_bert), req)
    assert outputs["logits"].shape == (5, 2)
    # gold = the model's own predictions with the first one flipped: accuracy is 4/5
    import json

    id2label = json.loads((tiny_bert / "config.json").read_text()).get("id2label") or {}
    pred = [id2label.get(str(i), str(i)) for i in outputs["logits"].argmax(-1)]
    names = sorted({id2label.get(str(i), str(i)) for i in (0, 1)})
    req["labels"] = [names[1] if pred[0] == names[0] else names[0]] + pred[1:]
    figures, _, _ = worker.classification(runner, Encoder(tiny_bert), req)
    assert figures["accuracy"] == pytest.approx(0.8)
    assert figures["evaluate:exact"] == pytest.approx(0.8)
    (tmp_path / "suite.yaml").write_text((tmp_path / "suite.yaml").read_text().replace(
        "./exact.py", "./missing.py"))
    from compress.errors import RecipeError

    with pytest.raises(RecipeError, match=r"suite\.yaml:4: quality\.evaluate_module: file not "
                                          r"found: \./missing\.py"):
        load_suite(tmp_path / "suite.yaml")
