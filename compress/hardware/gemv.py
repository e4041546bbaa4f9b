"""Batch-1 GEMV chains for the decode model: the rate at which a decode step streams its
stored weights, per runtime and format, over DRAM-sized chains (compress calibrate)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from compress.hardware.timing import llc_mb, ort_session, time_call

# batch-1 GEMV chains (decode): (K, N) weight matrices of three sizes, applied to ONE row
# in sequence, with enough of them that the weights stream from DRAM (as a decoder's do
# per generated token) rather than sit in the cache; fixed up front, not a candidate's.
GEMV_SHAPES = ((512, 512), (1024, 1024), (1024, 4096))
# the statistic kept of each chain's passes: the median, as the measured p50 latencies the
# projection is judged against (the fastest pass, kept before, charged decode too little)
GEMV_STAT = statistics.median


def gemv_chain_mb() -> int:
    """Stored weight bytes per GEMV chain: eight times the last-level cache the VM reports,
    and at least 256 MB, so each pass comes from DRAM. (Measured on this project's AMD VM,
    which reports 32 MB: an fp32 chain of 64 MB ran at 17.5 GB/s, of 256 MB at 8.8 and of
    512 MB at 8.1 GB/s; the host's caches are larger than the VM says.)"""
    return int(max(256, 8 * llc_mb()))


def _gemv_count(k: int, n: int, bytes_per_weight: float) -> int:
    return max(4, int(round(gemv_chain_mb() * 2**20 / (k * n * bytes_per_weight))))


def _gemv_row(fmt: str, k: int, n: int, count: int, seconds: float, wbytes: float) -> dict:
    """One timed chain: `count` matrices of k x n in `fmt`, each applied once to one row."""
    return {"format": fmt, "shape": [1, k, n], "calls": count, "weight_bytes": wbytes,
            "bytes_per_call": wbytes / count, "flops": 2.0 * k * n * count,
            "seconds": seconds, "bytes_per_s": wbytes / seconds}


def torch_gemv() -> list[dict]:
    """fp32 and torch.ao dynamic INT8 Linear layers, batch 1, chained over DRAM-sized
    weights: the rate at which a decode step streams its stored weights. The median of
    several passes is kept (as for every GEMV chain, GEMV_STAT): the latencies a
    projection is compared with are medians (p50), and the fastest pass was the statistic
    of none of them."""
    import torch

    rows = []
    for k, n in GEMV_SHAPES:
        for fmt, wb in (("fp32", 4.0), ("int8-dynamic-torch", 1.0)):
            count = _gemv_count(k, n, wb)
            if fmt == "fp32":
                layers = [torch.nn.Linear(k, n, bias=False) for _ in range(count)]
            else:
                try:
                    from torch.ao.nn.quantized.dynamic import Linear as QLinear
                except ImportError:
                    continue
                layers = [QLinear(k, n, bias_=False, dtype=torch.qint8) for _ in range(count)]
            x = torch.randn(1, k)

            def chain(layers=layers, x=x):
                for lin in layers:
                    lin(x)
            s = time_call(chain, budget_s=0.6, min_reps=5, stat=GEMV_STAT)
            rows.append(_gemv_row(fmt, k, n, count, s, wb * k * n * count))
            del layers
    return rows


def _gemv_model(k: int, n: int, count: int, fmt: str):
    """`count` independent batch-1 matmuls [1, k] x [k, n] in `fmt`, summed into one
    output: one graph whose weights stream from DRAM on every run. The quantized ones are
    built directly in the ops ONNX Runtime's quantizers emit (DynamicQuantizeMatMul for
    dynamic INT8, MatMulNBits with 4-bit blocks of 32 for INT4) from random packed bytes:
    quantizing a float chain this size would take minutes and gigabytes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, ms = [], [], "com.microsoft"
    for i in range(count):
        name = f"/gemv.{i}/MatMul"
        if fmt == "fp32":
            inits.append(numpy_helper.from_array(
                rng.standard_normal((k, n), np.float32) / np.float32(np.sqrt(k)), f"W{i}"))
            nodes.append(helper.make_node("MatMul", ["X", f"W{i}"], [f"y{i}"], name=name))
        elif fmt == "int8-dynamic-ort":
            inits += [numpy_helper.from_array(rng.integers(-127, 128, (k, n), np.int8),
                                              f"W{i}"),
                      numpy_helper.from_array(np.array(0.01, np.float32), f"s{i}")]
            nodes.append(helper.make_node("DynamicQuantizeMatMul", ["X", f"W{i}", f"s{i}"],
                                          [f"y{i}"], name=name, domain=ms))
        else:  # int4-weight-only: MatMulNBits, symmetric blocks of 32 (as the stage's)
            blocks = k // 32
            inits += [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 16), np.uint8),
                                              f"W{i}"),
                      numpy_helper.from_array(np.full(n * blocks, 0.01, np.float32), f"s{i}")]
            nodes.append(helper.make_node("MatMulNBits", ["X", f"W{i}", f"s{i}"], [f"y{i}"],
                                          name=name, domain=ms, K=k, N=n, bits=4,
                                          block_size=32))
    nodes.append(helper.make_node("Sum", [f"y{i}" for i in range(count)], ["Y"]))
    g = helper.make_graph(nodes, "gemv",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid(ms, 1)], ir_version=9)


def ort_gemv(threads: int, tmp: Path) -> list[dict]:
    """ONNX Runtime fp32, dynamic INT8 and 4-bit (MatMulNBits, block 32) MatMuls at batch
    1, chained over DRAM-sized weights."""
    import onnx

    rows = []
    for k, n in GEMV_SHAPES:
        for fmt, wb in (("fp32", 4.0), ("int8-dynamic-ort", 1.0),
                        ("int4-weight-only", 4.5 / 8)):
            count = _gemv_count(k, n, wb)
            path = tmp / f"gemv{k}x{n}-{fmt}.onnx"
            try:
                model = _gemv_model(k, n, count, fmt)
                onnx.save(model, str(path), save_as_external_data=True,
                          location=path.name + ".data")
                del model
                sess = ort_session(str(path), threads)
            except Exception as exc:  # noqa: BLE001 - an optional kernel family
                rows.append({"format": fmt, "shape": [1, k, n], "error": repr(exc)})
                continue
            finally:
                for f in tmp.glob(f"gemv{k}x{n}-{fmt}*"):
                    f.unlink()
            x = np.random.randn(1, k).astype(np.float32)
            s = time_call(lambda sess=sess, x=x: sess.run(None, {"X": x}), budget_s=0.6,
                      min_reps=5, stat=GEMV_STAT)
            rows.append(_gemv_row(fmt, k, n, count, s, wb * k * n * count))
            del sess
    return rows
