"""`compress calibrate` (issue 14): what it measures is what it says, where it writes, and
how recommend names it. The micro-benchmarks are replaced by a stored set where only the
fit is under test (the full calibration takes 15-40 s; `benchmarks/` runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress.hardware import calibrate as C
from compress.hardware import microbench as mb
from tests.conftest import ROOT

FROZEN = json.loads((ROOT / "tests" / "fixtures" / "pre-schema" / "calibration.json")
                    .read_text())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_copy_benchmark_reads_memory_not_the_zero_page():
    """The copy's source was `torch.empty`: never written, so every read hit the kernel's
    shared zero page (in cache), the copy ran about twice as fast as DRAM allows, and the
    memory efficiency came out at 1.92. Both arrays must be real, resident pages."""
    before = _rss_mb()
    src, dst = mb.copy_arrays(64)
    grew = _rss_mb() - before
    assert grew >= 0.9 * 2 * 64, f"copy arrays hold {grew:.0f} MB resident, expected 128"
    assert bool((src != 0).all()) and bool((dst != src).all())


def _benchmarks(call_s):
    torch_b = dict(FROZEN["benchmarks"]["torch"])
    if call_s is not None:
        torch_b["call"] = torch_b["tiny"] + call_s
    return torch_b, FROZEN["benchmarks"]["onnxruntime"]


@pytest.mark.parametrize("call_s", [20e-6, None])
def test_pytorch_host_overhead_is_measured_or_left_to_the_default(monkeypatch, call_s):
    """It was a hard-coded 0.0 µs, which the roofline then charged every PyTorch
    inference instead of the catalog's default; now the per-call cost of a module call
    around one tiny op, less that op; absent (the default applies) when not measured."""
    from compress.hardware.catalog import load_catalog
    from compress.hardware.roofline import efficiency_for

    torch_b, ort_b = _benchmarks(call_s)
    monkeypatch.setattr(mb, "torch_benchmarks", lambda threads: torch_b)
    monkeypatch.setattr(mb, "ort_benchmarks", lambda threads: ort_b)
    cal = C.calibrate(threads=1)
    fit = cal["classes"][cal["machine"]["hw_class"]]
    cat = load_catalog()
    eff = efficiency_for(cat["local-cpu"], cat, "pytorch", cal)
    if call_s is None:
        assert "pytorch" not in fit["host_overhead_us"]
        assert eff.host_overhead_s == pytest.approx(cat.defaults.host_overhead_us["cpu"] / 1e6)
    else:
        assert fit["host_overhead_us"]["pytorch"] == pytest.approx(call_s * 1e6)
        assert eff.host_overhead_s == pytest.approx(call_s)


def test_torch_call_runs_the_way_the_worker_calls_a_model():
    out = mb.torch_call(1)()
    assert out.shape == (1, 16) and float(out.sum()) == 32.0


def test_calibrate_writes_into_compress_cache_dir(tmp_path, monkeypatch):
    """With COMPRESS_CACHE_DIR set (conftest sets it per test) and no --out, the calibration
    goes into that cache dir (it went to ~/.cache/compress), where recommend finds it; the
    cache dir is marked, so a later `compress run` accepts it."""
    from typer.testing import CliRunner

    from compress.cli import app
    from compress.store import Store

    monkeypatch.delenv("COMPRESS_CALIBRATION", raising=False)
    cache = Path(tmp_path / "cache")
    assert C.default_path() == cache / "calibration" / "calibration.json"
    torch_b, ort_b = _benchmarks(20e-6)
    monkeypatch.setattr(mb, "torch_benchmarks", lambda threads: torch_b)
    monkeypatch.setattr(mb, "ort_benchmarks", lambda threads: ort_b)
    r = CliRunner().invoke(app, ["calibrate", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    saved = json.loads((cache / "calibration" / "calibration.json").read_text())
    Store(cache)  # refused a non-empty, unmarked directory before
    assert C.load()["name"] == saved["name"]
    out = " ".join(r.output.split())
    hw = saved["machine"]["hw_class"]
    assert f"calibrated hardware class {hw} " in out
    assert f"saved as calibration '{saved['name']}'" in out
    copy = torch_b["copy"][-1]  # the memory efficiency says what it is a fraction of
    assert f"moved {copy['bytes'] / copy['seconds'] / 1e9:.1f} GB/s" in out


def test_recommend_names_the_calibration_and_its_class(tmp_path):
    """recommend printed the calibration's name ('cpu-x86-avx2-vm', class plus host) where a
    reader looks for the class calibrate printed: both are labelled."""
    from compress.decide.recommend import _cal_name
    from compress.hardware.catalog import load_catalog
    from compress.hardware.roofline import efficiency_for

    path = tmp_path / "cal.json"
    path.write_text(json.dumps(FROZEN))
    cal = C.load(path)
    label = _cal_name(cal)
    assert f"'{FROZEN['name']}' of hardware class {FROZEN['machine']['hw_class']}" in label
    cat = load_catalog()
    target = next(t for t in cat.targets.values() if t.hw_class in cal["classes"]) \
        if any(t.hw_class in cal["classes"] for t in cat.targets.values()) else None
    if target is None:  # this machine's class differs: relabel local-cpu's class
        target = cat["local-cpu"]
        cal["classes"] = {target.hw_class: next(iter(cal["classes"].values()))}
    src = efficiency_for(target, cat, "onnxruntime", cal).source
    assert src.startswith(f"calibration '{FROZEN['name']}' of class {target.hw_class} (")
