"""End to end: a tiny real run (teacher, ONNX export, ORT dynamic INT8), then `compress
recommend` through the console entry point, as a user runs it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_cli


def test_recommend_cli_prints_the_winner(run_copy, tmp_path):
    # quality: anything within 1.0 of the baseline; latency: generous; per-1k ranking
    r = run_cli("recommend", str(run_copy), "--max-drop", "1.0", "--max-latency-ms", "1000",
                "--target", "local-cpu", "--target", "T4", "--target", "A100-80GB",
                env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Recommended" in out and "per 1k" in out
    assert "Pareto frontier" in out
    # rich wraps long lines at the console width (80 columns when piped): compare the words
    words = " ".join(out.split())
    assert "calibration: none (default efficiencies, not calibrated on any hardware class)" \
        in words
    # the JSON form names the same winner, a real candidate on one of the asked targets
    j = run_cli("recommend", str(run_copy), "--max-drop", "1.0", "--max-latency-ms", "1000",
                "--target", "local-cpu", "--target", "T4", "--target", "A100-80GB",
                "--format", "json", env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")},
                timeout=120)
    assert j.returncode == 0, j.stderr
    saved = json.loads(j.stdout)
    win = saved["winner"]
    # the winner is the cheapest pair that qualifies, computed here from the saved rows:
    # status ok, its candidate meets quality, p95 within the 1000 ms asked
    passes = {q["candidate"] for q in saved["quality"] if q["passes_quality"]}
    ok = [o for o in saved["options"] if o["status"] == "ok" and o["candidate"] in passes
          and o["latency_p95_ms"] is not None and o["latency_p95_ms"] <= 1000]
    assert ok and {o["target"] for o in ok} <= {"local-cpu", "T4", "A100-80GB"}
    cheapest = min(o[saved["ranking"]] for o in ok)
    assert win[saved["ranking"]] == pytest.approx(cheapest)
    assert any((o["candidate"], o["target"], o["runtime"]) ==
               (win["candidate"], win["target"], win["runtime"]) for o in ok)
    assert f"Recommended: {win['candidate']} on {win['target']} via {win['runtime']}" in out
    # an impossible quality target: nothing qualifies, said plainly, still exit 0
    n = run_cli("recommend", str(run_copy), "--min-value", "2", "--target", "T4",
                env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}, timeout=120)
    assert n.returncode == 0, n.stderr
    assert "Nothing meets the targets." in n.stdout


def test_recommend_all_marks_measured_and_projected(run_copy, tmp_path):
    r = run_cli("recommend", str(run_copy), "--max-drop", "1.0", "--all",
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
    t = run_cli("recommend", str(run_copy), "--max-drop", "1.0", "--all",
                "--target", "local-cpu", "--target", "T4",
                env={"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}, timeout=120)
    assert t.returncode == 0, t.stderr
    assert "measured" in t.stdout and "projected" in t.stdout and "unsupported" in t.stdout
    assert "every other latency, throughput and cost figure is projected" in t.stdout


def test_gate_a_real_run(run_copy, tmp_path):
    """`compress gate` on a real run: projected figures on a named target, the recommended
    pair, and a threshold tightened past what the candidates reach (exit 1)."""
    env = {"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}
    r = run_cli("gate", str(run_copy), "--every-candidate", "--max-drop", "1.0",
                "--target", "T4",
                "--max-latency-ms", "1000", "--max-cost-per-1k", "1.0",
                "--json", str(tmp_path / "v.json"), env=env, timeout=120)
    # the dynamic-INT8 ONNX model has no fast path on T4: its T4 checks fail, with the reason
    assert r.returncode == 1, r.stdout + r.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    bad = [c for c in v["checks"] if c["status"] != "pass"]
    assert {(c["candidate"], c["check"]) for c in bad} == {
        ("int8", "latency.max_latency_ms"), ("int8", "cost.max_cost_per_1k")}
    assert all("cannot run on T4" in c["message"] and "INT8" in c["message"] for c in bad)
    lat = [c for c in v["checks"] if c["check"] == "latency.max_latency_ms"
           and c["candidate"] != "int8"]
    assert {c["candidate"] for c in lat} == {"teacher", "onnx"}
    assert all(c["provenance"] == "projected" and c["target"] == "T4" for c in lat)
    assert all(0 < v["figures"][c]["cost_per_1k"] < 1.0 for c in ("teacher", "onnx"))
    rec = run_cli("gate", str(run_copy), "--recommended", "--max-drop", "1.0",
                  "--max-latency-ms", "1000", "--target", "T4", "--junit",
                  str(tmp_path / "g.xml"), env=env, timeout=120)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "recommendation" in rec.stdout and "PASS" in rec.stdout
    tight = run_cli("gate", str(run_copy), "--every-candidate", "--max-drop", "1.0",
                    "--max-latency-ms", "1e-6", env=env, timeout=120)
    assert tight.returncode == 1 and "FAIL" in tight.stdout
    # no release named, no saved recommendation: nothing to gate, said so, exit 2
    none = run_cli("gate", str(run_copy), "--max-drop", "1.0", env=env, timeout=120)
    assert none.returncode == 2 and "nothing to gate" in none.stderr
    assert "--every-candidate" in none.stderr


def test_export_onnx_and_recommended_then_load_fresh(run_copy, tmp_path):
    """Export the INT8 ONNX candidate and the recommended one; a fresh process runs them."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}
    r = run_cli("export", str(run_copy), "int8", "--to", str(tmp_path / "int8"), env=env,
                timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "int8" / "model.onnx").is_file()
    assert not (tmp_path / "int8" / "compress-artifact.json").exists()
    card = (tmp_path / "int8" / "README.md").read_text()
    assert "onnxruntime" in card and "top1_agreement" in card
    rec = run_cli("export", str(run_copy), "--recommended", "--to", str(tmp_path / "rec"),
                  env=env, timeout=120)
    assert rec.returncode == 0, rec.stderr
    assert "## Recommended for" in (tmp_path / "rec" / "README.md").read_text()
    code = ("import sys; from compress.encoding import Encoder, OrtModel\n"
            "p = sys.argv[1]; out = OrtModel(p, threads=1)(Encoder(p)(['goal match'], 32))\n"
            "print('SHAPE', tuple(out.shape))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "int8")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SHAPE (1, 3)" in proc.stdout
