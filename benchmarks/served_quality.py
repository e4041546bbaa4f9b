"""Independent check of "quality as served": score an ONNX classifier on the BBC News test
split with plain onnxruntime and tokenizers, outside compress's measuring code, two ways:

- served: batch 1, padded to 128 tokens (how latency is measured and a batch-1 service
  feeds the model);
- batched: 16 articles per batch, padded to the longest (how compress scored quality
  before `quality.inputs: as_served`).

Only the eval data comes from compress (`compress.data.demo_splits`, the seeded test
split); tokenizing, running and scoring are this script's own. Compare its `served`
figure with what `compress run` reports for the same artifact.

    .venv/bin/python benchmarks/served_quality.py ARTIFACT_DIR [ARTIFACT_DIR ...] \
        [--run RUN_DIR] [--out benchmarks/results/served_quality-DATE.txt]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def score(model_dir: Path, texts: list[str], gold: list[str], batch: int, pad_to: int | None,
          max_length: int = 128) -> float:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length)
    if pad_to:
        tok.enable_padding(pad_id=0, length=pad_to)
    else:
        tok.enable_padding(pad_id=0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    id2label = json.loads((model_dir / "config.json").read_text())["id2label"]
    correct = 0
    for start in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[start:start + batch])
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        logits = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        pred = [id2label[str(i)] for i in logits.argmax(-1)]
        correct += sum(p == g for p, g in zip(pred, gold[start:start + batch], strict=True))
    return correct / len(texts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--run", type=Path, help="a run dir whose accuracies to compare")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from compress.data import demo_splits

    test = demo_splits("bbc-news")["test"]
    texts, gold = test["text"].astype(str).tolist(), test["label"].astype(str).tolist()
    reported = {}
    if args.run:
        rows = json.loads((args.run / "results.json").read_text())["candidates"]
        reported = {r.get("artifact_path"): (r["candidate"], r.get("accuracy"),
                                             r.get("quality_inputs")) for r in rows}
    lines = [f"# benchmarks/served_quality.py {' '.join(sys.argv[1:])}",
             f"# {datetime.now(UTC).isoformat(timespec='seconds')}, {platform.node()}, "
             f"{platform.processor() or platform.machine()}, onnxruntime batch 1 padded to "
             f"128 vs batch 16 padded to the longest; BBC News test split, {len(texts)} "
             "articles", ""]
    for art in args.artifacts:
        served = score(art, texts, gold, 1, 128)
        batched = score(art, texts, gold, 16, None)
        line = f"{art}: served (batch 1, pad 128) {served:.4f}; batched (16, longest) " \
               f"{batched:.4f}"
        if str(art) in reported:
            name, acc, policy = reported[str(art)]
            line += f"; compress run reports {name} {acc:.4f} (quality inputs {policy})"
        lines.append(line)
        print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
