"""Micro-benchmarks of this machine for the roofline calibration (compress.hardware.calibrate
fits them): GEMMs and attention-shaped batched matmuls over a grid of sizes, per precision
and runtime (PyTorch eager, ONNX Runtime), vector ops, a DRAM-sized copy, chains of tiny ops.
Each returns raw timings (seconds per call with the work it did), nothing fitted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from compress.hardware.dispatch import ort_decode_dispatch, torch_decode_dispatch
from compress.hardware.gemv import ort_gemv, torch_gemv
from compress.hardware.timing import llc_mb as _llc_mb
from compress.hardware.timing import loadavg  # noqa: F401 - callers import it from here
from compress.hardware.timing import ort_session as _ort_session
from compress.hardware.timing import time_call as _time

# (M, K, N): tokens x in -> out, the shapes of transformer linear layers, chosen up front
GEMM_SHAPES = [(m, k, n) for m in (1, 16, 128, 512)
               for k, n in ((256, 256), (768, 768), (768, 3072), (3072, 768), (2048, 2048))]
# batched attention GEMMs (heads, tokens, head dim): scores = Q K^T and P V
BMM_SHAPES = [(16, 128, 64), (8, 512, 64), (32, 64, 128)]   # for the scalar fit
# attention-shaped batched matmuls for the size curve: (batch x heads, tokens, context, head
# dim); includes decode-shaped ones (one token against a KV cache)
ATTN_SHAPES = [(4, 16, 16, 32), (12, 32, 32, 64), (12, 128, 128, 32), (12, 128, 128, 64),
               (9, 64, 64, 64), (16, 256, 256, 64), (9, 1, 128, 64), (9, 1, 512, 64)]
# vector ops for the throughput table: (rows, cols) at two sizes, cache-resident and larger
VECTOR_OPS = ("gelu", "silu_mul", "softmax", "layer_norm", "rms_norm", "add")
VECTOR_SIZES = ((64, 768), (512, 1536))

def copy_sizes_mb() -> tuple[int, ...]:
    """STREAM's rule: each array at least 4x the last-level cache (capped at 2 GB), so the
    copy streams from DRAM as a model's weights do."""
    return (int(min(2048, max(256, 4 * _llc_mb()))),)


# memory-bound activation ops, timed with the copies: (op, rows, cols)
ELEMENTWISE = [("gelu", 128, 3072), ("softmax", 2048, 128), ("layer_norm", 512, 768)]


def copy_arrays(mb: int):
    """Source and destination of the copy benchmark, `mb` MiB each, every page written.

    `torch.empty` leaves pages untouched, and the kernel maps every untouched page of a
    read to one shared zero page, which sits in cache: a copy from such a source reads no
    DRAM, runs about twice as fast, and gave a memory efficiency of 1.92 (above 100% of the
    nominal bandwidth). Filling both arrays makes the copy stream from DRAM as weights do."""
    import torch

    src = torch.empty(mb * 2**18).fill_(1.0)
    dst = torch.empty_like(src).fill_(2.0)
    return src, dst


def torch_call(threads: int):
    """One PyTorch inference call as the measurement worker makes it (numpy feeds to
    tensors, `inference_mode`, a module's `__call__`, the output back to numpy) around ONE
    tiny op: its time minus the tiny op's is the per-call host overhead."""
    import torch

    class One(torch.nn.Module):
        def forward(self, input_ids):
            return torch.add(input_ids, input_ids)

    module, feed = One().eval(), np.ones((1, 16), np.float32)

    def call():
        with torch.inference_mode():
            return module(input_ids=torch.from_numpy(feed)).numpy()
    return call


def torch_benchmarks(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {"gemm_fp32": [], "copy": [], "elementwise": [], "tiny": None, "gemm_int8": [],
           "attention_fp32": [], "vector": []}
    with torch.inference_mode():
        for m, k, n in GEMM_SHAPES:
            x, w = torch.randn(m, k), torch.randn(n, k)
            s = _time(lambda x=x, w=w: torch.nn.functional.linear(x, w))
            out["gemm_fp32"].append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                     "bytes": 4.0 * (m * k + k * n + m * n), "seconds": s})
        for h, t, d in BMM_SHAPES:
            q, kt = torch.randn(h, t, d), torch.randn(h, d, t)
            s = _time(lambda q=q, kt=kt: torch.bmm(q, kt))
            out["gemm_fp32"].append({"shape": [h, t, d, t], "flops": 2.0 * h * t * t * d,
                                     "bytes": 4.0 * (2 * h * t * d + h * t * t), "seconds": s})
        for b, t, c, d in ATTN_SHAPES:
            q, kt = torch.randn(b, t, d), torch.randn(b, d, c)
            s = _time(lambda q=q, kt=kt: torch.bmm(q, kt))
            out["attention_fp32"].append({"shape": [b, t, c, d], "flops": 2.0 * b * t * c * d,
                                          "seconds": s})
        for op in VECTOR_OPS:
            for r, c in VECTOR_SIZES:
                x, y = torch.randn(r, c), torch.randn(r, c)
                w = torch.ones(c)
                fn = {"gelu": lambda x=x: torch.nn.functional.gelu(x),
                      "silu_mul": lambda x=x, y=y: torch.nn.functional.silu(x) * y,
                      "softmax": lambda x=x: torch.softmax(x, -1),
                      "layer_norm": lambda x=x, c=c, w=w: torch.nn.functional.layer_norm(
                          x, (c,), w, w),
                      # the eager RMSNorm of Llama-like models in transformers
                      "rms_norm": lambda x=x, w=w: w * (x * torch.rsqrt(
                          x.pow(2).mean(-1, keepdim=True) + 1e-6)),
                      "add": lambda x=x, y=y: x + y}[op]
                out["vector"].append({"op": op, "elements": float(r * c),
                                      "seconds": _time(fn, budget_s=0.08)})
        for op, r, c in ELEMENTWISE:
            x = torch.randn(r, c)
            fn = {"gelu": lambda x=x: torch.nn.functional.gelu(x),
                  "softmax": lambda x=x: torch.softmax(x, -1),
                  "layer_norm": lambda x=x, c=c: torch.nn.functional.layer_norm(x, (c,))}[op]
            out["elementwise"].append({"op": op, "flops": 0.0, "bytes": 2.0 * r * c * 4,
                                       "seconds": _time(fn)})  # recorded, not fitted
        for mb in copy_sizes_mb():
            src, dst = copy_arrays(mb)
            s = _time(lambda d=dst, s_=src: d.copy_(s_))
            out["copy"].append({"mb": mb, "flops": 0.0, "bytes": 2.0 * src.numel() * 4,
                                "seconds": s})
            del src, dst
        a = torch.ones(16)
        s = _time(lambda: [torch.add(a, a) for _ in range(100)]) / 100
        out["tiny"] = s
        out["call"] = _time(torch_call(threads), budget_s=0.08, max_reps=2000)
        out["gemv"] = torch_gemv()
        out["decode_dispatch"] = torch_decode_dispatch(threads)
        try:  # torch.ao dynamic INT8 Linear (fbgemm/onednn), what torch-dynamic-int8 runs
            from torch.ao.nn.quantized.dynamic import Linear as QLinear

            for m, k, n in GEMM_SHAPES:
                lin = QLinear(k, n, dtype=torch.qint8)
                x = torch.randn(m, k)
                s = _time(lambda lin=lin, x=x: lin(x))
                out["gemm_int8"].append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                         "bytes": k * n + 4.0 * m * n + 5.0 * m * k,
                                         "seconds": s})
        except Exception as exc:  # noqa: BLE001 - optional kernel family
            out["gemm_int8_error"] = repr(exc)
    return out


def _matmul_model(k: int, n: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.randn(k, n).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "mm",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                          [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=onnx.IR_VERSION_2023 if hasattr(onnx, "IR_VERSION_2023")
                             else 9)


def _model(nodes, inputs, output, inits=(), opset=17):
    import onnx  # noqa: F401 - helper needs the package
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "op",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                           for n, s in inputs],
                          [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _vector_model(op: str, c: int):
    """The op as torch.onnx exports it (ONNX Runtime's optimizer fuses GELU and RMSNorm
    the same way it does in an exported model)."""
    from onnx import helper, numpy_helper

    def const(name, v):
        return numpy_helper.from_array(np.asarray(v, np.float32), name)
    n = helper.make_node
    inp = [("X", ["R", c])]
    if op == "gelu":
        nodes = [n("Div", ["X", "sqrt2"], ["a"]), n("Erf", ["a"], ["b"]),
                 n("Add", ["b", "one"], ["d"]), n("Mul", ["X", "d"], ["e"]),
                 n("Mul", ["e", "half"], ["Y"])]
        inits = [const("sqrt2", 2 ** 0.5), const("one", 1.0), const("half", 0.5)]
    elif op == "silu_mul":
        nodes = [n("Sigmoid", ["X"], ["s"]), n("Mul", ["X", "s"], ["a"]),
                 n("Mul", ["a", "U"], ["Y"])]
        inits, inp = [], inp + [("U", ["R", c])]
    elif op == "softmax":
        nodes, inits = [n("Softmax", ["X"], ["Y"], axis=-1)], []
    elif op == "layer_norm":
        nodes = [n("LayerNormalization", ["X", "w", "bias"], ["Y"], axis=-1, epsilon=1e-12)]
        inits = [const("w", np.ones(c)), const("bias", np.zeros(c))]
    elif op == "rms_norm":
        nodes = [n("Pow", ["X", "two"], ["p"]), n("ReduceMean", ["p"], ["m"], axes=[-1]),
                 n("Add", ["m", "eps"], ["v"]), n("Sqrt", ["v"], ["r"]),
                 n("Div", ["X", "r"], ["a"]), n("Mul", ["a", "w"], ["Y"])]
        inits = [const("two", 2.0), const("eps", 1e-6), const("w", np.ones(c))]
    else:  # add
        nodes, inits, inp = [n("Add", ["X", "U"], ["Y"])], [], inp + [("U", ["R", c])]
    return _model(nodes, inp, "Y", inits)


def _chain_model(n: int):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["X" if i == 0 else f"h{i}", "X"],
                              ["Y" if i == n - 1 else f"h{i + 1}"]) for i in range(n)]
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [16])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [16])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def ort_benchmarks(threads: int) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from compress.quiet import quiet_fds

    out = {"gemm_fp32": [], "gemm_int8": [], "chain": [], "attention_fp32": [], "vector": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for _, k, n in GEMM_SHAPES:
            if (k, n) in models:
                continue
            fp = Path(tmp) / f"mm{k}x{n}.onnx"
            q = Path(tmp) / f"mm{k}x{n}.int8.onnx"
            fp.write_bytes(_matmul_model(k, n).SerializeToString())
            with quiet_fds():  # ORT's "consider pre-processing" advice is noise here
                quantize_dynamic(str(fp), str(q), weight_type=QuantType.QInt8)
            models[(k, n)] = (_ort_session(str(fp), threads), _ort_session(str(q), threads))
        for m, k, n in GEMM_SHAPES:
            x = np.random.randn(m, k).astype(np.float32)
            fp, q = models[(k, n)]
            for key, sess, wb in (("gemm_fp32", fp, 4.0), ("gemm_int8", q, 1.0)):
                s = _time(lambda sess=sess, x=x: sess.run(None, {"X": x}))
                extra = 5.0 * m * k if key == "gemm_int8" else 0.0  # read x, write int8 x
                out[key].append({"shape": [m, k, n], "flops": 2.0 * m * k * n,
                                 "bytes": wb * k * n + 4.0 * (m * k + m * n) + extra,
                                 "kernels": 3 if key == "gemm_int8" else 1, "seconds": s})
        for b, t, c, d in ATTN_SHAPES:
            from onnx import helper

            sess = _ort_session(_model([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                                       [("A", [b, t, d]), ("B", [b, d, c])], "Y")
                                .SerializeToString(), threads)
            a = np.random.randn(b, t, d).astype(np.float32)
            bm = np.random.randn(b, d, c).astype(np.float32)
            s = _time(lambda sess=sess, a=a, bm=bm: sess.run(None, {"A": a, "B": bm}))
            out["attention_fp32"].append({"shape": [b, t, c, d], "flops": 2.0 * b * t * c * d,
                                          "seconds": s})
        for op in VECTOR_OPS:
            for r, c in VECTOR_SIZES:
                sess = _ort_session(_vector_model(op, c).SerializeToString(), threads)
                feeds = {i.name: np.random.randn(r, c).astype(np.float32)
                         for i in sess.get_inputs()}
                s = _time(lambda sess=sess, f=feeds: sess.run(None, f), budget_s=0.08)
                out["vector"].append({"op": op, "elements": float(r * c), "seconds": s})
        x = np.ones(16, np.float32)
        for n in (1, 8, 32):
            sess = _ort_session(_chain_model(n).SerializeToString(), threads)
            s = _time(lambda s=sess: s.run(None, {"X": x}))
            out["chain"].append({"nodes": n, "seconds": s})
        out["gemv"] = ort_gemv(threads, Path(tmp))
        out["decode_dispatch"] = ort_decode_dispatch(threads, Path(tmp))
    return out
