"""The server of benchmarks/serving.py: LitServe with dynamic batching over ONNX Runtime.

    python benchmarks/serving_server.py MODEL_DIR PORT MAX_BATCH DELAY_MS SEQ_LEN

(A module of its own: LitServe starts its workers with `spawn`, which pickles the API
class by its module path.)"""

from __future__ import annotations

import sys
from pathlib import Path

import litserve as ls
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Api(ls.LitAPI):
    def __init__(self, model_dir: str, seq_len: int, **kwargs):
        super().__init__(**kwargs)
        self.model_dir, self.seq_len = model_dir, seq_len

    def setup(self, device):
        from compress.encoding import Encoder, OrtModel

        self.encoder = Encoder(self.model_dir)
        self.model = OrtModel(self.model_dir, threads=1)

    def decode_request(self, request):
        return request["text"]

    def batch(self, inputs):
        return list(inputs)

    def predict(self, texts):
        out = self.model(self.encoder(list(texts), self.seq_len, pad_to_max=True))
        return [float(np.asarray(o).ravel()[0]) for o in out]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"y": output}


if __name__ == "__main__":
    model_dir, port, max_batch, delay_ms, seq_len = sys.argv[1:6]
    api = Api(model_dir, int(seq_len), max_batch_size=int(max_batch),
              batch_timeout=float(delay_ms) / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(port=int(port), num_api_servers=1, generate_client_file=False,
               log_level="warning")
