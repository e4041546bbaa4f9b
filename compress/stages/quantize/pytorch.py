"""PyTorch backends: torch.ao dynamic INT8 and torchao (int8 weight-only, int8 dynamic,
int4 weight-only on CUDA).

They save `torch.save(state_dict)`: their packed params and tensor subclasses do not fit
safetensors on transformers 4.57. The loader (`compress.loading`) rebuilds the module,
re-applies the transform (`compress.transforms`) and loads the state with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.artifacts import Kind
from compress.errors import StageError
from compress.stages.base import StageConfig
from compress.stages.common import compare, sample_outputs
from compress.stages.quantize.backend import Backend, backend
from compress.torchutil import cuda_available

TORCH_KINDS = {Kind.PYTORCH, Kind.PYTORCH_PRUNED}


class TorchBackend(Backend):
    """The PyTorch family: load any PyTorch kind, re-apply `spec` (compress.transforms),
    compare with the input on the sample texts, save what the loader re-applies."""

    accepts = TORCH_KINDS
    produces = Kind.PYTORCH_QUANTIZED
    saved_as = "torch-state-dict"  # compress.loading's format

    def spec(self, config) -> dict:
        """What compress.transforms re-applies on load."""
        return {"backend": self.name}

    def load(self, ctx, source, config):
        from compress.loading import load_for_inference
        from compress.models import load_tokenizer

        model = load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                                   revision=source.revision)
        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        return model, tok, sample_outputs(model, tok, ctx.task)

    def apply(self, ctx, loaded, config, out_dir):
        from compress.transforms import apply_transform

        spec = self.spec(config)
        return apply_transform(loaded[0], spec), spec

    def save(self, ctx, source, loaded, applied, out_dir):
        from compress.loading import read_load_info, save_for_inference
        from compress.models import weight_inventory

        _, tok, ref = loaded
        model, spec = applied
        out = sample_outputs(model, tok, ctx.task)
        source_info = read_load_info(source.path) or {}
        save_for_inference(model, out_dir, self.saved_as, shapes=source_info.get("shapes"),
                           transform=spec)
        tok.save_pretrained(out_dir)
        return {**compare(ref, out, ctx.task), "weights": weight_inventory(model)}


class TorchDynamicInt8Config(StageConfig):
    backend: Literal["torch-dynamic-int8"]


@backend
class TorchDynamicInt8(TorchBackend):
    name = "torch-dynamic-int8"
    format = "int8-dynamic-torch"  # catalog format key
    description = "PyTorch quantize_dynamic: Linear weights int8, activations quantized at run time"
    Config = TorchDynamicInt8Config
    runs_on = ("cpu",)
    weight_format, activation_format = "int8", "int8 (dynamic)"
    notes = ("CPU kernels only (fbgemm/qnnpack); torch.ao.quantization is deprecated",)


class TorchaoInt8WeightConfig(StageConfig):
    backend: Literal["torchao-int8-weight"]


@backend
class TorchaoInt8Weight(TorchBackend):
    name = "torchao-int8-weight"
    format = "int8-weight-only"  # catalog format key
    description = "torchao int8 weight-only (activations stay float)"
    Config = TorchaoInt8WeightConfig
    package = "torchao"
    weight_format, activation_format = "int8", "float"
    notes = ("halves weight memory vs fp16; speeds up memory-bound decoding on GPU, "
             "no speed-up on CPU",)


class TorchaoInt8DynamicConfig(StageConfig):
    backend: Literal["torchao-int8-dynamic"]


@backend
class TorchaoInt8Dynamic(TorchBackend):
    name = "torchao-int8-dynamic"
    format = "int8-dynamic-torchao"  # catalog format key
    description = "torchao int8 weights with int8 dynamic activations"
    Config = TorchaoInt8DynamicConfig
    package = "torchao"
    weight_format, activation_format = "int8", "int8 (dynamic)"
    notes = ("int8 tensor-core matmuls on CUDA; on CPU it runs but is not faster",)


class TorchaoInt4WeightConfig(StageConfig):
    backend: Literal["torchao-int4-weight"]
    group_size: Literal[32, 64, 128, 256] = Field(128, description="weights per scale group")


@backend
class TorchaoInt4Weight(TorchBackend):
    name = "torchao-int4-weight"
    format = "int4-weight-only"  # catalog format key
    description = "torchao int4 weight-only (bf16 activations), CUDA only"
    Config = TorchaoInt4WeightConfig
    runs_on = ("cuda",)
    bits = 4
    package = "torchao"
    weight_format, activation_format = "int4 (grouped)", "bfloat16"
    notes = ("CUDA only: torchao's int4 kernels need CUDA (seen failing on CPU)",
             "its tinygemm kernels need compute capability 8.0+ (bf16)")

    def spec(self, config):
        return {"backend": self.name, "group_size": config.group_size}

    def load(self, ctx, source, config):
        if not cuda_available():
            raise StageError("torchao-int4-weight needs a CUDA GPU; this machine has none")
        return super().load(ctx, source, config)
