"""distill: students by layer selection or smaller config, for the three tasks; seeded
runs reproduce exactly; the student reloads with plain from_pretrained."""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import reload_outputs, run_stage, text_frame


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_classification_student_keeps_best_epoch_and_is_reproducible(tiny_bert_cls, tmp_path):
    from compress.models import load_pytorch

    data = {"train": text_frame(24, seed=1), "dev": text_frame(9, seed=2)}
    settings = {"keep_layers": [1], "epochs": 2, "batch_size": 8, "alpha": 0.5,
                "temperature": 2.0, "hidden_mse": 0.1, "lr": 1e-3, "max_length": 32}
    art, checks = run_stage("distill", settings, tiny_bert_cls, tmp_path / "a",
                            "text-classification", data=data, seed=3)
    assert art.kind.value == "pytorch"
    assert checks["student_layers"] == 1 and checks["layer_map"] == [1]
    assert checks["student_params"] < checks["teacher_params"]
    assert len(checks["history"]) == 2 and "dev_accuracy" in checks["history"][0]
    assert checks["best_dev_accuracy"] == max(h["dev_accuracy"] for h in checks["history"])
    # a plain HF model: from_pretrained reloads it with the new depth
    model = load_pytorch(art.path, "text-classification")
    assert model.config.num_hidden_layers == 1 and len(model.bert.encoder.layer) == 1
    # the student starts from the teacher's layer 1, then trains: weights differ from it
    again, _ = run_stage("distill", settings, tiny_bert_cls, tmp_path / "b",
                         "text-classification", data=data, seed=3)
    assert _digest(art.path) == _digest(again.path)  # seeded: identical on CPU
    other, _ = run_stage("distill", settings, tiny_bert_cls, tmp_path / "c",
                         "text-classification", data=data, seed=4)
    assert _digest(art.path) != _digest(other.path)


def test_causal_lm_student_every_k_generates(tiny_llama, tmp_path):
    import torch

    from compress.loading import load_for_inference

    data = {"train": text_frame(16, labels=False), "dev": text_frame(6, seed=2, labels=False)}
    art, checks = run_stage("distill", {"every_k": 2, "max_steps": 3, "batch_size": 8,
                                        "alpha": 0.7, "max_length": 32},
                            tiny_llama, tmp_path / "s", "causal-lm", data=data)
    assert checks["student_layers"] == 1 and checks["steps"] == 3
    assert checks["best_dev_loss"] > 0
    model = load_for_inference(art.path, "causal-lm")
    assert model.model.layers[0].self_attn.layer_idx == 0
    out = model.generate(torch.tensor([[4, 5, 6]]), max_new_tokens=3, do_sample=False,
                         pad_token_id=0)
    assert out.shape == (1, 6)  # the KV cache works with the renumbered layers


def test_embedding_student_from_smaller_config(tiny_bert, tmp_path):
    data = {"train": text_frame(16, labels=False), "dev": text_frame(6, seed=2, labels=False)}
    art, checks = run_stage("distill", {"student_config": {"num_hidden_layers": 1,
                                                           "intermediate_size": 32},
                                        "embedding_loss": "mse", "max_steps": 2,
                                        "batch_size": 8, "max_length": 32},
                            tiny_bert, tmp_path / "s", "feature-extraction", data=data)
    assert checks["student_layers"] == 1
    # the reported dev cosine is the saved student's: recomputed here from the artifact and
    # the teacher on the dev texts (mean-pooled embeddings, as the stage pools them)
    import torch
    from transformers import AutoModel, AutoTokenizer

    from compress.models import mean_pool

    tok = AutoTokenizer.from_pretrained(art.path)
    batch = tok(list(data["dev"]["text"]), truncation=True, max_length=32, padding=True,
                return_tensors="pt")
    with torch.inference_mode():
        s, t = (mean_pool(AutoModel.from_pretrained(p).eval()(**batch).last_hidden_state,
                          batch["attention_mask"]) for p in (art.path, tiny_bert))
    cos = torch.nn.functional.cosine_similarity(s, t, dim=-1).mean().item()
    assert checks["best_dev_cosine"] == pytest.approx(cos, abs=1e-5)
    fresh = reload_outputs([(art.path, "feature-extraction")])[str(art.path)]
    assert fresh["type"] == "BertModel" and fresh["params"] == checks["student_params"]


def test_distill_refusals(tiny_bert_cls, tmp_path):
    from pydantic import ValidationError

    from compress.errors import StageError
    from compress.stages.base import get_stage

    stage = get_stage("distill")
    with pytest.raises(ValidationError, match="exactly one of keep_layers, every_k"):
        stage.parse_config({"keep_layers": [0], "every_k": 2})
    with pytest.raises(ValidationError, match="increasing order"):
        stage.parse_config({"keep_layers": [2, 0]})
    with pytest.raises(ValidationError, match="hidden_size"):
        stage.parse_config({"student_config": {"hidden_size": 16}, "hidden_mse": 1.0})
    with pytest.raises(StageError, match="index 5 out of range"):
        run_stage("distill", {"keep_layers": [5]}, tiny_bert_cls, tmp_path / "x",
                  "text-classification", data={"train": text_frame(8)})
    with pytest.raises(StageError, match="needs labels"):
        run_stage("distill", {"keep_layers": [0], "alpha": 0.5}, tiny_bert_cls, tmp_path / "y",
                  "text-classification", data={"train": text_frame(8, labels=False)})
