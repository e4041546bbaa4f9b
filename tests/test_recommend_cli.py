"""End to end: a tiny real run (teacher, ONNX export, ORT dynamic INT8), then `compress
recommend` through the console entry point, as a user runs it."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest

from compress.engine import run_recipe
from tests.conftest import RECIPE, SUITE, make_rows, run_cli


@pytest.fixture(scope="module")
def tiny_run(tiny_bert, tmp_path_factory):
    """One tiny run shared by the tests of this module (the run is the slow part)."""
    tmp = tmp_path_factory.mktemp("recommend")
    data = {}
    for split, n, seed in (("train", 48, 1), ("dev", 12, 2), ("test", 18, 3)):
        data[split] = tmp / f"{split}.csv"
        pd.DataFrame(make_rows(n, seed), columns=["text", "label"]).to_csv(data[split],
                                                                           index=False)
    (tmp / "suite.yaml").write_text(SUITE.format(test=data["test"]))
    recipe = tmp / "recipe.yaml"
    recipe.write_text(textwrap.dedent(RECIPE).format(model=tiny_bert, **data))
    run = run_recipe(recipe, out_dir=tmp / "run", cache_dir=tmp / "cache")
    assert run.ok
    return tmp / "run"


def test_recommend_cli_prints_the_winner(tiny_run, tmp_path):
    # quality: anything within 1.0 of the baseline; latency: generous; per-1k ranking
    r = run_cli("recommend", str(tiny_run), "--max-drop", "1.0", "--max-latency-ms", "1000",
                "--target", "local-cpu", "--target", "T4", "--target", "A100-80GB",
                env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Recommended" in out and "per 1k" in out
    assert "Pareto frontier" in out
    assert "calibration: none (published default efficiencies)" in out
    # the JSON form names the same winner, a real candidate on one of the asked targets
    j = run_cli("recommend", str(tiny_run), "--max-drop", "1.0", "--max-latency-ms", "1000",
                "--target", "local-cpu", "--target", "T4", "--target", "A100-80GB",
                "--format", "json", env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")},
                timeout=120)
    assert j.returncode == 0, j.stderr
    win = json.loads(j.stdout)["winner"]
    assert win["candidate"] in {"teacher", "onnx", "int8"}
    assert win["target"] in {"local-cpu", "T4", "A100-80GB"}
    assert f"Recommended: {win['candidate']} on {win['target']} via {win['runtime']}" in out
    # an impossible quality target: nothing qualifies, said plainly, still exit 0
    n = run_cli("recommend", str(tiny_run), "--max-drop", "-1", "--target", "T4",
                env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}, timeout=120)
    assert n.returncode == 0, n.stderr
    assert "Nothing meets the targets." in n.stdout


def test_recommend_all_marks_measured_and_projected(tiny_run, tmp_path):
    r = run_cli("recommend", str(tiny_run), "--max-drop", "1.0", "--all",
                "--target", "local-cpu", "--target", "T4", "--target", "A100-80GB",
                "--format", "json", env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")},
                timeout=120)
    assert r.returncode == 0, r.stderr
    opts = pd.DataFrame(json.loads(r.stdout)["options"])
    local = opts[opts["target"] == "local-cpu"]
    gpus = opts[(opts["target"] != "local-cpu") & (opts["status"] != "unsupported")]
    assert len(local) and set(local["provenance"]) == {"measured"}
    assert len(gpus) and set(gpus["provenance"]) == {"projected"}
    # --all lists the refused pairs with their reason: dynamic INT8 has no fast GPU path
    refused = opts[(opts["candidate"] == "int8") & (opts["target"] == "T4")]
    assert set(refused["status"]) == {"unsupported"}
    assert refused["reason"].str.len().min() > 0
    # the table form labels the figures column and says what measured/projected mean
    t = run_cli("recommend", str(tiny_run), "--max-drop", "1.0", "--all",
                "--target", "local-cpu", "--target", "T4",
                env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}, timeout=120)
    assert t.returncode == 0, t.stderr
    assert "measured" in t.stdout and "projected" in t.stdout and "unsupported" in t.stdout
    assert "every other latency, throughput and cost figure is projected" in t.stdout
