"""The server of benchmarks/serving.py: LitServe with dynamic batching over ONNX Runtime.

    python benchmarks/serving_server.py MODEL_DIR PORT MAX_BATCH DELAY_MS SEQ_LEN [BATCH_LOG]

With BATCH_LOG, every batch the worker runs appends a line `start,size,wall_ms,cpu_ms`
(start on the system-wide monotonic clock), so the benchmark can see which batches formed.
A request `{"calibrate": [k, ...], "repeats": R}` (sent alone) makes the worker time its
own predict path (tokenise + ONNX Runtime) on batches of each k, R times back to back, in
the serving process on its pinned core; it answers [wall p50, wall p95, cpu p50] ms per k
and is not logged as a batch.
(A module of its own: LitServe starts its workers with `spawn`, which pickles the API
class by its module path.) At MAX_BATCH 1 LitServe runs its unbatched loop, which hands
`predict` one request instead of a list."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import litserve as ls
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Api(ls.LitAPI):
    def __init__(self, model_dir: str, seq_len: int, log_path: str | None, **kwargs):
        super().__init__(**kwargs)
        self.model_dir, self.seq_len, self.log_path = model_dir, seq_len, log_path

    def setup(self, device):
        from compress.encoding import Encoder, OrtModel

        self.encoder = Encoder(self.model_dir)
        self.model = OrtModel(self.model_dir, threads=1)
        self.log = open(self.log_path, "a") if self.log_path else None

    def decode_request(self, request):
        return request if "calibrate" in request else request["text"]

    def calibrate(self, req) -> list[list[float]]:
        out = []
        for k in req["calibrate"]:
            texts = [f"calibration text number {i} for the serving benchmark" for i in range(k)]
            wall, cpu = [], []
            for _ in range(int(req.get("repeats", 20))):
                t0, c0 = time.monotonic(), time.thread_time()
                out_k = self.model(self.encoder(texts, self.seq_len, pad_to_max=True))
                [float(np.asarray(o).ravel()[0]) for o in out_k]
                wall.append((time.monotonic() - t0) * 1e3)
                cpu.append((time.thread_time() - c0) * 1e3)
            out.append([float(np.median(wall)), float(np.percentile(wall, 95)),
                        float(np.median(cpu))])
        return out

    def batch(self, inputs):
        return list(inputs)

    def predict(self, texts):
        if isinstance(texts, dict):                         # unbatched loop (max batch 1)
            return self.calibrate(texts)
        if not isinstance(texts, str) and any(isinstance(t, dict) for t in texts):
            return [self.calibrate(t) if isinstance(t, dict) else None for t in texts]
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        t0, c0 = time.monotonic(), time.thread_time()
        out = self.model(self.encoder(texts, self.seq_len, pad_to_max=True))
        y = [float(np.asarray(o).ravel()[0]) for o in out]
        if self.log is not None:
            self.log.write(f"{t0:.6f},{len(texts)},{(time.monotonic() - t0) * 1e3:.3f},"
                           f"{(time.thread_time() - c0) * 1e3:.3f}\n")
            self.log.flush()
        return y[0] if single else y

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"y": output}


if __name__ == "__main__":
    model_dir, port, max_batch, delay_ms, seq_len = sys.argv[1:6]
    api = Api(model_dir, int(seq_len), sys.argv[6] if len(sys.argv) > 6 else None,
              max_batch_size=int(max_batch), batch_timeout=float(delay_ms) / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(port=int(port), num_api_servers=1, generate_client_file=False,
               log_level="warning")
