"""Casts: fp16 and bf16 weights and activations, for GPU targets (safetensors)."""

from __future__ import annotations

from typing import Literal

from compress.stages.base import StageConfig
from compress.stages.quantize.backend import backend
from compress.stages.quantize.pytorch import TorchBackend


class HalfConfig(StageConfig):
    backend: Literal["fp16", "bf16"]


class _Half(TorchBackend):
    Config = HalfConfig
    bits = 16
    saved_as = "safetensors"


@backend
class Fp16(_Half):
    name = "fp16"
    format = "fp16"  # catalog format key
    description = "cast weights and activations to float16 (for GPU targets)"
    weight_format = activation_format = "float16"
    notes = ("tensor cores on every supported GPU; slow on CPU",)


@backend
class Bf16(_Half):
    name = "bf16"
    format = "bf16"  # catalog format key
    description = "cast weights and activations to bfloat16 (for GPU targets)"
    weight_format = activation_format = "bfloat16"
    notes = ("no BF16 on compute capability 7.5 (T4); needs 8.0+ (A100, A10, L4, H100)",)
