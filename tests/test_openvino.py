"""OpenVINO as a runtime and NNCF as a quantize backend, on the tiny BERT built in tests:
the runner imports neither torch nor transformers, the inference precision is explicit and
recorded, NNCF INT8 stays close to fp32, bad settings exit 2, and the catalog says where
each format runs fast."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, run_stage, text_frame

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def ov_models(tiny_bert, tmp_path_factory):
    """(onnx, openvino IR, nncf-int8 IR) of the tiny BERT's hidden states (LayerNorm keeps
    them near unit scale; a random classifier head's logits are too small to compare)."""
    tmp = tmp_path_factory.mktemp("ov")
    task = "feature-extraction"
    onnx, _ = run_stage("export", {}, tiny_bert, tmp / "onnx", task)
    ir, ir_checks = run_stage("openvino", {}, onnx.path, tmp / "ir", task)
    q, q_checks = run_stage("quantize", {"backend": "nncf-int8", "subset_size": 16,
                                         "max_length": 32}, onnx.path, tmp / "q", task,
                            data={"calibration": text_frame(24, labels=False)})
    return onnx, (ir, ir_checks), (q, q_checks)


RUNNER = """
import json, sys
from compress.encoding import Encoder, OrtModel
from compress.measure.runners import make_runner
onnx, ir, precision = sys.argv[1:4]
runner = make_runner(ir, "openvino", "text-classification",
                     {"threads": 1, "device": "cpu", "openvino_precision": precision})
feeds = Encoder(ir)(["goal match team", "bank market profit"], 32, pad_to_max=True)
out = runner(feeds)
print("RESULT" + json.dumps({
    "out": out.tolist(), "precision": runner.precision,
    "requested": runner.requested_precision, "fell_back": runner.fell_back,
    "threads": runner.model.threads,
    "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def _run_runner(onnx, ir, precision: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(onnx), str(ir), precision],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(x for x in proc.stdout.splitlines()
                           if x.startswith("RESULT"))[len("RESULT"):])


def test_openvino_runner_imports_no_torch_and_records_its_precision(ov_models):
    from compress.encoding import Encoder, OrtModel

    onnx, (ir, checks), _ = ov_models
    assert checks["top1_agreement_vs_input"] == 1.0 and checks["max_abs_diff_vs_input"] < 1e-4
    res = _run_runner(onnx.path, ir.path, "fp32")
    assert res["torch"] is False and res["transformers"] is False
    assert res["precision"] == "fp32" and res["requested"] == "fp32" and not res["fell_back"]
    assert res["threads"] == 1
    feeds = Encoder(onnx.path)(["goal match team", "bank market profit"], 32, pad_to_max=True)
    ref = OrtModel(onnx.path)(feeds)
    np.testing.assert_allclose(np.asarray(res["out"]), ref, atol=1e-4)


def test_bf16_is_asked_for_and_what_ran_is_recorded(ov_models):
    """bf16 where the CPU has it; elsewhere OpenVINO runs fp32, and the record says so."""
    from compress.openvino import cpu_capabilities

    onnx, (ir, _), _ = ov_models
    res = _run_runner(onnx.path, ir.path, "bf16")
    assert res["requested"] == "bf16"
    has_bf16 = "BF16" in cpu_capabilities()
    assert res["precision"] == ("bf16" if has_bf16 else "fp32")
    assert res["fell_back"] is (not has_bf16)


def test_nncf_int8_ir_is_int8_and_close_to_fp32(ov_models):
    from compress.encoding import Encoder
    from compress.openvino import OvModel, ir_weights

    _, (ir, _), (q, checks) = ov_models
    assert checks["fake_quantize_nodes"] > 0 and checks["calibration_texts"] == 16
    stored, _, ops = ir_weights(q.path)
    assert stored.get("int8", 0) > stored.get("float32", 0)  # weights stored as int8
    assert "FakeQuantize" in ops
    feeds = Encoder(q.path)(text_frame(12).text.tolist(), 32, pad_to_max=True)
    ref = OvModel(ir.path, 1, "fp32")(feeds)
    out = OvModel(q.path, 1, "fp32")(feeds)
    # INT8 of a random 2-layer model: each hidden state within a few % of fp32
    cos = np.sum(out * ref, -1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.min() > 0.98, cos.min()
    assert np.abs(out - ref).mean() < 0.1 * np.abs(ref).mean()
    assert checks["max_abs_diff_vs_input"] < np.abs(ref).max()


def test_formats_read_from_the_ir(ov_models):
    from compress.hardware.formats import inspect_artifact

    _, (ir, _), (q, _) = ov_models
    fp32 = inspect_artifact(ir.path, "openvino")
    int8 = inspect_artifact(q.path, "openvino")
    assert (fp32.framework, fp32.format) == ("openvino", "fp32")
    assert int8.format == "int8-static-ov"  # declared by the backend, written by the engine
    assert int8.weight_bytes < fp32.weight_bytes / 2


BAD = """\
name: tiny
task: text-classification
model: {model}
suite: suite.yaml
data:
  train: {{source: {train}}}
pipeline:
  - id: onnx
    stage: export
  - id: ov8
    stage: quantize
    with: {{backend: nncf-int8, preset: fastest}}
"""


def test_bad_nncf_setting_exits_2_naming_file_field_value(write_recipe):
    path = write_recipe(BAD)
    proc = run_cli("validate", str(path))
    out = " ".join((proc.stderr + proc.stdout).split())
    assert proc.returncode == 2, out
    assert "recipe.yaml" in out and "preset" in out and "fastest" in out
    assert "performance" in out and "mixed" in out  # what was expected
    assert "Traceback" not in out


def test_bad_suite_precision_exits_2(write_recipe, tmp_path):
    path = write_recipe(BAD.replace("preset: fastest", "preset: mixed"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite.read_text().replace("latency: {", "latency: {openvino_precision: "
                                                               "fp8, "))
    proc = run_cli("validate", str(path))
    out = " ".join((proc.stderr + proc.stdout).split())
    assert proc.returncode == 2, out
    assert "suite.yaml" in out and "openvino_precision" in out and "fp8" in out
    assert "Traceback" not in out


def test_default_precision_keeps_earlier_measurement_keys():
    """fp32 is the default and is passed to every measurement; only another precision
    enters the measurement key (so measurements made before the field existed still hit)."""
    from compress.suite import Suite

    base = {"name": "s", "task": "text-classification",
            "dataset": {"source": "x.csv", "text_column": "text", "label_column": "label"}}
    fp32 = Suite.model_validate(base)
    bf16 = Suite.model_validate({**base, "latency": {"openvino_precision": "bf16"}})
    assert fp32.latency.openvino_precision == "fp32"
    assert "openvino_precision" not in fp32.settings()["latency"]
    assert bf16.settings()["latency"]["openvino_precision"] == "bf16"


def test_capability_table_has_openvino_on_cpu_targets(monkeypatch):
    from compress.capabilities import runs_fast_on
    from compress.hardware.catalog import detect_local, load_catalog
    from compress.hardware.formats import ArtifactInfo
    from compress.hardware.roofline import capability, runtimes_for

    cat = load_catalog()
    assert runs_fast_on("nncf-int8", "cpu") and not runs_fast_on("nncf-int8", "cuda", 9.0)
    c7i = cat["c7i.large"]
    info = ArtifactInfo(None, "openvino", "openvino", "int8-static-ov", "fp32")
    assert runtimes_for(info, c7i, cat) == ["openvino-cpu"]
    assert capability(info, c7i, "openvino-cpu", cat) is None
    bf16 = ArtifactInfo(None, "openvino", "openvino", "bf16", "bf16")
    assert capability(bf16, c7i, "openvino-cpu", cat) is None        # AMX bf16
    avx2 = c7i.model_copy(update={"flops_per_cycle": {"fp32": 32, "int8": 128}})
    assert "no bf16" in capability(bf16, avx2, "openvino-cpu", cat)  # no bf16 here
    ort = ArtifactInfo(None, "onnx-quantized", "openvino", "int8-dynamic-ort", "fp32")
    assert "ONNX Runtime format" in capability(ort, c7i, "openvino-cpu", cat)
    # a detected CPU with avx512_bf16 (no AMX) gets a bf16 peak; an avx2 one gets none
    from pathlib import Path

    from compress.hardware.catalog import Target

    base = Target(name="local-cpu", kind="cpu", hw_class="detect", memory_gb=0,
                  bandwidth_gbps=0, cores=0, clock_ghz=0)
    real = Path.read_text
    for flags, has in (("avx2 fma avx512f avx512_vnni avx512_bf16", True), ("avx2 fma", False)):
        info = f"processor : 0\nmodel name : x\ncpu MHz : 2000\nflags : {flags}\n"
        monkeypatch.setattr(Path, "read_text", lambda self, *a, _i=info, **k: _i
                            if str(self) == "/proc/cpuinfo" else real(self, *a, **k))
        local = detect_local(base)
        assert bool(local.peak("bf16")) is has, flags
        assert bool(capability(bf16, local, "openvino-cpu", cat) is None) is has


PIPELINE = """\
name: tiny-ov
task: text-classification
model: {model}
suite: suite.yaml
data:
  calibration: {{source: {train}}}
pipeline:
  - id: onnx
    stage: export
  - id: ov
    stage: openvino
  - id: ov8
    stage: quantize
    input: onnx
    with: {{backend: nncf-int8, subset_size: 16, max_length: 32}}
candidates: [onnx, ov, ov8]
"""


def test_run_measures_openvino_candidates_at_the_recorded_precision(write_recipe,
                                                                   tiny_bert_cls, tmp_path):
    """Through the engine: OpenVINO candidates are measured (quality and latency on the
    same compiled model), their runtime and precision are in the results, and they are
    projected through the catalog's openvino-cpu runtime."""
    from compress.engine import run_recipe
    from compress.hardware.catalog import load_catalog
    from compress.hardware.projection import CandidateModel

    path = write_recipe(PIPELINE, model=tiny_bert_cls)
    run = run_recipe(path, out_dir=tmp_path / "run")
    assert run.ok
    rows = {r["candidate"]: r for r in json.loads(
        (tmp_path / "run" / "results.json").read_text())["candidates"]}
    for name in ("ov", "ov8"):
        assert rows[name]["backend"] == "openvino" and rows[name]["status"] == "ok"
        assert rows[name]["providers"] == "CPU:fp32"
        assert rows[name]["latency_p50_ms"] > 0 and rows[name]["accuracy"] is not None
    assert rows["ov"]["top1_agreement"] == 1.0  # the IR at fp32 is the ONNX model
    cat = load_catalog()
    model = CandidateModel("ov8", rows["ov8"]["artifact_path"], "openvino")
    assert model.info.format == "int8-static-ov"
    (rt, reason), = model.supported(cat["c7i.large"], cat)
    assert (rt, reason) == ("openvino-cpu", None)
