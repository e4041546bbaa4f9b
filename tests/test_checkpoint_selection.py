"""Checkpoint selection in the shared training loop: a tie on the dev metric goes to the
later epoch, `select: last` keeps the last epoch, and the kept epoch is printed."""

from __future__ import annotations

import pytest

from tests.conftest import make_rows


@pytest.fixture
def setup(tiny_bert):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = make_rows(16, 1)
    texts = [t for t, _ in rows]
    y = torch.tensor([["sport", "business", "tech"].index(lab) for _, lab in rows])
    return model, tok, texts, y


def train(setup, scores, select):
    from compress.stages.training import train_epochs

    model, tok, texts, y = setup
    seen, logged = {}, []
    calls = iter(scores)

    def evaluate():
        epoch = len(seen) + 1
        seen[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        return "dev_accuracy", next(calls), True

    result = train_epochs(model, tok, texts, lambda b, idx: model(**b, labels=y[idx]).loss,
                          epochs=len(scores), total=100, lr=1e-3, weight_decay=0.0,
                          warmup_ratio=0.0, batch_size=8, max_length=16, seed=0,
                          evaluate=evaluate, log=logged.append, select=select)
    return result, seen, logged, model


def same_weights(model, state) -> bool:
    import torch

    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_tie_goes_to_the_later_epoch_and_is_printed(setup):
    # epochs 1 and 3 tie at the best dev score: the earliest-epoch rule kept epoch 1
    result, seen, logged, model = train(setup, [0.75, 0.5, 0.75, 0.625], "best")
    assert result["best_epoch"] == 3
    assert result["best"] == ("dev_accuracy", 0.75)
    assert same_weights(model, seen[3]) and not same_weights(model, seen[1])
    assert "tied with epoch(s) 1" in result["selection"]
    assert any(line.startswith("kept epoch 3 of 4: best dev_accuracy 0.7500, tied with "
                               "epoch(s) 1: a tie goes to the later epoch") for line in logged)


def test_select_last_keeps_the_last_epoch(setup):
    result, seen, logged, model = train(setup, [0.75, 0.5], "last")
    assert result["best_epoch"] == 2
    assert same_weights(model, seen[2])
    assert "kept epoch 2 of 2: select: last" in logged[-1]


def test_select_is_a_setting_of_every_training_stage():
    from compress.stages.base import get_stage

    for stage, field in (("finetune", "select"), ("distill", "select"),
                         ("prune", "recovery_select")):
        config = get_stage(stage).Config
        assert config.model_fields[field].default == "best"
        with pytest.raises(Exception, match="best|last"):
            config.model_validate({field: "first", **(
                {"keep_layers": [0]} if stage == "distill" else {})})
