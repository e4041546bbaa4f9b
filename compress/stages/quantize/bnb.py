"""bitsandbytes backends: LLM.int8(), 4-bit NF4 and FP4, through BitsAndBytesConfig.

Their models save and reload with save_pretrained (the loader passes the recorded
`device_map`).
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from compress.artifacts import Kind
from compress.stages.base import StageConfig
from compress.stages.common import compare, sample_outputs
from compress.stages.quantize.backend import Backend, backend
from compress.torchutil import cuda_available


class BnbConfig(StageConfig):
    backend: Literal["bnb-int8", "bnb-nf4", "bnb-fp4"]
    compute_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="4-bit matmul compute dtype; auto: bfloat16 on CUDA 8.0+, float16 "
                            "on older CUDA, float32 on CPU")
    double_quant: bool = Field(False, description="4-bit: quantize the quantization constants "
                                                  "too (saves ~0.4 bit/weight)")
    threshold: float = Field(6.0, gt=0, description="int8: LLM.int8() outlier threshold")


class _Bnb(Backend):
    Config = BnbConfig
    accepts = {Kind.PYTORCH}
    produces = Kind.PYTORCH_QUANTIZED
    package = "bitsandbytes"

    def resolve(self, config):
        if config.compute_dtype == "auto":
            dtype = "float32"
            if cuda_available():
                import torch

                dtype = "bfloat16" if torch.cuda.get_device_capability()[0] >= 8 else "float16"
            config = config.model_copy(update={"compute_dtype": dtype})
        return config

    def load(self, ctx, source, config):
        from compress.loading import load_for_inference
        from compress.models import load_tokenizer

        tok = load_tokenizer(source.path, ctx.trust_remote_code, source.revision)
        ref = sample_outputs(load_for_inference(source.path, ctx.task, ctx.trust_remote_code,
                                                revision=source.revision), tok, ctx.task)
        return source, tok, ref

    def apply(self, ctx, loaded, config, out_dir):
        """Reload the input through BitsAndBytesConfig (bitsandbytes quantizes on load)."""
        import torch

        from compress.models import load_pytorch
        from compress.quiet import import_transformers, quiet_fds, verbose

        tf = import_transformers()
        if not verbose():  # "Failed to load CPU gemm_4bit_forward from kernels-community"
            logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        if self.name == "bnb-int8":
            qc = tf.BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.threshold)
        else:
            qc = tf.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=self.name.removeprefix("bnb-"),
                bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype),
                bnb_4bit_use_double_quant=config.double_quant)
        with quiet_fds():
            source = loaded[0]
            return load_pytorch(source.path, ctx.task, ctx.trust_remote_code,
                                source.revision, quantization_config=qc,
                                device_map=_device())

    def save(self, ctx, source, loaded, applied, out_dir):
        from compress.loading import save_for_inference
        from compress.models import weight_inventory

        _, tok, ref = loaded
        out = sample_outputs(applied, tok, ctx.task)
        save_for_inference(applied, out_dir, "hf", load_kwargs={"device_map": _device()})
        tok.save_pretrained(out_dir)
        return {**compare(ref, out, ctx.task), "weights": weight_inventory(applied),
                "device": _device()}


def _device() -> str:
    return "cuda" if cuda_available() else "cpu"


@backend
class BnbInt8(_Bnb):
    name = "bnb-int8"
    format = "int8-bnb"  # catalog format key
    description = "bitsandbytes LLM.int8() through BitsAndBytesConfig"
    weight_format, activation_format = "int8 (+fp16 outliers)", "float16"
    notes = ("saves memory but is slower than fp16 on GPU", "very slow on CPU")


@backend
class BnbNf4(_Bnb):
    name = "bnb-nf4"
    format = "int4-bnb"  # catalog format key
    description = "bitsandbytes 4-bit NormalFloat weights"
    bits = 4
    weight_format, activation_format = "nf4 (blockwise)", "compute_dtype"
    notes = ("saves memory; dequantizes per matmul, so not faster than fp16 at large batch",)


@backend
class BnbFp4(_Bnb):
    name = "bnb-fp4"
    format = "int4-bnb"  # catalog format key
    description = "bitsandbytes 4-bit float weights"
    bits = 4
    weight_format, activation_format = "fp4 (blockwise)", "compute_dtype"
    notes = BnbNf4.notes
