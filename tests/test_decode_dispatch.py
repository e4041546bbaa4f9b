"""Decode is charged what a decode step really dispatches, at what a dispatch costs there:
the GEMV chains keep the median pass (the statistic of the latencies they are judged
against), every non-GEMV op the artifact runs is counted (ORT's own node count; the eager
ops of the architecture), and each costs the per-op figure measured between
DRAM-streaming GEMVs, not the hot-chain one (issue 13: decode projected 30-40% fast)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from compress.hardware.catalog import load_catalog
from compress.hardware.formats import ArtifactInfo
from compress.hardware.roofline import Efficiency, efficiency_for, project
from compress.hardware.work import count_work
from tests.test_projection_decode import LLAMA as LLAMA_2_LAYERS

LLAMA = {**LLAMA_2_LAYERS, "num_hidden_layers": 3}


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _llama(fmt="fp32"):
    return ArtifactInfo(None, "pytorch", "pytorch", fmt, "fp32", config=dict(LLAMA))


def test_gemv_chains_keep_the_median_pass(monkeypatch):
    """Before: the fastest pass (stat=min), while every measured latency is a p50."""
    from compress.hardware import gemv

    monkeypatch.setattr(gemv, "GEMV_SHAPES", ((64, 128),))
    monkeypatch.setattr(gemv, "gemv_chain_mb", lambda: 1)
    passes = [0.010, 0.012, 0.030]    # seconds of three passes of one chain
    monkeypatch.setattr(gemv, "time_call", lambda fn, stat, **kw: stat(passes))
    rows = gemv.torch_gemv()
    assert rows and all(r["seconds"] == statistics.median(passes) for r in rows)


def test_counted_dispatches_become_the_other_ops_group(cat):
    info = _llama()
    est = count_work(info, cat.formats, 1, 64, "decode", context=72)
    covered = sum(g.kernels for g in est.groups if g.kind not in ("gemm", "head"))
    dec = count_work(info, cat.formats, 1, 64, "decode", context=72, dispatch_ops=covered + 500)
    other = [g for g in dec.groups if g.name == "other ops"]
    assert len(other) == 1 and other[0].kernels == 500 and other[0].kind == "dispatch"
    assert not [g for g in est.groups if g.name == "other ops"]
    # forward/prefill are unchanged by a decode count
    pre = count_work(info, cat.formats, 1, 64, "prefill", dispatch_ops=covered + 500)
    assert "other ops" not in {g.name for g in pre.groups}


def test_decode_dispatch_costs_the_cold_per_op_figure(cat):
    """1,000 extra dispatches at a measured 10 us each add 10 ms to a decode step, not
    1,000 x the hot-chain 1 us; a prefill keeps the hot figure."""
    t = cat["local-cpu"]
    info = _llama()
    base = count_work(info, cat.formats, 1, 64, "decode", context=72)
    covered = sum(g.kernels for g in base.groups if g.kind not in ("gemm", "head"))
    dec = count_work(info, cat.formats, 1, 64, "decode", context=72,
                     dispatch_ops=covered + 1000)
    hot = Efficiency({}, 0.5, 1e-6, 0.0, "test")
    cold = Efficiency({}, 0.5, 1e-6, 0.0, "test", decode_overhead_s=10e-6)
    other = lambda p: next(r for r in p.rows if r["group"] == "other ops")  # noqa: E731
    assert other(project(dec, t, "pytorch-cpu", cold))["overhead_ms"] == pytest.approx(10.0)
    assert other(project(dec, t, "pytorch-cpu", hot))["overhead_ms"] == pytest.approx(1.0)
    pre = count_work(info, cat.formats, 1, 64, "prefill")
    assert project(pre, t, "pytorch-cpu", cold).overhead_s == \
        pytest.approx(project(pre, t, "pytorch-cpu", hot).overhead_s)


def test_calibration_decode_overhead_reaches_the_efficiency(cat):
    cls = {"compute_efficiency": {}, "memory_efficiency": 1.0, "kernel_overhead_us": {},
           "host_overhead_us": {}, "decode_overhead_us": {"onnxruntime": 3.0}}
    cal = {"name": "t", "created": "2026-11-29", "classes": {cat["local-cpu"].hw_class: cls}}
    assert efficiency_for(cat["local-cpu"], cat, "onnxruntime", cal).decode_overhead_s \
        == pytest.approx(3e-6)
    assert efficiency_for(cat["local-cpu"], cat, "pytorch", cal).decode_overhead_s is None


def test_per_op_is_the_extra_time_over_the_ops():
    from compress.hardware.dispatch import per_op

    assert per_op(0.050, 0.038, 3000) == pytest.approx(4e-6)
    assert per_op(0.037, 0.038, 3000) == 0.0     # noise is no credit


def test_paired_timing_keeps_the_median_difference_of_alternating_pairs():
    """A slow stretch that hits both chains of one pair does not move the figure: the
    median of the pairs' differences, not the difference of two separate runs."""
    from compress.hardware import dispatch

    durations = iter([1, 3] + [10, 13, 10, 12, 50, 54, 10, 11, 10, 12])
    monkey_now = {"t": 0.0}

    def fake_perf_counter():
        return monkey_now["t"]

    def call():
        monkey_now["t"] += next(durations)

    import unittest.mock as um

    with um.patch.object(dispatch.time, "perf_counter", fake_perf_counter):
        without, with_ops, diff = dispatch.paired(call, call, budget_s=0.0, min_reps=5,
                                                  max_reps=5)
    assert (without, with_ops, diff) == (10, 12, 2)


def test_ort_node_count_is_what_ort_runs(tmp_path):
    """The count from ORT's optimizer on the weightless graph equals the nodes its
    profiler sees in one run of the real graph; the weight-fed MatMul is the GEMV."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from compress.hardware.nodes import ort_node_counts

    n = helper.make_node
    inits = [numpy_helper.from_array(np.random.randn(64, 1024).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([-1, 64], np.int64), "tail"),
             numpy_helper.from_array(np.ones(1024, np.float32), "g")]
    nodes = [n("MatMul", ["X", "W"], ["y"]), n("Mul", ["y", "g"], ["z"]),
             n("Shape", ["X"], ["s"]), n("Gather", ["s", "one"], ["t"]),
             n("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0], np.int64))),
             n("Concat", ["c", "tail"], ["shape"], axis=0),
             n("Reshape", ["z", "shape"], ["r"]), n("Transpose", ["r"], ["tr"], perm=[0, 2, 1]),
             n("Softmax", ["tr"], ["Y"], axis=-1), n("Identity", ["t"], ["T"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                     [1, "T", 64])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("T", TensorProto.INT64, None)], inits)
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), str(path), save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)
    counts = ort_node_counts(path)
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {"X": np.ones((1, 1, 64), np.float32)})
    events = json.loads(open(sess.end_profiling()).read())
    ran = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    assert counts == {"nodes": len(ran), "gemv": 1}
    assert counts["nodes"] >= 5


def test_ort_node_count_is_taken_once_per_onnx_candidate(monkeypatch, tmp_path):
    """ORT runs the same nodes whatever the prompt: one count serves every setting (it
    was taken again for each prompt length, an ORT session build each time)."""
    from compress.hardware import nodes
    from compress.hardware.projection import CandidateModel

    calls = []

    def counts(path):
        calls.append(path)
        return {"nodes": 40, "gemv": 12}

    monkeypatch.setattr(nodes, "ort_node_counts", counts)
    (tmp_path / "model.onnx").write_bytes(b"")
    info = ArtifactInfo(tmp_path, "onnx", "onnxruntime", "fp32", "fp32",
                        config=dict(LLAMA))
    model = CandidateModel("onnx", None, "onnx", info=info)
    assert [model.decode_dispatch_ops(p) for p in (16, 128, 16)] == [28, 28, 28]
    assert calls == [tmp_path / "model.onnx"]


def test_eager_decode_ops_extrapolate_to_the_direct_count():
    """Counted on one and two layers and extrapolated: the same number a three-layer
    model dispatches, counted directly; and far more than the per-layer estimate."""
    from compress.hardware import nodes

    got = nodes.eager_decode_ops(LLAMA, 3, prompt=8)
    assert got is not None
    assert (got["ops"], got["gemv"]) == nodes._count_decode_step(LLAMA, 3, 8)
    assert got["gemv"] == 3 * 7 + 1          # q, k, v, o, gate, up, down per layer; head
    assert got["ops"] - got["gemv"] > 3 * 30


def test_dispatch_microbenchmarks_run_for_both_runtimes(monkeypatch, tmp_path):
    """Tiny here (3 GEMVs; DRAM-sized in `compress calibrate`): each counts the small ops
    it timed and removes its model files."""
    from compress.hardware import dispatch

    monkeypatch.setattr(dispatch, "LAYERS", 3)
    monkeypatch.setattr(dispatch, "TIME", {"budget_s": 0.0, "min_reps": 2, "max_reps": 2})
    o = dispatch.ort_decode_dispatch(1, tmp_path)
    t = dispatch.torch_decode_dispatch(1)
    assert o["small_ops"] == 3 * dispatch.SMALL_BLOCKS * dispatch.ORT_BLOCK
    assert t["small_ops"] >= 3 * dispatch.SMALL_BLOCKS * 8
    for r in (o, t):
        assert r["seconds_with"] > 0 and r["seconds_without"] > 0 and r["per_op_s"] >= 0
    assert not list(tmp_path.iterdir())
