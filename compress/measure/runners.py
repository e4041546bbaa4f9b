"""Uniform runners over PyTorch, ONNX Runtime and OpenVINO artifacts, for timing and for
quality.

Every runner takes the same numpy feeds (from compress.encoding.Encoder) and returns numpy
outputs, so that the quality figure belongs to the exact artifact and backend that was
timed. The ONNX Runtime and OpenVINO runners import neither torch nor transformers.
Causal-lm runners also expose `prefill` and `decode` with a KV cache, the way a server
generates: ONNX Runtime and OpenVINO share one implementation (`kvsession.KvRunner` over
the session), so that the same loops score and time both.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compress.kvsession import KvRunner


class OrtRunner(KvRunner):
    backend = "onnxruntime"

    def __init__(self, path: str, threads: int, providers: list[str]):
        from compress.encoding import OrtModel

        self.model = OrtModel(path, threads=threads, providers=providers)
        self.requested = providers
        self.providers = self.model.providers
        self.fell_back = self.providers[0] != providers[0]
        self.device = "cuda" if self.providers[0] in ("CUDAExecutionProvider",
                                                      "TensorrtExecutionProvider") else "cpu"
        self.device_name = self.providers[0]

    def sync(self) -> None:
        pass

    def __call__(self, feeds: dict) -> np.ndarray:
        return self.model(feeds)

    def weights_by_dtype(self, path: str) -> dict[str, int]:
        import onnx
        from onnx.helper import tensor_dtype_to_np_dtype

        model = onnx.load(str(Path(path) / "model.onnx"), load_external_data=False)
        out: dict[str, int] = {}
        for init in model.graph.initializer:
            dt = np.dtype(tensor_dtype_to_np_dtype(init.data_type))
            n = int(np.prod(init.dims)) if len(init.dims) else 1
            out[dt.name] = out.get(dt.name, 0) + n * dt.itemsize
        return out


class OpenVinoRunner(KvRunner):
    """An OpenVINO IR on the CPU plugin: threads pinned, one stream, latency mode, and the
    inference precision explicit (the suite's `openvino_precision`); the precision the
    compiled model really uses is recorded (a CPU without bf16 runs fp32). A causal LM
    converted from compress's export keeps its KV-cache inputs: `prefill`/`decode` feed
    them as for ONNX Runtime."""

    backend = "openvino"

    def __init__(self, path: str, threads: int, precision: str):
        from compress.openvino import OvModel

        self.model = OvModel(path, threads=threads, precision=precision)
        self.requested = [f"CPU:{precision}"]
        self.providers = [f"CPU:{self.model.precision}"]
        self.requested_precision = precision
        self.precision = self.model.precision
        self.fell_back = self.precision != precision
        self.device, self.device_name = "cpu", "CPU"

    def sync(self) -> None:
        pass

    def __call__(self, feeds: dict) -> np.ndarray:
        return self.model(feeds)

    def weights_by_dtype(self, path: str) -> dict[str, int]:
        from compress.openvino import ir_weights

        return ir_weights(path)[0]


class TorchRunner:
    backend = "pytorch"

    def __init__(self, path: str, task: str, threads: int, device: str):
        import torch

        from compress.loading import load_for_inference
        from compress.quiet import configure

        configure()
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = load_for_inference(path, task)
        self.providers = []
        self.requested = [device]
        self.fell_back = False
        if device == "cuda":
            if not torch.cuda.is_available():
                self.fell_back = True
                device = "cpu"
            else:
                self.model.to("cuda")
                torch.cuda.reset_peak_memory_stats()
        self.device = device
        self.device_name = (torch.cuda.get_device_name() if device == "cuda"
                            else "cpu")
        import inspect

        self.args = set(inspect.signature(self.model.forward).parameters)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def _tensors(self, feeds: dict) -> dict:
        return {k: self.torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                for k, v in feeds.items() if k in self.args}

    @staticmethod
    def _main(out):
        t = out.logits if hasattr(out, "logits") else out.last_hidden_state
        return t.float().cpu().numpy()

    def __call__(self, feeds: dict) -> np.ndarray:
        with self.torch.inference_mode():
            return self._main(self.model(**self._tensors(feeds)))

    def prefill(self, feeds: dict):
        with self.torch.inference_mode():
            out = self.model(**self._tensors(feeds), use_cache=True)
        return self._main(out), out.past_key_values

    def decode(self, next_ids: np.ndarray, attention_mask: np.ndarray, past):
        with self.torch.inference_mode():
            out = self.model(**self._tensors({"input_ids": next_ids,
                                              "attention_mask": attention_mask}),
                             past_key_values=past, use_cache=True)
        return self._main(out), out.past_key_values

    def weights_by_dtype(self, path: str) -> dict[str, int]:
        out: dict[str, int] = {}

        def add(t):
            torch = self.torch
            if isinstance(t, torch.Tensor) and type(t) not in (torch.Tensor, torch.nn.Parameter) \
                    and hasattr(t, "__tensor_flatten__"):
                # tensor subclasses (torchao) report their logical size: count their parts
                for attr in t.__tensor_flatten__()[0]:
                    add(getattr(t, attr))
            elif isinstance(t, torch.Tensor):
                name = str(t.dtype).replace("torch.", "")
                out[name] = out.get(name, 0) + t.numel() * t.element_size()
            elif isinstance(t, (tuple, list)):  # packed params of torch.ao quantized Linear
                for x in t:
                    add(x)

        for value in self.model.state_dict().values():
            add(value)
        return out

    def cuda_memory(self) -> dict:
        if self.device != "cuda":
            return {}
        return {"cuda_peak_allocated_bytes": self.torch.cuda.max_memory_allocated(),
                "cuda_peak_reserved_bytes": self.torch.cuda.max_memory_reserved()}


def make_runner(path: str, kind: str, task: str, latency: dict):
    if kind == "openvino":
        return OpenVinoRunner(path, latency["threads"],
                              latency.get("openvino_precision") or "fp32")
    if kind.startswith("onnx"):
        providers = latency.get("providers") or (
            ["CUDAExecutionProvider", "CPUExecutionProvider"] if latency["device"] == "cuda"
            else ["CPUExecutionProvider"])
        return OrtRunner(path, latency["threads"], providers)
    return TorchRunner(path, task, latency["threads"], latency["device"])


def timed(run, sync) -> float:
    """Milliseconds of one call, synchronised on CUDA so the kernels are counted."""
    sync()
    t0 = time.perf_counter_ns()
    run()
    sync()
    return (time.perf_counter_ns() - t0) / 1e6
