"""The demo recipe end to end on the real bundled MiniLM and BBC News, with small settings."""

from __future__ import annotations

import pytest

from compress.engine import run_recipe
from tests.conftest import ROOT

SMALL = [
    "data.train.limit=160", "data.dev.limit=40", "pipeline.teacher.with.max_length=64",
    "pipeline.teacher.with.lr=2.0e-4", "pipeline.teacher.with.epochs=3",
    "suite.dataset.limit=60", "suite.latency.iterations=10",
    "suite.quality.max_length=64",
]


@pytest.mark.slow
def test_demo_recipe_small(tmp_path):
    run = run_recipe(ROOT / "recipes" / "demo-bbc-news.yaml", out_dir=tmp_path / "run",
                     overrides=SMALL)
    assert run.ok, run.summary()[["candidate", "error"]]
    t = run.summary().set_index("candidate")
    assert list(t.index) == ["teacher", "onnx", "int8"]
    assert (t["n_eval"] == 60).all()
    # 160 training articles are enough to beat chance (0.2) by far
    assert t.loc["teacher", "accuracy"] > 0.6
    # the ONNX export is the same network; INT8 is about a quarter of its size
    assert abs(t.loc["onnx", "accuracy"] - t.loc["teacher", "accuracy"]) <= 2 / 60
    assert t.loc["int8", "size_mb"] < 0.35 * t.loc["onnx", "size_mb"]
    assert t.loc["int8", "accuracy"] > 0.5
    # ONNX Runtime runners do not import torch: their peak memory is far below PyTorch's
    assert t.loc["onnx", "peak_rss_mb"] < t.loc["teacher", "peak_rss_mb"]
    # and the inference-memory delta shows the model's own cost: INT8 well below fp32
    assert t.loc["int8", "mem_delta_mb"] < 0.75 * t.loc["onnx", "mem_delta_mb"]
    assert t.loc["onnx", "top1_agreement"] >= 0.98
    assert set(t["backend"]) == {"pytorch", "onnxruntime"}
