"""The saved decision: `compress recommend` writes recommendation.json; gate, report and
export read it and agree with it; different inputs recompute and say what differs; the
gate checks the release candidate; `export --format triton` carries the serving
configuration in a config.pbtxt that Triton's own schema parses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from compress.errors import InputError
from tests.conftest import run_cli
from tests.test_gate import make_run

TRAFFIC = ["--requests-per-day", "2000000", "--peak-factor", "3", "--max-latency-ms", "50"]


def _env(tmp_path):
    return {"COMPRESS_CALIBRATION": str(tmp_path / "none.json")}


def model_config_pb2():
    """Triton's model_config protobuf as tritonclient ships it (loaded from its file: the
    package's grpc/__init__ needs grpcio, which this project does not install)."""
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gate_report_and_export_agree_with_the_saved_recommendation(run_copy, tmp_path):
    env = _env(tmp_path)
    r = run_cli("recommend", str(run_copy), "--max-drop", "1.0", *TRAFFIC,
                "--target", "c7i.large", "--target", "c7i.xlarge", "--target", "T4",
                env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "nan" not in r.stdout.split("quality vs baseline")[0]   # no empty note printed
    saved = json.loads((run_copy / "recommendation.json").read_text())
    assert saved["schema_version"] == 1 and saved["kind"] == "compress.recommendation"
    inputs = saved["inputs"]
    assert inputs["traffic"] == {"requests_per_day": 2e6, "peak_factor": 3.0}
    assert inputs["targets"]["max_latency_ms"] == 50.0 and inputs["prices"]["T4"] == 0.526
    assert inputs["target_names"] == ["c7i.large", "c7i.xlarge", "T4"]
    assert inputs["calibration"].startswith("none") and inputs["catalog_digest"]
    w = saved["winner"]
    assert w["instances"] >= 1 and w["max_batch"] >= 1 and w["utilisation"] > 0
    assert f"saved: {run_copy / 'recommendation.json'}" in r.stdout.replace("\n", "")

    # gate with no flags: the saved pair, with the saved figures
    g = run_cli("gate", str(run_copy), "--max-cost-per-1k", "1.0", "--max-latency-ms", "50",
                "--json", str(tmp_path / "v.json"), env=env, timeout=300)
    assert g.returncode == 0, g.stdout + g.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["recommended"]["candidate"] == w["candidate"] and v["target"] == w["target"]
    f = v["figures"][w["candidate"]]
    assert f["cost_per_1k"] == pytest.approx(w["cost_per_1k"])
    assert f["latency_p95_ms"] == pytest.approx(w["latency_p95_ms"])
    assert "using the saved recommendation" in g.stdout

    # report: the same winner, from the saved file
    rep = run_cli("report", str(run_copy), "--out", str(tmp_path / "r.html"), env=env,
                  timeout=300)
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "r.html").read_text()
    assert f"Recommended: {w['candidate']} on {w['target']}" in page
    assert "using the saved recommendation" in page

    # export --recommended: the same candidate and target
    ex = run_cli("export", str(run_copy), "--recommended", "--to", str(tmp_path / "rel"),
                 env=env, timeout=300)
    assert ex.returncode == 0, ex.stderr
    card = (tmp_path / "rel" / "README.md").read_text()
    assert f"**{w['candidate']}** on **{w['target']}**" in card
    assert "using the saved recommendation" in card

    # asked for other inputs: recomputed, and the difference is named
    d = run_cli("report", str(run_copy), "--out", str(tmp_path / "r2.html"),
                "--requests-per-day", "9000000", env=env, timeout=300)
    assert d.returncode == 0, d.stderr
    out = " ".join(d.stdout.split())
    assert "recomputed: differs from the saved recommendation" in out
    assert "'requests_per_day': 2000000.0, 'peak_factor': 3.0} (saved) -> " \
           "{'requests_per_day': 9000000.0, 'peak_factor': 3.0}" in out
    # the saved file is untouched by readers
    assert json.loads((run_copy / "recommendation.json").read_text()) == saved


def test_triton_config_matches_the_graph_and_the_serving_configuration(run_copy, tmp_path):
    import onnx
    from google.protobuf import text_format

    env = _env(tmp_path)
    r = run_cli("recommend", str(run_copy), "--max-drop", "1.0", *TRAFFIC,
                "--target", "c7i.xlarge", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    saved = json.loads((run_copy / "recommendation.json").read_text())
    row = next(o for o in saved["options"] if o["candidate"] == "int8"
               and o["status"] == "ok")
    e = run_cli("export", str(run_copy), "int8", "--format", "triton",
                "--to", str(tmp_path / "repo"), env=env, timeout=300)
    assert e.returncode == 0, e.stderr
    cfg_path = tmp_path / "repo" / "int8" / "config.pbtxt"
    m = model_config_pb2()
    cfg = text_format.Parse(cfg_path.read_text(), m.ModelConfig())   # Triton's own schema
    assert cfg.name == "int8" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == row["max_batch"]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == \
        round(row["max_queue_delay_ms"] * 1000)
    assert list(cfg.dynamic_batching.preferred_batch_size) == row["preferred_batch_sizes"]
    assert cfg.instance_group[0].count == row["workers"] == 2     # c7i.xlarge: 2 cores
    assert cfg.instance_group[0].kind == m.ModelInstanceGroup.KIND_CPU
    assert cfg.parameters["intra_op_thread_count"].string_value == "1"
    graph = onnx.load(str(tmp_path / "repo" / "int8" / "1" / "model.onnx")).graph
    inits = {i.name for i in graph.initializer}
    types = {1: "TYPE_FP32", 7: "TYPE_INT64"}
    for ours, theirs in ((cfg.input, [i for i in graph.input if i.name not in inits]),
                         (cfg.output, graph.output)):
        assert [t.name for t in ours] == [t.name for t in theirs]
        for t, g in zip(ours, theirs, strict=True):
            assert m.DataType.Name(t.data_type) == types[g.type.tensor_type.elem_type]
            dims = [d.dim_value if d.HasField("dim_value") else -1
                    for d in g.type.tensor_type.shape.dim]
            assert dims[0] == -1 and list(t.dims) == dims[1:]    # batch dim left out
    assert [list(t.dims) for t in cfg.output] == [[3]]           # 3 classes
    # a PyTorch candidate has no ONNX graph to serve: refused, exit 2
    bad = run_cli("export", str(run_copy), "teacher", "--format", "triton",
                  "--to", str(tmp_path / "repo2"), env=env, timeout=300)
    assert bad.returncode == 2 and "ONNX" in bad.stderr and not (tmp_path / "repo2").exists()


def test_config_without_a_batch_dimension_does_not_batch():
    from google.protobuf import text_format

    from compress.triton import ServingConfig, Tensor, config_pbtxt

    text = config_pbtxt("m", [Tensor("x", "TYPE_FP32", [1, 8])],
                        [Tensor("y", "TYPE_FP32", [1, 2])], ServingConfig(16, 2.5, (8, 16)))
    cfg = text_format.Parse(text, model_config_pb2().ModelConfig())
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 8]
    assert not cfg.HasField("dynamic_batching")


def test_gate_checks_the_release_candidate(tmp_path, monkeypatch):
    from compress.gate import gate

    monkeypatch.setenv("COMPRESS_CALIBRATION", str(tmp_path / "none.json"))
    run = make_run(tmp_path / "run", targets={"max_drop": 0.02, "min_fidelity": 0.95})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["recipe"]["resolved"]["release"] = "int8"
    (run / "manifest.json").write_text(json.dumps(manifest))
    r = gate(run)          # tiny (exploratory) fails its targets; the release passes
    assert {c.candidate for c in r.checks} == {"int8"} and r.exit_code == 0
    every = gate(run, every_candidate=True)
    assert "tiny" in {c.candidate for c in every.checks} and every.exit_code == 1
    manifest["recipe"]["resolved"]["release"] = "nope"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="release: 'nope' is not a candidate"):
        gate(run)


def test_a_saved_record_of_another_version_is_refused(tmp_path):
    from compress.decide.decision import load
    from compress.results import load_run

    run = make_run(tmp_path / "run")
    (run / "recommendation.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InputError, match="schema_version 99, expected 1"):
        load(load_run(run))
    g = run_cli("gate", str(run), "--max-drop", "1", env=_env(tmp_path), timeout=120)
    assert g.returncode == 2 and "recommendation.json" in g.stderr
