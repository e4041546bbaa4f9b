"""benchmarks/gpu_validation.py on the CPU (the same code path the GPU run takes, small
settings), the GPU micro-benchmark calibration's format, and one calibration class per GPU
model."""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path

import pytest

from compress.hardware.catalog import load_catalog
from compress.hardware.roofline import default_efficiency_label, efficiency_for

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_validation",
                                                  ROOT / "benchmarks" / "gpu_validation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One brief CPU run: both demo shapes, fp32, batch 1 and 2, 16 tokens, 2 decode steps."""
    out = tmp_path_factory.mktemp("gpu_validation")
    t0 = time.monotonic()
    rc = _script().main(["--device", "cpu", "--out", str(out), "--max-seconds", "90",
                         "--settings", "1x16,2x16", "--gen-tokens", "2"])
    wall = time.monotonic() - t0
    files = sorted(out.glob("gpu_validation-*-cpu.json"))
    assert rc == 0 and len(files) == 1, (rc, list(out.iterdir()))
    return json.loads(files[0].read_text()), files[0].with_suffix(".txt").read_text(), \
        out, wall


def test_cpu_run_measures_and_projects_every_configuration(cpu_run):
    data, text, out, wall = cpu_run
    rows = data["rows"]
    got = {(r["model"], r["phase"], r["batch"]) for r in rows}
    want = {(m, ph, b) for b in (1, 2) for m, ph in
            (("minilm", "forward"), ("smollm2-135m", "prefill"), ("smollm2-135m", "decode"))}
    assert got == want, data["skipped"]
    cal_name = data["calibration"]["name"]
    for r in rows:
        assert r["measured_ms"] > 0 and r["reps"] >= 2
        for k in ("default", "calibrated"):
            # the error is computed from the two figures in the row, signed
            assert r[f"{k}_error"] == pytest.approx(
                (r[f"{k}_ms"] - r["measured_ms"]) / r["measured_ms"])
        assert r["default_source"] in (default_efficiency_label("gpu"),
                                       default_efficiency_label("cpu"))
        assert cal_name in r["calibrated_source"]
        assert r["default_ms"] != pytest.approx(r["calibrated_ms"])
    for k in ("default", "calibrated"):
        s = data["summary"][k]
        assert s["figures"] == len(rows)
        assert s["median_abs_error"] == pytest.approx(
            statistics.median(abs(r[f"{k}_error"]) for r in rows))
        assert -1 <= s["spearman"] <= 1
        assert f"median |error| {s['median_abs_error']:.1%}" in text
    # the results file: table, wall time, the calibration JSON that was used
    assert "measured ms" in text and "wall time" in text
    cal_text = text.split("calibration JSON:\n", 1)[1]
    assert json.loads(cal_text)["classes"] == data["calibration"]["classes"]
    assert data["meta"]["wall_time_s"] <= 90 and wall < 90
    assert (out / "calibration-cpu.json").is_file()
    assert not list(out.glob("*.tmp"))


def test_cpu_calibration_has_the_roofline_format(cpu_run):
    cal = cpu_run[0]["calibration"]
    cat = load_catalog()
    local = cat["local-cpu"]
    cls = cal["classes"][local.hw_class]
    assert set(cls) >= {"compute_efficiency", "memory_efficiency", "kernel_overhead_us",
                        "host_overhead_us", "gemm_curves", "vector_rates"}
    assert "pytorch-cpu:fp32" in cls["gemm_curves"]
    assert "pytorch-cpu:attention:fp32" in cls["gemm_curves"]
    assert set(cls["vector_rates"]["pytorch-cpu"]) >= {"gelu", "softmax", "rms_norm"}
    eff = efficiency_for(local, cat, "pytorch", cal)
    assert eff.source.startswith("calibration") and eff.curves


def test_deadline_stops_cleanly_and_writes_what_was_measured(tmp_path):
    mod = _script()
    t0 = time.monotonic()
    # a deadline far too short for the plan: it must stop, say so, and still write
    rc = mod.main(["--device", "cpu", "--out", str(tmp_path), "--max-seconds", "5",
                   "--models", "minilm", "--settings", "1x16,8x256,16x512,32x512"])
    wall = time.monotonic() - t0
    data = json.loads(next(tmp_path.glob("gpu_validation-*-cpu.json")).read_text())
    assert data["meta"]["stopped_at_deadline"] is True
    assert any(s["why"].startswith("deadline") for s in data["skipped"])
    assert wall < 5 + 5   # the last job in flight may finish; nothing long starts late
    assert "STOPPED at the deadline" in next(tmp_path.glob("*.txt")).read_text()
    assert rc in (0, 1)   # 1 only when nothing at all was measured


def test_bad_model_name_is_refused(tmp_path, capsys):
    rc = _script().main(["--device", "cpu", "--out", str(tmp_path), "--models", "gpt-9"])
    assert rc == 2 and "gpt-9" in capsys.readouterr().err


def test_every_catalog_gpu_has_its_own_calibration_class():
    cat = load_catalog()
    gpus = [t for t in cat.targets.values() if t.kind == "gpu"]
    classes = [t.hw_class for t in gpus]
    assert len(set(classes)) == len(gpus)
    assert cat["H200"].hw_class == "gpu-h200" and cat["T4"].hw_class == "gpu-t4"
    assert cat["A10G"].hw_class != cat["A10"].hw_class


def test_h200_calibration_is_never_applied_to_a_t4():
    cat = load_catalog()
    cal = {"name": "h200-run", "created": "2026-11-29T00:00:00+00:00", "classes": {
        "gpu-h200": {"compute_efficiency": {"fp16": 0.33}, "memory_efficiency": 0.5,
                     "kernel_overhead_us": {"pytorch": 9.0},
                     "host_overhead_us": {"pytorch": 30.0},
                     "gemm_curves": {"pytorch-cuda:fp16": [[1e6, 0.01], [1e12, 0.6]]},
                     "vector_rates": {}}}}
    h200 = efficiency_for(cat["H200"], cat, "pytorch", cal)
    t4 = efficiency_for(cat["T4"], cat, "pytorch", cal)
    assert h200.memory == 0.5 and "gpu-h200" in h200.source
    assert t4.source == default_efficiency_label("gpu")
    assert t4.memory == cat.defaults.memory_efficiency
    assert not t4.curves and t4.compute == {}
    # nor to the H100, the same chip with slower memory
    assert efficiency_for(cat["H100-SXM"], cat, "pytorch", cal).source == \
        default_efficiency_label("gpu")


def test_gpu_names_map_to_their_catalog_targets():
    from compress.hardware.calibrate_gpu import match_gpu

    cat = load_catalog()
    for name, want in (("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100-SXM"),
                       ("NVIDIA H100 PCIe", "H100-PCIe"), ("Tesla T4", "T4"),
                       ("NVIDIA A10G", "A10G"), ("NVIDIA A10", "A10"), ("NVIDIA L4", "L4"),
                       ("NVIDIA L40S", "L40S"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
                       ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA GeForce RTX 4090", None)):
        assert match_gpu(name, cat) == want, name


def test_tf32_projects_on_tensor_cores_and_only_where_there_are_any():
    mod = _script()
    cat = load_catalog()
    h200 = mod.project("llama-1b", "tf32", 8, 512, 0, cat["H200"], cat, None)
    fp32 = mod.project("llama-1b", "fp32", 8, 512, 0, cat["H200"], cat, None)
    assert h200["ms"] < fp32["ms"] / 3          # 494.5 vs 67 TFLOPS on a compute-bound prefill
    assert "why" in mod.project("llama-1b", "tf32", 1, 128, 0, cat["T4"], cat, None)
    assert "why" in mod.project("llama-1b", "bf16", 1, 128, 0, cat["T4"], cat, None)


def test_calibrate_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")

    out = tmp_path / "cal.json"
    proc = subprocess.run([sys.executable, "-m", "compress", "calibrate", "--device", "cuda",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
