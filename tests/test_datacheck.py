"""Data validity at plan time: each kind of bad data is refused by `compress validate` with
exit 2, naming the file, the column and the first offending rows."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from compress.engine import prepare
from compress.errors import InputError
from tests.conftest import RECIPE, run_cli


def refused(path, *needles) -> str:
    with pytest.raises(InputError) as info:
        prepare(path)
    msg = str(info.value)
    for n in needles:
        assert n in msg, msg
    return msg


def test_the_trial_case_eval_labels_the_baseline_does_not_know(write_recipe, tiny_data):
    # the eval split labelled positive/negative, the model trained on pos/neg: every
    # example would score wrong and the run would report accuracy 0.000, status ok
    pd.DataFrame({"text": ["good film", "bad film", "fine film", "awful film"] * 3,
                  "label": ["pos", "neg"] * 6}).to_csv(tiny_data["train"], index=False)
    pd.DataFrame({"text": ["good", "bad"] * 3,
                  "label": ["pos", "neg"] * 3}).to_csv(tiny_data["dev"], index=False)
    pd.DataFrame({"text": ["great", "poor", "nice"],
                  "label": ["positive", "negative", "positive"]}).to_csv(tiny_data["test"],
                                                                          index=False)
    path = write_recipe()
    refused(path, str(tiny_data["test"]), "'label'", "'negative', 'positive'",
            "'neg', 'pos'", "rows 1, 2, 3", "training labels of finetune step 'teacher'")
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'negative', 'positive'" in proc.stderr and "'neg', 'pos'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_finetune_the_labels_come_from_the_model_config(write_recipe, tiny_bert_cls,
                                                                  tiny_data):
    recipe = RECIPE.replace("model: {model}", f"model: {tiny_bert_cls}").replace(
        """  - id: teacher
    stage: finetune
    with: {{epochs: 10, batch_size: 8, max_length: 32, lr: 3.0e-3}}
  - id: onnx
    stage: export""", """  - id: onnx
    stage: export""").replace("candidates: [teacher, onnx, int8]", "candidates: [onnx, int8]")
    df = pd.read_csv(tiny_data["test"])
    df.loc[4, "label"] = "weather"
    df.to_csv(tiny_data["test"], index=False)
    refused(write_recipe(recipe), "'weather'", "id2label", "'business', 'sport', 'tech'",
            "row 5 ")


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_or_empty_labels(write_recipe, tiny_data, split):
    df = pd.read_csv(tiny_data[split])
    df.loc[2, "label"] = None
    df.loc[6, "label"] = " "
    df.to_csv(tiny_data[split], index=False)
    refused(write_recipe(), str(tiny_data[split]), "'label'", "2 empty or missing label(s)",
            "rows 3, 7")


@pytest.mark.parametrize("split", ["dev", "test"])
def test_missing_or_empty_texts(write_recipe, tiny_data, split):
    df = pd.read_csv(tiny_data[split])
    df["text"] = df["text"].astype(object)
    df.loc[0, "text"] = ""
    df.to_csv(tiny_data[split], index=False)
    refused(write_recipe(), str(tiny_data[split]), "'text'", "empty or missing text",
            "row 1 ")


def test_label_type_differs_between_train_and_eval(write_recipe, tiny_data):
    for split, cast in (("train", int), ("dev", int), ("test", float)):
        df = pd.read_csv(tiny_data[split])
        df["label"] = df["label"].map({"sport": 0, "business": 1, "tech": 2}).astype(cast)
        df.to_csv(tiny_data[split], index=False)
    msg = refused(write_recipe(), "integer labels", "float labels", "'0.0'")
    assert str(tiny_data["train"]) in msg and str(tiny_data["test"]) in msg


def test_non_utf8_file_names_the_likely_encoding(write_recipe, tiny_data):
    text = pd.read_csv(tiny_data["test"]).to_csv(index=False)
    text = text.replace("goal", "café au lait goal", 1)
    tiny_data["test"].write_bytes(text.encode("cp1252"))
    msg = refused(write_recipe(), str(tiny_data["test"]), "not UTF-8", "byte 0xe9")
    # one accented byte is 'é' in every Western/Central European code page: any is right
    assert re.search(r"looks like (cp125\d|latin|iso-8859)", msg.lower()), msg
    assert "iconv -f" in msg


PAIRS_SUITE = """\
name: pairs
task: feature-extraction
dataset: {source: pairs.csv, text_column: text, text_pair_column: text_pair,
          score_column: score, label_column: null}
"""
PAIRS_RECIPE = """\
name: pairs
task: feature-extraction
model: MODEL
suite: suite.yaml
pipeline:
  - id: onnx
    stage: export
"""


def test_non_numeric_score_column(tmp_path, tiny_bert):
    pd.DataFrame({"text": ["a cat", "a dog", "a car", "a bus"],
                  "text_pair": ["a cow", "a pig", "a van", "a tram"],
                  "score": ["0.5", "high", "0.1", "0.9"]}).to_csv(tmp_path / "pairs.csv",
                                                                   index=False)
    (tmp_path / "suite.yaml").write_text(PAIRS_SUITE)
    path = tmp_path / "recipe.yaml"
    path.write_text(PAIRS_RECIPE.replace("MODEL", str(tiny_bert)))
    refused(path, str(tmp_path / "pairs.csv"), "'score'", "must hold numbers", "'high'",
            "row 2 ")
