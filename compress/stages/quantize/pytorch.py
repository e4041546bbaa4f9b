"""PyTorch backends: torch.ao dynamic INT8 and torchao (int8 weight-only, int8 dynamic,
int4 weight-only on CUDA).

They save `torch.save(state_dict)`: their packed params and tensor subclasses do not fit
safetensors on transformers 4.57. The loader (`compress.loading`) rebuilds the module,
re-applies the transform (`compress.transforms`) and loads the state with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from compress.artifacts import Artifact, Kind
from compress.errors import StageError
from compress.stages.base import StageConfig
from compress.stages.common import compare, sample_outputs
from compress.stages.quantize.backend import Backend, backend
from compress.torchutil import cuda_available

TORCH_KINDS = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}


def torch_quantize(ctx, source: Artifact, spec: dict, fmt: str, out_dir: Path) -> dict:
    """Load (any PyTorch kind), transform, compare with the input, save for the loader."""
    from compress.loading import load_for_inference, read_load_info, save_for_inference
    from compress.models import load_tokenizer, weight_inventory
    from compress.transforms import apply_transform

    model = load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                               revision=source.revision)
    tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
    advance = ctx.track(f"quantize {spec['backend']}", 1)
    ref = sample_outputs(model, tok, ctx.task)
    model = apply_transform(model, spec)
    out = sample_outputs(model, tok, ctx.task)
    source_info = read_load_info(source.path) or {}
    save_for_inference(model, out_dir, fmt, shapes=source_info.get("shapes"), transform=spec)
    tok.save_pretrained(out_dir)
    advance(1)
    return {**compare(ref, out, ctx.task), "weights": weight_inventory(model)}


class TorchDynamicInt8Config(StageConfig):
    backend: Literal["torch-dynamic-int8"]


@backend
class TorchDynamicInt8(Backend):
    name = "torch-dynamic-int8"
    format = "int8-dynamic-torch"  # catalog format key
    description = "PyTorch quantize_dynamic: Linear weights int8, activations quantized at run time"
    Config = TorchDynamicInt8Config
    accepts = TORCH_KINDS
    produces = Kind.PYTORCH_QUANTIZED
    runs_on = ("cpu",)
    weight_format, activation_format = "int8", "int8 (dynamic)"
    notes = ("CPU kernels only (fbgemm/qnnpack); torch.ao.quantization is deprecated",)

    def run(self, ctx, source, config, out_dir):
        return torch_quantize(ctx, source, {"backend": self.name}, "torch-state-dict",
                               out_dir)


class TorchaoInt8WeightConfig(StageConfig):
    backend: Literal["torchao-int8-weight"]


@backend
class TorchaoInt8Weight(Backend):
    name = "torchao-int8-weight"
    format = "int8-weight-only"  # catalog format key
    description = "torchao int8 weight-only (activations stay float)"
    Config = TorchaoInt8WeightConfig
    accepts = TORCH_KINDS
    produces = Kind.PYTORCH_QUANTIZED
    package = "torchao"
    weight_format, activation_format = "int8", "float"
    notes = ("halves weight memory vs fp16; speeds up memory-bound decoding on GPU, "
             "no speed-up on CPU",)

    def run(self, ctx, source, config, out_dir):
        return torch_quantize(ctx, source, {"backend": self.name}, "torch-state-dict",
                               out_dir)


class TorchaoInt8DynamicConfig(StageConfig):
    backend: Literal["torchao-int8-dynamic"]


@backend
class TorchaoInt8Dynamic(Backend):
    name = "torchao-int8-dynamic"
    format = "int8-dynamic-torchao"  # catalog format key
    description = "torchao int8 weights with int8 dynamic activations"
    Config = TorchaoInt8DynamicConfig
    accepts = TORCH_KINDS
    produces = Kind.PYTORCH_QUANTIZED
    package = "torchao"
    weight_format, activation_format = "int8", "int8 (dynamic)"
    notes = ("int8 tensor-core matmuls on CUDA; on CPU it runs but is not faster",)

    def run(self, ctx, source, config, out_dir):
        return torch_quantize(ctx, source, {"backend": self.name}, "torch-state-dict",
                               out_dir)


class TorchaoInt4WeightConfig(StageConfig):
    backend: Literal["torchao-int4-weight"]
    group_size: Literal[32, 64, 128, 256] = Field(128, description="weights per scale group")


@backend
class TorchaoInt4Weight(Backend):
    name = "torchao-int4-weight"
    format = "int4-weight-only"  # catalog format key
    description = "torchao int4 weight-only (bf16 activations), CUDA only"
    Config = TorchaoInt4WeightConfig
    accepts = TORCH_KINDS
    produces = Kind.PYTORCH_QUANTIZED
    runs_on = ("cuda",)
    bits = 4
    package = "torchao"
    weight_format, activation_format = "int4 (grouped)", "bfloat16"
    notes = ("CUDA only: torchao's int4 kernels need CUDA (seen failing on CPU)",
             "its tinygemm kernels need compute capability 8.0+ (bf16)")

    def run(self, ctx, source, config, out_dir):
        if not cuda_available():
            raise StageError("torchao-int4-weight needs a CUDA GPU; this machine has none")
        return torch_quantize(ctx, source, {"backend": self.name,
                                             "group_size": config.group_size},
                               "torch-state-dict", out_dir)
