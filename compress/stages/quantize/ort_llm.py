"""What the ONNX Runtime backends need for decoders: which nodes a user leaves in float,
the MatMulNBits quantizer's algorithms, and calibration feeds.

The algorithms are those of the pinned onnxruntime's
`onnxruntime.quantization.matmul_nbits_quantizer`:

- `default`: ORT's own blockwise round-to-nearest (min/max per block, C++ kernel);
- `rtn`: round-to-nearest through ORT's vendored Intel Neural Compressor code;
- `hqq`: Half-Quadratic Quantization, scales and zero points fitted per block without data
  (always asymmetric; float zero points);
- `gptq`: GPTQ, error-compensating weight updates from the Hessian of the calibration
  activations (data role `calibration`);
- `k_quant`: llama.cpp's k-quant scale search (always asymmetric).

Only RTN-family algorithms of ORT honour `accuracy_level` themselves; the stage sets it on
every MatMulNBits node afterwards, so the setting means the same for every algorithm.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from compress.errors import StageError

ALGORITHMS = ("default", "rtn", "hqq", "gptq", "k_quant")
ASYMMETRIC_ONLY = ("hqq", "k_quant")  # they always write zero points


def match_nodes(graph, patterns: list[str], setting: str = "exclude_nodes") -> list[str]:
    """Node names of `graph` matched by `patterns`: a pattern matches a node whose name it
    equals, one it matches as an fnmatch glob, or one that has the pattern as a segment of
    its `/`-separated path (`lm_head` matches `/lm_head/MatMul`, `down_proj` every
    `/model/layers.N/mlp/down_proj/MatMul`). A pattern that matches no node is an error: a
    typo must not leave quantized what was meant to stay float."""
    names = [n.name for n in graph.node]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names
                if n == pattern or fnmatch.fnmatchcase(n, pattern)
                or pattern in n.strip("/").split("/")]
        if not hits:
            sample = ", ".join(n for n in names[:3] if n)
            raise StageError(f"{setting}: {pattern!r} matches no node of the ONNX graph "
                             f"(node names look like: {sample}; give a name, a glob such as "
                             "'/model/layers.*/mlp/down_proj/MatMul', or a path segment "
                             "such as 'lm_head')")
        chosen += [n for n in hits if n not in chosen]
    return chosen


def algo_config(config, calibration):
    """The quantizer's algorithm config for `config` (an OrtInt4WeightConfig); `calibration`
    returns the calibration feeds (called for gptq only)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    if config.algorithm == "default":
        return None  # MatMulNBitsQuantizer builds its DefaultWeightOnlyQuantConfig
    if config.algorithm == "rtn":
        return mnq.RTNWeightOnlyQuantConfig()
    if config.algorithm == "k_quant":
        return mnq.KQuantWeightOnlyQuantConfig()
    if config.algorithm == "hqq":
        return mnq.HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4)
    return mnq.GPTQWeightOnlyQuantConfig(
        calibration_data_reader=FeedList(calibration()), percdamp=config.percdamp,
        actorder=config.actorder)


class FeedList:
    """A calibration data reader (ORT calls `get_next` until None) that is also iterable
    (GPTQ iterates a deep copy of it)."""

    def __init__(self, feeds: list[dict]):
        self.feeds = feeds
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.feeds)

    def __iter__(self):
        return iter(self.feeds)

    def __deepcopy__(self, memo):
        return FeedList(self.feeds)


def calibration_feeds(ctx, model_dir: Path, max_samples: int, max_length: int,
                      batch_size: int) -> list[dict]:
    """Feeds for the ONNX model in `model_dir` from the calibration texts (data role
    `calibration`), `batch_size` texts a feed, each cut to `max_length` tokens."""
    from compress.encoding import Encoder, OrtModel

    texts = ctx.texts("calibration")[:max_samples]
    encoder, model = Encoder(model_dir), OrtModel(model_dir)
    return [model.feeds(encoder(texts[start:start + batch_size], max_length))
            for start in range(0, len(texts), batch_size)]


def set_accuracy_level(graph, level: int | None) -> None:
    """Write `accuracy_level` on every MatMulNBits node (HQQ and GPTQ do not)."""
    import onnx

    if not level:
        return
    for node in graph.node:
        if node.op_type != "MatMulNBits":
            continue
        kept = [a for a in node.attribute if a.name != "accuracy_level"]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute("accuracy_level", level)])
