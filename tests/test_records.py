"""Typed records and schema versions: files written by the compress of 2026-11-29 (before
versions existed; frozen in tests/fixtures/pre-schema) still read, the same way; new files
carry schema_version; a file of an unsupported version is refused with exit 2."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from compress.errors import InputError
from compress.records import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Direction,
    SummaryRow,
    direction,
)
from tests.conftest import ROOT, run_cli

FROZEN = ROOT / "tests" / "fixtures" / "pre-schema"


@pytest.fixture
def old_run(tmp_path):
    """A copy of the frozen run directory (tests may edit it)."""
    return shutil.copytree(FROZEN / "run", tmp_path / "run")


def test_frozen_run_reads_with_the_same_frames(old_run):
    from compress.results import load_run
    from compress.suite import Suite

    raw = json.loads((FROZEN / "run" / "results.json").read_text())
    assert "schema_version" not in raw  # made by the code before versions
    run = load_run(old_run)
    pd.testing.assert_frame_equal(run.summary(), pd.DataFrame(raw["candidates"]))
    table = run.table()
    pd.testing.assert_frame_equal(table.drop(columns="direction"),
                                  pd.DataFrame(raw["measurements"]))
    by_metric = dict(zip(table["metric"], table["direction"], strict=False))
    assert by_metric["accuracy"] == "higher" and by_metric["kl_divergence"] == "lower"
    assert by_metric["latency_p50"] == "lower" and pd.isna(by_metric["n_eval"])
    assert isinstance(run.suite, Suite) and run.task == "text-classification"
    assert run.primary_metric == "accuracy" and run.ok
    assert run.manifest["recipe"]["resolved"]["name"] == "tiny"  # notebooks read this


def test_summary_row_round_trips_every_frozen_row():
    raw = json.loads((FROZEN / "run" / "results.json").read_text())
    for r in raw["candidates"]:
        rec = SummaryRow.from_row(r)
        assert rec.row() == r and list(rec.row()) == list(r)
    int8 = SummaryRow.from_row(raw["candidates"][2])
    assert set(int8.fidelity) == {"top1_agreement", "kl_divergence"}
    assert int8.value("accuracy") == raw["candidates"][2]["accuracy"]


def test_a_renamed_field_is_caught():
    raw = json.loads((FROZEN / "run" / "results.json").read_text())
    row = {**raw["candidates"][0]}
    row["latency_p50"] = row.pop("latency_p50_ms")  # not a field: read as a metric...
    rec = SummaryRow.from_row(row)
    assert rec.latency_p50_ms is None and "latency_p50" in rec.quality
    with pytest.raises(Exception, match="candidate"):
        SummaryRow.from_row({"status": "ok"})  # ...but a missing required field fails


def test_frozen_verdicts_read_and_gate_a_new_release(old_run):
    from compress.gate import gate, read_verdict

    rec = read_verdict(FROZEN / "gate-recommended.json")
    assert rec.schema_version == 1 and rec.recommended.candidate == "onnx"  # CI reads this
    prev = read_verdict(FROZEN / "gate.json")
    assert set(prev.figures) == {"teacher", "onnx", "int8"} and prev.verdict == "pass"
    r = gate(old_run, {"max_quality_decrease": 0.0}, candidates=["int8"],
             baseline=FROZEN / "gate.json")
    (c,) = [c for c in r.checks if c.check == "regression.max_quality_decrease"]
    assert c.status == "pass" and c.value == pytest.approx(0.0)
    assert r.to_dict()["schema_version"] == SCHEMA_VERSION


def test_frozen_calibration_reads():
    from compress.hardware import calibrate as C

    cal = C.load(FROZEN / "calibration.json")
    assert cal["schema_version"] == 1 and cal["path"].endswith("calibration.json")
    fit = next(iter(cal["classes"].values()))
    assert 0 < fit["memory_efficiency"] and fit["gemm_curves"]


def test_new_files_carry_the_schema_version(tiny_run, tmp_path, monkeypatch):
    from compress.hardware import calibrate as C
    from compress.hardware import microbench

    for name in ("results.json", "manifest.json"):
        assert json.loads((tiny_run / name).read_text())["schema_version"] == SCHEMA_VERSION
    old = json.loads((FROZEN / "calibration.json").read_text())["benchmarks"]
    monkeypatch.setattr(microbench, "torch_benchmarks", lambda threads: old["torch"])
    monkeypatch.setattr(microbench, "ort_benchmarks", lambda threads: old["onnxruntime"])
    path = C.save(C.calibrate(threads=1), tmp_path / "cal.json")
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert C.load(path)["classes"]


@pytest.mark.parametrize("file", ["results.json", "manifest.json"])
@pytest.mark.parametrize("version", [2, 99, "1"])
def test_unsupported_run_file_version_exits_2(old_run, file, version):
    data = json.loads((old_run / file).read_text())
    data["schema_version"] = version
    (old_run / file).write_text(json.dumps(data))
    proc = run_cli("show", str(old_run))
    assert proc.returncode == 2, proc.stderr
    msg = proc.stderr
    assert f"{file}: schema_version {version!r} is not supported" in msg
    assert "reads versions 0, 1" in msg and "Traceback" not in msg


def test_unsupported_verdict_and_calibration_versions_exit_2(old_run, tmp_path):
    verdict = json.loads((FROZEN / "gate.json").read_text()) | {"schema_version": 7}
    (tmp_path / "v.json").write_text(json.dumps(verdict))
    proc = run_cli("gate", str(old_run), "--candidate", "int8", "--max-quality-decrease",
                   "0.01", "--baseline", str(tmp_path / "v.json"))
    assert proc.returncode == 2 and "schema_version 7 is not supported" in proc.stderr
    cal = json.loads((FROZEN / "calibration.json").read_text()) | {"schema_version": 3}
    (tmp_path / "c.json").write_text(json.dumps(cal))
    proc = run_cli("recommend", str(old_run), "--calibration", str(tmp_path / "c.json"))
    assert proc.returncode == 2 and "c.json: schema_version 3 is not supported" in proc.stderr


def test_unreadable_files_name_themselves(old_run):
    from compress.results import load_run

    (old_run / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest.json: not a readable run manifest"):
        load_run(old_run)
    (old_run / "manifest.json").write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(InputError, match="manifest.json: not a valid run manifest"):
        load_run(old_run)


def test_metric_directions():
    assert SUPPORTED_VERSIONS == (0, 1)
    assert direction("perplexity") is Direction.LOWER
    assert direction("f1[sport]") is Direction.HIGHER and direction("cosine") is Direction.HIGHER
    assert direction("n_eval") is None and direction("evaluate:accuracy") is None
