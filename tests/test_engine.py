"""End-to-end runs on a tiny random BERT: cache behaviour, run directory, failures, pruning."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from compress.artifacts import META_FILE
from compress.engine import run_recipe
from compress.results import load_run
from compress.store import Store
from tests.conftest import RECIPE, ROOT, check_quality_from_units, run_cli
from tests.test_plan import SWEPT


def test_tiny_run_writes_run_dir_and_table(write_recipe, tmp_path):
    run = run_recipe(write_recipe(), out_dir=tmp_path / "run")
    assert run.ok
    table = run.summary()
    assert list(table["candidate"]) == ["teacher", "onnx", "int8"]
    assert set(table["kind"]) == {"pytorch", "onnx", "onnx-quantized"}
    assert (table["latency_p50_ms"] > 0).all()
    assert (table["latency_p95_ms"] >= table["latency_p50_ms"]).all()
    assert (table["n_eval"] == 18).all()
    # the figures are the models' own (recomputed from the stored predictions), and the
    # teacher learned the three topics: its interval lies above chance (1/3)
    check_quality_from_units(run.path, table.set_index("candidate"))
    assert table.set_index("candidate").loc["teacher", "accuracy_low"] > 1 / 3
    # fidelity against the baseline (the teacher): the ONNX export is the same network
    fid = table.set_index("candidate")
    assert pd.isna(fid.loc["teacher", "top1_agreement"])  # the baseline is not compared
    assert fid.loc["onnx", "top1_agreement"] == 1.0
    assert 0 <= fid.loc["onnx", "kl_divergence"] < 1e-6
    assert 0 <= fid.loc["int8", "kl_divergence"]
    assert (fid["mem_delta_mb"] > 0).all()
    # the tidy table: one row per figure, each with its provenance
    tidy = run.table()
    assert {"candidate", "metric", "value", "unit", "provenance", "device", "backend",
            "threads", "batch_size", "seq_len", "versions", "timestamp"} <= set(tidy.columns)
    assert set(tidy["provenance"]) == {"measured"}
    p50 = tidy[(tidy.metric == "latency_p50") & (tidy.candidate == "int8")]
    assert len(p50) == 1 and p50.iloc[0]["batch_size"] == 1 and p50.iloc[0]["seq_len"] == 32
    assert p50.iloc[0]["value"] == fid.loc["int8", "latency_p50_ms"]
    assert set(tidy[tidy.metric.str.startswith("f1[")]["metric"]) == {
        "f1[business]", "f1[sport]", "f1[tech]"}
    assert pd.read_parquet(tmp_path / "run" / "measurements.parquet").shape == tidy.shape
    sizes = dict(zip(table["candidate"], table["size_mb"], strict=True))
    assert sizes["int8"] < sizes["onnx"]
    # ONNX fp32 is the same network: it must predict like PyTorch
    acc = dict(zip(table["candidate"], table["accuracy"], strict=True))
    assert acc["onnx"] == pytest.approx(acc["teacher"], abs=1 / 18 + 1e-9)
    # run directory: manifest, JSON and CSV results
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["recipe"]["given"].startswith("name: tiny")
    assert manifest["recipe"]["resolved"]["pipeline"][2]["with"]["backend"] == "ort-dynamic-int8"
    assert manifest["versions"]["torch"] and manifest["seed"] == 0
    assert [c["name"] for c in manifest["plan"]["candidates"]] == ["teacher", "onnx", "int8"]
    csv = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(csv["candidate"]) == ["teacher", "onnx", "int8"]
    assert load_run(tmp_path / "run").summary().shape == table.shape
    # the export check lands in the artifact metadata
    onnx_dir = tmp_path / "cache" / "artifacts" / table.loc[1, "artifact_key"]
    onnx_meta = json.loads((onnx_dir / META_FILE).read_text())
    assert onnx_meta["checks"]["max_abs_diff"] <= onnx_meta["checks"]["atol"]
    assert onnx_meta["parent"] == table.loc[0, "artifact_key"]
    # the quantize backend's catalog format is in its artifact's metadata; the projection
    # reads it there
    q_dir = tmp_path / "cache" / "artifacts" / table.loc[2, "artifact_key"]
    assert json.loads((q_dir / META_FILE).read_text())["format"] == "int8-dynamic-ort"
    assert onnx_meta["format"] is None
    from compress.hardware.formats import inspect_artifact

    assert inspect_artifact(q_dir, "onnx-quantized").format == "int8-dynamic-ort"


def test_shared_prefix_runs_once_and_second_run_executes_nothing(write_recipe, tmp_path):
    path = write_recipe(SWEPT.replace("sweep: {{epochs: [1, 2], lr: [1.0e-3]}}",
                                      "with: {{epochs: 1}}").replace(
        "with: {{batch_size: 8, max_length: 32}}\n    with:", "with:"))
    first = run_recipe(path, out_dir=tmp_path / "r1")
    # finetune 1 + export 1 + quantize 2: the teacher and its export are shared
    assert first.stats["stage_executions"] == 4
    assert first.stats["measurements"] == 4
    second = run_recipe(path, out_dir=tmp_path / "r2")
    assert second.stats["stage_executions"] == 0 and second.stats["measurements"] == 0
    assert second.stats["stage_cache_hits"] == 4
    assert second.stats["measurement_cache_hits"] == 4
    assert second.summary()["accuracy"].tolist() == first.summary()["accuracy"].tolist()
    third = run_recipe(path, out_dir=tmp_path / "r3", overrides=["pipeline.int8.with.isa=avx2"])
    from compress.stages.quantize import detect_isa

    # `isa: auto` resolves before keying: naming what auto detected rebuilds nothing, naming
    # another ISA rebuilds both quantize variants
    assert third.stats["stage_executions"] == (0 if detect_isa() == "avx2" else 2)
    forced = run_recipe(path, out_dir=tmp_path / "r4", force=True)
    assert forced.stats["stage_executions"] == 4 and forced.stats["measurements"] == 4
    remeasured = run_recipe(path, out_dir=tmp_path / "r5", remeasure=True)
    assert remeasured.stats["stage_executions"] == 0 and remeasured.stats["measurements"] == 4


def test_a_failing_candidate_does_not_stop_the_others(write_recipe, tmp_path, monkeypatch):
    # tests/boom_stage.py registers a stage that always fails, as a plugin would
    monkeypatch.setenv("COMPRESS_PLUGINS", "tests.boom_stage")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    path = write_recipe(RECIPE.replace(
        "  - id: int8", "  - id: broken\n    stage: boom\n    input: teacher\n"
                        "  - id: after\n    stage: export\n  - id: int8").replace(
        "stage: quantize", "stage: quantize\n    input: onnx").replace(
        "[teacher, onnx, int8]", "[teacher, onnx, broken, after, int8]"))
    run = run_recipe(path, out_dir=tmp_path / "run")
    rows = run.summary().set_index("candidate")
    assert not run.ok and run.stats["failures"] == 2
    assert rows.loc["broken", "status"] == "failed"
    assert "exploded on purpose" in rows.loc["broken", "error"]
    assert rows.loc["after", "error"] == "input 'broken' failed"
    assert (rows.loc[["teacher", "onnx", "int8"], "status"] == "ok").all()
    # nothing of the failed stage entered the store
    store = Store(tmp_path / "cache")
    assert all((p / META_FILE).is_file() for p in (store.root / "artifacts").iterdir())
    assert not list((store.root / "tmp").iterdir())
    proc = run_cli("run", str(path), "--out", str(tmp_path / "cli-run"))
    assert proc.returncode == 1, proc.stderr
    assert "2 candidate(s) failed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_run_show_validate_plan_and_cache(write_recipe, tmp_path):
    path = write_recipe()
    proc = run_cli("validate", str(path), "--plan")
    assert proc.returncode == 0, proc.stderr
    assert "teacher (to build) → onnx (to build) → int8 (to build)" in proc.stdout
    proc = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--set", "seed=1")
    assert proc.returncode == 0, proc.stderr
    assert "stages built: 3" in proc.stdout and "teacher *" in proc.stdout
    proc = run_cli("validate", str(path), "--plan", "--set", "seed=1")
    assert "teacher (cached) → onnx (cached) → int8 (cached)" in proc.stdout
    proc = run_cli("show", str(tmp_path / "run"), "--format", "json")
    assert proc.returncode == 0
    assert [r["candidate"] for r in json.loads(proc.stdout)] == ["teacher", "onnx", "int8"]
    proc = run_cli("show", str(tmp_path / "run"), "--format", "csv")
    assert proc.stdout.startswith("candidate,")
    proc = run_cli("show", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    proc = run_cli("cache")
    assert "artifacts: 3" in proc.stdout and "runs referring to it: 1" in proc.stdout


def test_prune_keeps_what_kept_runs_refer_to(write_recipe, tmp_path):
    import shutil

    path = write_recipe()
    old = run_recipe(path, out_dir=tmp_path / "old")
    new = run_recipe(path, out_dir=tmp_path / "new",
                     overrides=["pipeline.int8.with.per_channel=true"])
    store = Store(tmp_path / "cache")
    assert store.usage()["artifacts"] == 4
    result = store.prune()
    assert result["artifacts_removed"] == 0  # both runs still exist
    shutil.rmtree(tmp_path / "old")
    result = store.prune()
    assert result["artifacts_removed"] == 1  # only the old int8 was the old run's alone
    kept = {p.name for p in (store.root / "artifacts").iterdir()}
    assert set(new.summary()["artifact_key"]) <= kept
    assert old.summary().set_index("candidate").loc["int8", "artifact_key"] not in kept
    again = run_recipe(path, out_dir=tmp_path / "again",
                       overrides=["pipeline.int8.with.per_channel=true"])
    assert again.stats["stage_executions"] == 0 and again.stats["measurements"] == 0
