"""Helpers shared by the stages: the check texts, side files, output comparisons.

Stages import from here, never from each other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from compress.artifacts import META_FILE

# sample inputs every stage checks its output on (export against PyTorch, quantize and
# optimize against their input)
SAMPLE_TEXTS = [
    "The central bank raised interest rates by a quarter point on Thursday.",
    "A late goal gave the home side a deserved win in the cup final.",
    "The new phone has a faster chip, a brighter screen and a longer battery life.",
    "Ministers will publish the bill next week after months of debate.",
]


def checkpoint_every_field():
    """The `checkpoint_every` setting of the stages that train. It changes when the state
    is saved, never what is trained, so it is left out of the node key (exclude)."""
    return Field(None, ge=0, exclude=True,
                 description="checkpoint every N optimizer steps (default: about every 2 "
                             "minutes of training; 0: never); a re-run after a kill resumes "
                             "from the last checkpoint")


def copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer and config files travel with the model; the source's weights do not."""
    for f in src.iterdir():
        if f.is_file() and f.suffix not in (".onnx", ".onnx_data") and f.name != META_FILE \
                and not (dst / f.name).exists():
            shutil.copy2(f, dst / f.name)


def masked_max(diff, mask) -> float:
    """Max over real tokens: padded positions of per-token outputs are not compared."""
    return float(diff[mask.astype(bool)].max() if diff.ndim == 3 else diff.max())


def onnx_agreement(reference: Path, output: Path) -> dict:
    """Max abs diff and top-1 agreement of an ONNX model against its ONNX input."""
    import numpy as np

    from compress.encoding import Encoder, OrtModel

    feeds = Encoder(output)(SAMPLE_TEXTS, 64)
    ref = OrtModel(reference)(feeds)
    out = OrtModel(output)(feeds)
    return {"max_abs_diff_vs_input": float(np.max(np.abs(ref - out))),
            "top1_agreement_vs_input": float(np.mean(ref.argmax(-1) == out.argmax(-1)))}


def ov_agreement(reference: Path, output: Path) -> dict:
    """Max abs diff and top-1 agreement of an OpenVINO IR (compiled at fp32) against the
    model it came from (an ONNX model on ONNX Runtime, or an IR), on the sample texts."""
    import numpy as np

    from compress.encoding import Encoder, OrtModel
    from compress.openvino import OvModel

    feeds = Encoder(output)(SAMPLE_TEXTS, 64)
    ref = (OrtModel(reference) if (Path(reference) / "model.onnx").is_file()
           else OvModel(reference, threads=1, precision="fp32"))(feeds)
    out = OvModel(output, threads=1, precision="fp32")(feeds)
    return {"max_abs_diff_vs_input": float(np.max(np.abs(ref - out))),
            "top1_agreement_vs_input": float(np.mean(ref.argmax(-1) == out.argmax(-1)))}


def sample_outputs(model, tok, task: str):
    """A PyTorch model's outputs on SAMPLE_TEXTS: logits, or mean-pooled embeddings."""
    import torch

    from compress.models import mean_pool
    from compress.torchutil import forward_args

    device = next(model.parameters()).device
    batch = tok(SAMPLE_TEXTS, padding=True, truncation=True, max_length=64,
                return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model(**{k: v for k, v in batch.items() if k in forward_args(model)})
    if task == "feature-extraction":
        return mean_pool(out.last_hidden_state.float(), batch["attention_mask"]).cpu()
    return out.logits.float().cpu()


def compare(ref, out, task: str) -> dict:
    """Max abs diff, and cosine (embeddings) or top-1 agreement (logits), vs the input."""
    import torch

    checks = {"max_abs_diff_vs_input": float((ref - out).abs().max())}
    if task == "feature-extraction":
        checks["cosine_vs_input"] = float(torch.nn.functional.cosine_similarity(
            ref, out, dim=-1).mean())
    else:
        checks["top1_agreement_vs_input"] = float(
            (ref.argmax(-1) == out.argmax(-1)).float().mean())
    return checks
