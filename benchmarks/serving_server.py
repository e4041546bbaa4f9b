"""The server of benchmarks/serving.py: LitServe with dynamic batching over ONNX Runtime.

    python benchmarks/serving_server.py MODEL_DIR PORT MAX_BATCH DELAY_MS SEQ_LEN [BATCH_LOG]

With BATCH_LOG, every batch the worker runs appends a line `start,size,wall_ms,cpu_ms`
(start on the system-wide monotonic clock), so the benchmark can see which batches formed.
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
        return request["text"]

    def batch(self, inputs):
        return list(inputs)

    def predict(self, texts):
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
