"""`compress gate`: each threshold type passing and failing, missing measurements (exit 2),
regressions against a previous release, JUnit XML, markdown and the JSON verdict.

Synthetic run directories (manifest.json + results.json as compress.results writes them)
keep these fast; test_recommend_cli.py gates a tiny real run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from compress.errors import InputError
from compress.gate import gate
from compress.records import (
    SCHEMA_VERSION,
    Manifest,
    RecipeInfo,
    RunStats,
    SuiteInfo,
    SummaryRow,
)
from compress.suite import Suite
from tests.conftest import ROOT, run_cli


def _row(name, acc, agree, p95, peak, **extra):
    """A summary row through its record, so a renamed field cannot go unnoticed."""
    fields = {"candidate": name, "role": "candidate", "step": name, "stage": "quantize",
              "kind": "pytorch", "status": "ok", "error": None,
              "quality": {"accuracy": acc, "macro_f1": acc},
              "fidelity": {"top1_agreement": agree},
              "latency_p50_ms": p95 and p95 * 0.9, "latency_p95_ms": p95,
              "size_mb": peak and peak / 3, "peak_rss_mb": peak, "mem_delta_mb": 10.0,
              "backend": "pytorch", "device": "cpu", "threads": 1, "batch_size": 1,
              "seq_len": 128, "provenance": "measured", "artifact_path": None,
              "primary_metric": "accuracy", "baseline": "teacher"}
    for k, v in extra.items():  # a metric by name, or a field
        if k in SummaryRow.model_fields:
            fields[k] = v
        else:
            fields["quality"][k] = v
    return SummaryRow(**fields).row()


N_EVAL = 4000  # synthetic eval examples: enough for the checks below to be decided


def synthetic_units(rows, task):
    """Per-unit results consistent with the rows' figures: for classification, N_EVAL
    examples, each candidate wrong on the first (1 - accuracy) * N of them (so a worse
    candidate is wrong wherever its baseline is); for causal-lm, 40 windows of 100 tokens
    at the row's perplexity."""
    import math

    import numpy as np

    cands = {}
    if task == "causal-lm":
        wiggle = np.random.default_rng(0).normal(0, 0.01, 40)
        for r in rows:
            if r.get("perplexity") is not None:
                cands[r["candidate"]] = {
                    "window_nll": list(100 * (math.log(r["perplexity"]) + wiggle)),
                    "window_tokens": [100] * 40, "window_correct": [50] * 40}
        return {"task": task, "metrics": ["perplexity"], "primary_metric": "perplexity",
                "shared": {}, "candidates": cands}
    gold = ["a", "b"] * (N_EVAL // 2)
    for r in rows:
        if r.get("accuracy") is not None:
            wrong = round((1 - r["accuracy"]) * N_EVAL)
            cands[r["candidate"]] = {"pred": [("b" if g == "a" else "a") if i < wrong else g
                                              for i, g in enumerate(gold)], "n_classes": 2}
    return {"task": task, "metrics": ["accuracy"], "primary_metric": "accuracy",
            "shared": {"gold": gold}, "candidates": cands}


def make_run(path, rows=None, targets=None, task="text-classification"):
    rows = rows if rows is not None else [
        _row("teacher", 0.95, None, 10.0, 300.0),
        _row("int8", 0.94, 0.98, 5.0, 200.0),
        _row("tiny", 0.90, 0.93, 2.0, 100.0),
    ]
    path.mkdir(parents=True)
    (path / "quality_units.json").write_text(json.dumps(synthetic_units(rows, task)))
    suite = Suite(name="s", task=task, dataset={"source": "eval.csv"},
                  latency={"seq_lens": [128]}, targets=targets or {})
    manifest = Manifest(recipe=RecipeInfo(path="recipe.yaml", given="",
                                          resolved={"name": "synthetic"}),
                        suite=SuiteInfo(path="suite.yaml", resolved=suite), plan={}, seed=0,
                        versions={}, cache_dir="", started="", finished="", wall_time_s=0.0,
                        stats=RunStats())
    (path / "manifest.json").write_text(manifest.model_dump_json())
    (path / "results.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION,
                                                   "candidates": rows, "measurements": []}))
    return path


def priced_catalog(tmp_path):
    """The catalog with local-cpu priced (it never is by default)."""
    from compress.hardware.catalog import load_catalog

    f = tmp_path / "prices.yaml"
    f.write_text("prices: {local-cpu: {price_per_hour: 0.08925, source: test}}\n")
    return load_catalog(prices=f)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "no-calibration.json"))
    return make_run(tmp_path / "run")


def _status(result, cand, check):
    (c,) = [c for c in result.checks if c.candidate == cand and c.check == check]
    return c


@pytest.mark.parametrize("key,good,bad,check", [
    ("max_drop", 0.02, 0.005, "quality.max_drop"),               # int8 drops 0.01
    ("max_relative_drop", 0.02, 0.005, "quality.max_relative_drop"),
    ("min_recovery", 0.98, 0.995, "quality.min_recovery"),       # 0.94 / 0.95 = 0.989
    ("min_value", 0.93, 0.95, "quality.min_value"),             # 0.94 +-0.007 at N=4000
    ("min_fidelity", 0.97, 0.99, "fidelity.min_fidelity"),       # agreement 0.98
    ("max_latency_ms", 6.0, 4.0, "latency.max_latency_ms"),      # p95 5 ms, measured
    ("max_memory_mb", 250.0, 150.0, "memory.max_memory_mb"),     # peak 200 MB
    ("max_cost_per_1k", 1.0, 1e-9, "cost.max_cost_per_1k"),      # local-cpu, measured
])
def test_each_threshold_passes_and_fails(run_dir, key, good, bad, check, tmp_path):
    # a gate must judge quality: every case carries a max_drop that int8 passes
    cat = priced_catalog(tmp_path)
    ok = gate(run_dir, {"max_drop": 0.02, key: good}, candidates=["int8"], catalog=cat)
    assert ok.exit_code == 0 and _status(ok, "int8", check).status == "pass"
    no = gate(run_dir, {"max_drop": 0.02, key: bad}, candidates=["int8"], catalog=cat)
    c = _status(no, "int8", check)
    assert no.exit_code == 1 and c.status == "fail" and c.threshold == bad
    assert c.value is not None and c.message


def test_values_are_the_runs_figures(run_dir, tmp_path):
    cat = priced_catalog(tmp_path)
    r = gate(run_dir, {"max_drop": 1, "min_recovery": 0, "max_latency_ms": 100,
                       "max_memory_mb": 1e4, "max_cost_per_1k": 1.0}, candidates=["tiny"],
             catalog=cat)
    assert _status(r, "tiny", "quality.max_drop").value == pytest.approx(0.05)
    assert _status(r, "tiny", "quality.min_recovery").value == pytest.approx(0.90 / 0.95)
    lat = _status(r, "tiny", "latency.max_latency_ms")
    assert lat.value == 2.0 and lat.provenance == "measured" and lat.target == "local-cpu"
    assert _status(r, "tiny", "memory.max_memory_mb").value == 100.0
    cost = _status(r, "tiny", "cost.max_cost_per_1k")
    # by hand, not by the function the gate calls: no traffic, so full utilisation of
    # every single-thread worker of local-cpu, each serving one request per measured p50
    # (1.8 ms), at the priced $0.08925/h
    workers = cat["local-cpu"].workers
    per_hour = workers * 3600 / 1.8e-3
    assert cost.value == pytest.approx(0.08925 / per_hour * 1000, rel=1e-6)
    # unpriced (the default), the cost check is an error naming the way out, exit 2
    bare = gate(run_dir, {"max_drop": 1, "max_cost_per_1k": 1.0}, candidates=["tiny"])
    msg = _status(bare, "tiny", "cost.max_cost_per_1k").message
    assert bare.exit_code == 2 and "local-cpu has no price" in msg and "--prices" in msg


def test_suite_targets_apply_and_flags_override(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    run = make_run(tmp_path / "run", targets={"max_drop": 0.02, "min_fidelity": 0.95})
    r = gate(run, every_candidate=True)   # int8 passes, tiny fails both
    assert {c.candidate for c in r.checks} == {"teacher", "int8", "tiny"}
    assert _status(r, "int8", "quality.max_drop").status == "pass"
    assert _status(r, "tiny", "quality.max_drop").status == "fail"
    assert _status(r, "tiny", "fidelity.min_fidelity").status == "fail"
    assert not [c for c in r.checks if c.candidate == "teacher" and c.check.startswith("fid")]
    assert r.exit_code == 1
    assert gate(run, {"max_drop": 0.1, "min_fidelity": 0.9},
                every_candidate=True).exit_code == 0
    # a suite file's targets replace the run's; the suite must be for the same task
    (tmp_path / "s.yaml").write_text((ROOT / "eval" / "bbc-news.yaml").read_text())
    s = gate(run, suite=tmp_path / "s.yaml", candidates=["int8"])  # max_drop 0.01, fid 0.97
    assert s.thresholds == {"max_drop": 0.01, "min_fidelity": 0.97}
    # int8 drops exactly 0.01: at 95% the interval straddles the threshold, which the
    # point comparison passed
    assert s.exit_code == 1 and _status(s, "int8", "quality.max_drop").status == "inconclusive"
    assert gate(run, suite=tmp_path / "s.yaml", candidates=["int8"],
                confidence=None).exit_code == 0
    with pytest.raises(InputError, match="suite is for feature-extraction"):
        gate(run, suite=ROOT / "eval" / "minilm-similarity.yaml")


def test_lower_is_better_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    rows = [{**_row(n, None, a, 1.0, 100.0), "accuracy": None, "perplexity": p,
             "primary_metric": "perplexity"}
            for n, p, a in (("teacher", 20.0, None), ("int4", 21.0, 0.9))]
    run = make_run(tmp_path / "run", rows, task="causal-lm")
    r = gate(run, {"max_drop": 0.5, "min_value": 25.0}, candidates=["int4"])
    assert _status(r, "int4", "quality.max_drop").status == "fail"     # +1.0 ppl > 0.5
    assert _status(r, "int4", "quality.min_value").status == "pass"    # 21 under ceiling 25
    assert gate(run, {"min_value": 20.5}, candidates=["int4"]).exit_code == 1


def test_missing_measurement_is_an_error_not_a_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    rows = [_row("teacher", 0.95, None, 10.0, 300.0),
            _row("int8", 0.94, None, None, None)]
    run = make_run(tmp_path / "run", rows)
    r = gate(run, {"max_latency_ms": 100, "max_memory_mb": 1e4, "min_fidelity": 0.5,
                   "max_drop": 1.0, "max_cost_per_1k": 1.0}, candidates=["int8"])
    assert r.exit_code == 2
    assert {c.check for c in r.checks if c.status == "error"} == {
        "latency.max_latency_ms", "memory.max_memory_mb", "fidelity.min_fidelity",
        "cost.max_cost_per_1k"}
    assert _status(r, "int8", "quality.max_drop").status == "pass"
    failed = make_run(tmp_path / "run2", [_row("teacher", 0.95, None, 10.0, 300.0),
                                          {**_row("bad", None, None, None, None),
                                           "status": "failed", "error": "boom"}])
    f = gate(failed, {"max_drop": 1.0}, every_candidate=True)
    assert f.exit_code == 2 and _status(f, "bad", "measured").message == "candidate failed: boom"


def test_a_gate_that_judges_no_quality_is_invalid(run_dir):
    for thr in ({"max_latency_ms": 100}, {"min_fidelity": 0.5}, {"max_cost_per_1k": 1.0}):
        with pytest.raises(InputError, match="ran no quality check"):
            gate(run_dir, thr, candidates=["int8"])
    r = run_cli("gate", str(run_dir), "--candidate", "int8", "--max-latency-ms", "100",
                timeout=120)
    assert r.returncode == 2 and "ran no quality check" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("flag,value,expected", [
    ("--max-drop", "nan", "finite"), ("--max-drop", "inf", "finite"),
    ("--max-drop", "-0.01", "[0, inf]"), ("--min-fidelity", "2", "[0, 1]"),
    ("--confidence", "1.5", "between 0 and 1")])
def test_bad_thresholds_exit_2(run_dir, flag, value, expected):
    r = run_cli("gate", str(run_dir), "--max-drop", "0.02", flag, value, timeout=120)
    assert r.returncode == 2 and expected in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_ratio_against_a_zero_baseline_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    run = make_run(tmp_path / "run", [_row("teacher", 0.0, None, 10.0, 300.0),
                                      _row("int8", 0.0, 1.0, 5.0, 200.0)])
    r = gate(run, {"max_relative_drop": 0.1}, candidates=["int8"], confidence=None)
    c = _status(r, "int8", "quality.max_relative_drop")
    assert r.exit_code == 2 and c.status == "error" and "baseline above 0" in c.message


def test_two_examples_in_fifty_is_inconclusive_and_fails_the_gate(tmp_path, monkeypatch):
    """The trial: 50 test sentences, INT8 two sentences worse, max_drop 0.04."""
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    run = make_run(tmp_path / "run", [_row("teacher", 1.0, None, 10.0, 300.0),
                                      _row("int8", 0.96, 0.96, 5.0, 200.0)])
    units = synthetic_units([], "text-classification")
    gold = ["a", "b"] * 25
    units["shared"]["gold"] = gold
    units["candidates"] = {"teacher": {"pred": gold, "n_classes": 2},
                           "int8": {"pred": ["b", "a"] + gold[2:], "n_classes": 2}}
    (run / "quality_units.json").write_text(json.dumps(units))
    r = run_cli("gate", str(run), "--candidate", "int8", "--max-drop", "0.04",
                "--json", str(tmp_path / "v.json"), timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    (c,) = [c for c in v["checks"] if c["check"] == "quality.max_drop"]
    assert c["status"] == "inconclusive" and c["needed"] > 50
    assert c["message"].startswith(f"eval set too small to decide: 50 examples, about "
                                   f"{c['needed']} needed")
    assert "inconclusive" in r.stdout
    # the point comparison (--confidence none) passes it, as before
    p = run_cli("gate", str(run), "--candidate", "int8", "--max-drop", "0.04",
                "--confidence", "none", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_baseline_at_chance_fails_the_gate(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    run = make_run(tmp_path / "run", [_row("teacher", 0.5, None, 10.0, 300.0),
                                      _row("int8", 0.5, 1.0, 5.0, 200.0)])
    r = gate(run, {"max_drop": 0.02}, candidates=["int8"])
    c = _status(r, "teacher", "quality.baseline")
    assert r.exit_code == 1 and c.status == "fail" and "not clearly above chance" in c.message


def test_invalid_input(run_dir, tmp_path):
    with pytest.raises(InputError, match="nothing to check"):
        gate(run_dir, every_candidate=True)
    with pytest.raises(InputError, match="one of: candidate names, --recommended, "
                                         "--every-candidate"):
        gate(run_dir, {"max_drop": 1}, candidates=["int8"], every_candidate=True)
    with pytest.raises(InputError, match="not in the run"):
        gate(run_dir, {"max_drop": 1}, candidates=["nope"])
    with pytest.raises(InputError, match="need --baseline"):
        gate(run_dir, {"max_cost_increase": 0.05}, every_candidate=True)
    with pytest.raises(InputError, match="not in the catalog"):
        gate(run_dir, {"max_drop": 1}, target="Z80")
    with pytest.raises(InputError, match="not a run directory"):
        gate(tmp_path / "missing", {"max_drop": 1})


def test_baseline_regressions(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    prev = make_run(tmp_path / "prev", [_row("teacher", 0.95, None, 10.0, 300.0),
                                        _row("int8", 0.944, 0.98, 4.0, 200.0)])
    cur = make_run(tmp_path / "cur")   # int8: accuracy 0.94 (-0.004), p95 5 ms (+25%)
    cat = priced_catalog(tmp_path)
    ok = gate(cur, {"max_quality_decrease": 0.005,
                    "max_latency_increase": 0.30, "max_cost_increase": 0.30},
              candidates=["int8"], baseline=prev, catalog=cat)
    assert ok.exit_code == 0, [c.message for c in ok.checks]
    assert _status(ok, "int8", "regression.max_quality_decrease").value == pytest.approx(0.004)
    assert _status(ok, "int8", "regression.max_latency_increase").value == pytest.approx(0.25)
    cost = _status(ok, "int8", "regression.max_cost_increase")
    assert cost.value == pytest.approx(0.25)    # local-cpu cost follows the measured p50
    bad = gate(cur, {"max_quality_decrease": 0.003, "max_cost_increase": 0.05},
               candidates=["int8"], baseline=prev / "results.json", catalog=cat)
    assert bad.exit_code == 1
    assert {c.check for c in bad.checks if c.status == "fail"} == {
        "regression.max_quality_decrease", "regression.max_cost_increase"}
    # the previous release's gate verdict serves as a baseline too (artifacts long gone)
    verdict = tmp_path / "prev-verdict.json"
    verdict.write_text(gate(prev, {"max_drop": 1}, candidates=["int8"],
                            catalog=cat).to_json())
    again = gate(cur, {"max_drop": 0.02, "max_cost_increase": 0.05}, candidates=["int8"],
                 baseline=verdict, catalog=cat)
    assert _status(again, "int8", "regression.max_cost_increase").value == pytest.approx(0.25)
    # compared with another candidate of the previous release; a missing one is an error
    other = gate(cur, {"max_quality_decrease": 0.1}, candidates=["tiny"], baseline=prev,
                 baseline_candidate="int8")
    assert _status(other, "tiny", "regression.max_quality_decrease").value == \
        pytest.approx(0.044)
    missing = gate(cur, {"max_quality_decrease": 0.1}, candidates=["tiny"], baseline=prev)
    assert missing.exit_code == 2


def test_junit_markdown_and_json_through_the_cli(run_dir, tmp_path):
    out = tmp_path / "out"
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    r = run_cli("gate", str(run_dir), "--every-candidate", "--max-drop", "0.02",
                "--max-latency-ms", "6",
                "--junit", str(out / "gate.xml"), "--markdown", str(out / "gate.md"),
                "--json", str(out / "gate.json"),
                env={"GITHUB_STEP_SUMMARY": str(summary)}, timeout=120)
    # teacher: above chance, drop 0, p95 10 > 6 (fail); int8: pass, pass; tiny: drop 0.05
    # (fail), pass
    assert r.returncode == 1, r.stderr
    assert "FAIL: 5 passed, 2 failed, 0 error(s); quality judged at 95% confidence" in r.stdout
    root = ET.parse(out / "gate.xml").getroot()
    assert root.tag == "testsuites" and root.get("tests") == "7"
    assert root.get("failures") == "2" and root.get("errors") == "0"
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 7
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("gate.teacher", "latency.max_latency_ms"),
                      ("gate.tiny", "quality.max_drop")}
    md = (out / "gate.md").read_text()
    assert md.startswith("## compress gate: FAIL")
    assert "| tiny | quality.max_drop | 0.05 | 0.02 | measured | ❌ fail" in md
    assert summary.read_text() == "earlier step\n" + md + "\n"
    verdict = json.loads((out / "gate.json").read_text())
    assert verdict["verdict"] == "fail" and verdict["exit_code"] == 1
    assert verdict["counts"] == {"pass": 5, "fail": 2, "inconclusive": 0, "error": 0}
    assert verdict["confidence"] == 0.95
    assert verdict["figures"]["int8"]["latency_p95_ms"] == 5.0

    passing = run_cli("gate", str(run_dir), "--candidate", "int8", "--max-drop", "0.02",
                      "--max-accuracy-decrease", "0.01", "--baseline", str(run_dir),
                      timeout=120)
    assert passing.returncode == 0, passing.stderr
    assert "PASS: 3 passed" in passing.stdout   # sanity, max_drop, quality decrease
    err = run_cli("gate", str(run_dir), "--candidate", "nope", "--max-drop", "1", timeout=120)
    assert err.returncode == 2 and "not in the run" in err.stderr
    assert "Traceback" not in err.stderr
