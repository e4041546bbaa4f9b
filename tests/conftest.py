"""Shared fixtures: a tiny random BERT built offline, tiny labelled data, recipe writers.

Every test gets its own empty cache dir (COMPRESS_CACHE_DIR), so a cache left by earlier
runs can never hide a broken stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.tiny_assets import (
    TOPICS,
    build_bert,
    recipe_template,
    topic_rows,
    topic_vocab,
    write_csv,
)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
WORDS = TOPICS
make_rows = topic_rows  # (n, seed): n rows of 12 words, the topics in turn


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer, saved like a hub model."""
    return build_bert(tmp_path_factory.mktemp("tiny-bert"), topic_vocab(letters=True),
                      hidden=32, layers=2, intermediate=64, max_positions=128)


def write_splits(folder: Path) -> dict[str, Path]:
    """train/dev/test CSVs of synthetic 3-topic texts (disjoint seeds) in folder."""
    return {split: write_csv(folder / f"{split}.csv", make_rows(n, seed))
            for split, n, seed in (("train", 48, 1), ("dev", 12, 2), ("test", 18, 3))}


@pytest.fixture
def tiny_data(tmp_path) -> dict[str, Path]:
    """train/dev/test CSVs of synthetic 3-topic texts (disjoint seeds)."""
    return write_splits(tmp_path)


SUITE = """\
name: tiny
task: text-classification
dataset: {{source: {test}, text_column: text, label_column: label}}
quality: {{max_length: 32, batch_size: 8}}
latency: {{batch_sizes: [1], seq_lens: [32], warmup: 1, iterations: 3, threads: 1}}
"""

RECIPE = recipe_template("tiny", """\
pipeline:
  - id: teacher
    stage: finetune
    with: {{epochs: 10, batch_size: 8, max_length: 32, lr: 3.0e-3}}
  - id: onnx
    stage: export
  - id: int8
    stage: quantize
    with: {{backend: ort-dynamic-int8}}
candidates: [teacher, onnx, int8]
""")


@pytest.fixture
def write_recipe(tmp_path, tiny_bert, tiny_data):
    """Write suite.yaml and a recipe (default: the tiny 3-candidate one) into tmp_path."""

    def write(text: str | None = None, name: str = "recipe.yaml", **fmt) -> Path:
        (tmp_path / "suite.yaml").write_text(SUITE.format(test=tiny_data["test"]))
        values = {"model": tiny_bert, **{k: v for k, v in tiny_data.items()}, **fmt}
        path = tmp_path / name
        path.write_text(textwrap.dedent(text or RECIPE).format(**values))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout=600):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    """Poll a condition on the filesystem (no fixed sleep stands in for it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (exit {proc.returncode}) before the condition held:"
                                 f" {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to reach the stage")
        time.sleep(0.05)


def kill_run_mid_stage(recipe: Path, out: Path, cache: Path, key: str,
                       *extra: str) -> subprocess.Popen:
    """Start `compress run RECIPE --out OUT EXTRA...` on CACHE, kill it with SIGKILL once
    the stage of cache key KEY has started writing its temp dir, and wait for it to die;
    returns the process."""
    proc = subprocess.Popen([sys.executable, "-m", "compress", "run", str(recipe), "--out",
                             str(out), *extra], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "COMPRESS_CACHE_DIR": str(cache)})
    try:
        wait_for(lambda: any((cache / "tmp").glob(f"{key}-*")), 300, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


# ---------------------------------------------------------------- stage tests (issue 4)

@pytest.fixture(scope="session")
def tiny_bert_cls(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT with a seeded 3-way classification head (labels of WORDS)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-bert-cls")
    names = list(WORDS)
    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama (4 query heads, 2 KV heads; bitsandbytes 4-bit needs
    rows of 64+) with a word-level
    tokenizer built offline and saved as tokenizer.json."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    words = sorted({w for ws in WORDS.values() for w in ws} | set(".,"))
    vocab = {w: i for i, w in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                      max_position_embeddings=128, pad_token_id=0, bos_token_id=2,
                      eos_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def text_frame(n: int = 24, seed: int = 1, labels: bool = True):
    import pandas as pd

    rows = make_rows(n, seed)
    return pd.DataFrame(rows, columns=["text", "label"]) if labels else \
        pd.DataFrame({"text": [r[0] for r in rows]})


def run_stage(stage_name: str, settings: dict, source: Path, out_dir: Path, task: str,
              data: dict | None = None, seed: int = 0):
    """Run one stage as the engine would (parse, check, resolve, run) and write the
    artifact metadata; returns (Artifact, checks). Raises ValueError on a refusal at
    validation, StageError on one at run time."""
    import json

    from compress.artifacts import META_FILE, Artifact, Kind
    from compress.loading import artifact_kind
    from compress.stages.base import StageContext, get_stage

    stage = get_stage(stage_name)
    config = stage.parse_config(settings)
    reason = stage.check(config, task)
    if reason:
        raise ValueError(reason)
    config = stage.resolve(config)
    src_meta = {}
    if (source / META_FILE).is_file():
        src_meta = json.loads((source / META_FILE).read_text())
    src = Artifact(key=source.name, path=source, kind=artifact_kind(source),
                   meta=src_meta or {"key": source.name, "kind": "pytorch"})
    assert src.kind in stage.accepts(config), (src.kind, stage.accepts(config))
    data = data or {}
    ctx = StageContext(task=task, seed=seed, data=data,
                       columns={r: ("text", "label" if "label" in df.columns else None)
                                for r, df in data.items()})
    out_dir.mkdir(parents=True)
    checks = stage.run(ctx, src, config, out_dir)
    kind = stage.produces(config, src.kind)
    meta = {"key": out_dir.name, "kind": kind.value, "stage": stage_name,
            "config": config.model_dump(mode="json"), "checks": checks,
            "properties": stage.properties(config, src.properties)}
    (out_dir / META_FILE).write_text(json.dumps(meta, default=str))
    return Artifact(key=out_dir.name, path=out_dir, kind=Kind(kind), meta=meta), checks


RELOAD = """
import json, sys
import numpy as np
from compress.encoding import Encoder
from compress.loading import load_for_inference
from compress.stages.common import SAMPLE_TEXTS
import torch
out = {}
for path, task in json.loads(sys.argv[1]):
    model = load_for_inference(path, task)
    feeds = Encoder(path)(SAMPLE_TEXTS, 32)
    args = __import__("inspect").signature(model.forward).parameters
    with torch.inference_mode():
        res = model(**{k: torch.from_numpy(v) for k, v in feeds.items() if k in args})
    t = res.logits if hasattr(res, "logits") else res.last_hidden_state
    out[path] = {"out": t.float().numpy().tolist(), "type": type(model).__name__,
                 "params": sum(p.numel() for p in model.parameters())}
print("RESULT" + json.dumps(out))
"""


def reload_outputs(items: list[tuple[Path, str]]) -> dict:
    """Load each (artifact, task) in ONE fresh process through compress.loading and return
    {path: {"out": outputs on SAMPLE_TEXTS, "type": class name, "params": count}}."""
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", RELOAD,
                           json.dumps([[str(p), t] for p, t in items])],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [x for x in proc.stderr.splitlines() if "Failed to load" in x or "pytree" in x]
    assert not noise, noise  # torchao/bitsandbytes import noise is silenced
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def inproc_outputs(path: Path, task: str):
    """The same outputs as reload_outputs, in this process."""
    import inspect

    import torch

    from compress.encoding import Encoder
    from compress.loading import load_for_inference
    from compress.stages.common import SAMPLE_TEXTS

    model = load_for_inference(path, task)
    feeds = Encoder(path)(SAMPLE_TEXTS, 32)
    args = inspect.signature(model.forward).parameters
    with torch.inference_mode():
        res = model(**{k: torch.from_numpy(v) for k, v in feeds.items() if k in args})
    t = res.logits if hasattr(res, "logits") else res.last_hidden_state
    return model, t.float().numpy()


# ---------------------------------------------------------------- a tiny real run

@pytest.fixture(scope="session")
def tiny_run(tiny_bert, tmp_path_factory):
    """One tiny real run (teacher, ONNX, ORT INT8) shared by the tests that only read it
    (the run is the slow part)."""
    tmp = tmp_path_factory.mktemp("tiny-run")
    data = write_splits(tmp)
    (tmp / "suite.yaml").write_text(SUITE.format(test=data["test"]))
    recipe = tmp / "recipe.yaml"
    recipe.write_text(textwrap.dedent(RECIPE).format(model=tiny_bert, **data))
    from compress.engine import run_recipe

    run = run_recipe(recipe, out_dir=tmp / "run", cache_dir=tmp / "cache")
    assert run.ok
    return tmp / "run"


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run's directory (its artifacts stay in the shared cache),
    for tests that write into it (recommendation.json)."""
    import shutil

    dest = tmp_path / "run"
    shutil.copytree(tiny_run, dest)
    (dest / "recommendation.json").unlink(missing_ok=True)
    return dest


def check_quality_from_units(run_dir: Path, table) -> None:
    """Each candidate's accuracy and macro-F1 (the summary `table`, indexed by candidate)
    equal what its own stored predictions give against the gold labels
    (quality_units.json): a figure in [0, 1] that is not the model's would fail here."""
    import json

    from sklearn.metrics import f1_score

    units = json.loads((Path(run_dir) / "quality_units.json").read_text())
    gold = units["shared"]["gold"]
    assert set(units["candidates"]) == set(table.index)
    for cand, u in units["candidates"].items():
        assert len(u["pred"]) == len(gold)
        acc = sum(p == g for p, g in zip(u["pred"], gold, strict=True)) / len(gold)
        assert table.loc[cand, "accuracy"] == pytest.approx(acc), cand
        f1 = f1_score(gold, u["pred"], average="macro", labels=sorted(set(gold)))
        assert table.loc[cand, "macro_f1"] == pytest.approx(f1), cand
