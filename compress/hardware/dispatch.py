"""The cost of one small op in a decode step (compress calibrate), per runtime.

A decode step runs hundreds of batch-1 GEMVs and, between them, thousands of small ops
on one token's vectors (norms, rotary embedding, KV-cache concat, reshapes, transposes,
the shape arithmetic of an exported graph). Each costs its dispatch, and in a decode step
that dispatch runs COLD: every GEMV streams megabytes of weights through the caches, so
the small op finds its code, its kernel's data structures and its operands evicted. A
chain of tiny ops timed alone (`kernel_overhead_us`, hot caches) measured 0.4 us per ORT
node and 2-3 us per PyTorch op on this project's AMD VM; the same ops interleaved with
DRAM-streaming GEMVs cost several times that.

So: a chain of `LAYERS` GEMVs (576 x 1536 fp32, 3.5 MB each, about 270 MB in all: DRAM,
as a decoder's weights) applied to one row, timed with and without a fixed block of small
ops on a [1, 9, 1, 64] slice of each GEMV's output (multiply, two slices, negate, concat,
add, two transposes, shape, reshape: the rotary/reshape pattern of a decoder layer). The
difference divided by the small ops dispatched is the per-op cost in decode. The shapes
are fixed up front, not a candidate's. The two chains are timed in alternating pairs and
the median of the pairs' differences is kept: medians, as the measured latencies the
projection is compared with are, and pairs, so that a slower stretch of a shared machine
falls on both chains of a pair rather than on one of them.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from compress.hardware.timing import ort_session

K, N, LAYERS = 576, 1536, 76      # 76 x 3.5 MB of fp32 weights: streams from DRAM
SMALL_BLOCKS = 4                  # blocks of small ops after each GEMV
ORT_BLOCK = 10                    # ONNX nodes per block
TIME = {"budget_s": 1.6, "min_reps": 7, "max_reps": 60}


def per_op(with_ops: float, without: float, ops: int) -> float:
    """Seconds per small op: the extra time of the chain with them, over their number
    (never negative: a noisy pair gives 0, not a credit)."""
    return max(0.0, (with_ops - without) / ops) if ops else 0.0


def paired(without, with_ops, budget_s: float, min_reps: int, max_reps: int
           ) -> tuple[float, float, float]:
    """(median without, median with, median of the pairs' differences) in seconds, the
    two calls alternated after one warm-up each."""
    without()
    with_ops()
    a, b, start = [], [], time.perf_counter()
    while len(a) < min_reps or (time.perf_counter() - start < budget_s and len(a) < max_reps):
        for fn, out in ((without, a), (with_ops, b)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return (statistics.median(a), statistics.median(b),
            statistics.median(y - x for x, y in zip(a, b, strict=True)))


def _result(ops: int, timed: tuple[float, float, float]) -> dict:
    return {"layers": LAYERS, "small_ops": ops, "seconds_without": timed[0],
            "seconds_with": timed[1], "per_op_s": per_op(timed[2], 0.0, ops)}


def _ort_model(blocks: int):
    from onnx import TensorProto, helper, numpy_helper

    n, rng = helper.make_node, np.random.default_rng(0)

    def const(name, v, dt=np.int64):
        return numpy_helper.from_array(np.asarray(v, dt), name)
    inits = [const("zero", [0]), const("k", [K]), const("ax1", [1]), const("ax3", [3]),
             const("h32", [32]), const("h64", [64]), const("shp", [1, 9, 1, 64]),
             const("flat", [1, K]), const("cos", np.ones((1, 1, 1, 64)), np.float32)]
    nodes, x = [], "X"
    for i in range(LAYERS):
        inits.append(numpy_helper.from_array(
            rng.standard_normal((K, N), np.float32) / np.float32(24), f"W{i}"))
        p = f"l{i}_"
        nodes += [n("MatMul", [x, f"W{i}"], [p + "y"]),
                  n("Slice", [p + "y", "zero", "k", "ax1"], [p + "s"]),
                  n("Reshape", [p + "s", "shp"], [p + "q"])]
        q = p + "q"
        for j in range(blocks):
            r = f"{p}{j}_"
            nodes += [n("Mul", [q, "cos"], [r + "a"]),
                      n("Slice", [r + "a", "zero", "h32", "ax3"], [r + "b"]),
                      n("Slice", [r + "a", "h32", "h64", "ax3"], [r + "c"]),
                      n("Neg", [r + "c"], [r + "d"]),
                      n("Concat", [r + "d", r + "b"], [r + "e"], axis=3),
                      n("Add", [r + "e", q], [r + "f"]),
                      n("Transpose", [r + "f"], [r + "g"], perm=[0, 2, 1, 3]),
                      n("Transpose", [r + "g"], [r + "h"], perm=[0, 2, 1, 3]),
                      n("Shape", [r + "h"], [r + "sh"]),
                      n("Reshape", [r + "h", r + "sh"], [r + "o"])]
            q = r + "o"
        nodes.append(n("Reshape", [q, "flat"], [p + "out"]))
        x = p + "out"
    nodes.append(n("Identity", [x], ["Y"]))
    g = helper.make_graph(nodes, "decode_dispatch",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def ort_decode_dispatch(threads: int, tmp: Path) -> dict:
    """ONNX Runtime: seconds per small node interleaved with DRAM-streaming GEMVs."""
    import onnx

    x = np.random.randn(1, K).astype(np.float32)
    sessions = {}
    for blocks in (0, SMALL_BLOCKS):
        path = tmp / f"dispatch{blocks}.onnx"
        onnx.save(_ort_model(blocks), str(path), save_as_external_data=True,
                  location=path.name + ".data")
        sessions[blocks] = ort_session(str(path), threads)
        for f in tmp.glob(f"dispatch{blocks}.onnx*"):
            f.unlink()
    timed = paired(lambda: sessions[0].run(None, {"X": x}),
                   lambda: sessions[SMALL_BLOCKS].run(None, {"X": x}), **TIME)
    return _result(LAYERS * SMALL_BLOCKS * ORT_BLOCK, timed)


def torch_decode_dispatch(threads: int) -> dict:
    """PyTorch eager: seconds per small aten op (counted as dispatched) interleaved with
    DRAM-streaming batch-1 Linear layers, each in its own nn.Module as a model's are."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    torch.set_num_threads(threads)

    class Block(torch.nn.Module):
        def __init__(self, small: int):
            super().__init__()
            self.lin = torch.nn.Linear(K, N, bias=False)
            self.small = small

        def forward(self, x):
            y = self.lin(x)[..., :K]
            for _ in range(self.small):
                q = y.view(1, 1, 9, 64).transpose(1, 2)
                q = q * 1.0 + torch.cat((-q[..., 32:], q[..., :32]), -1) * 0.5
                y = q.transpose(1, 2).reshape(1, 1, K)
            return y

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    x = torch.randn(1, 1, K)
    nets, ops = {}, {}
    with torch.inference_mode():
        for small in (0, SMALL_BLOCKS):
            nets[small] = torch.nn.Sequential(*[Block(small) for _ in range(LAYERS)]).eval()
            with Count() as c:
                nets[small](x)
            ops[small] = c.ops
        timed = paired(lambda: nets[0](x), lambda: nets[SMALL_BLOCKS](x), **TIME)
    return _result(ops[SMALL_BLOCKS] - ops[0], timed)
