"""quantize: one stage, several backends, chosen by the `backend` setting.

The stage's config is a pydantic discriminated union on `backend`: each backend module
(by family: `ort`, `nncf` (OpenVINO), `pytorch` (torch.ao and torchao), `bnb`, `casts`)
declares its config class with a `backend: Literal[...]` tag, the artifact kinds it
accepts and produces, and where it runs (as data: see `compress.capabilities`), so that
a wrong chain or an unsupported device is refused at validation, not after an hour of work.

To add a backend: write its config and a `Backend` subclass decorated with `@backend` in
the module of its family (or a new one imported below); the union picks it up.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from compress.stages.base import Stage, StageConfig, register
from compress.stages.quantize import (  # noqa: F401 - registers backends
    bnb,
    casts,
    nncf,
    ort,
    pytorch,
)
from compress.stages.quantize.backend import BACKENDS, OPTIMISED_LEVELS, Backend
from compress.stages.quantize.ort import OrtDynamicInt8Config, detect_isa

__all__ = ["BACKENDS", "OPTIMISED_LEVELS", "Backend", "Quantize", "QuantizeConfig",
           "detect_isa"]

# backends are listed (messages, `compress stages`, capabilities) family by family
FAMILIES = (ort, nncf, pytorch, casts, bnb)
_rank = {m.__name__: i for i, m in enumerate(FAMILIES)}
_ordered = sorted(BACKENDS.items(), key=lambda item: _rank[type(item[1]).__module__])
BACKENDS.clear()
BACKENDS.update(_ordered)
CONFIGS = tuple(dict.fromkeys(b.Config for b in BACKENDS.values()))
QuantizeConfig = Annotated[Union[CONFIGS], Field(discriminator="backend")]  # noqa: UP007
_ADAPTER = TypeAdapter(QuantizeConfig)


@register
class Quantize(Stage):
    name = "quantize"
    description = "Quantize weights (and activations) to INT8/INT4 with a chosen backend"
    Config = OrtDynamicInt8Config  # the default backend's; parse_config takes the union
    tag = "backend"

    def parse_config(self, data: dict) -> StageConfig:
        return _ADAPTER.validate_python(data)

    def config_types(self):
        first = {}  # one entry per config class, titled by its first backend
        for n, b in BACKENDS.items():
            first.setdefault(b.Config, n)
        return {f"quantize backend={n}": c for c, n in first.items()}

    def label(self, config):
        return f"{self.name} backend={config.backend}"

    def accepts(self, config):
        return BACKENDS[config.backend].accepts

    def produces(self, config, input_kind):
        return BACKENDS[config.backend].produces

    def produces_format(self, config):
        return BACKENDS[config.backend].format_for(config)

    def data_roles(self, config):
        return BACKENDS[config.backend].data_roles(config)

    def check(self, config, task):
        return BACKENDS[config.backend].check(config, task)

    def check_input(self, config, parent):
        return BACKENDS[config.backend].check_input(config, parent)

    def resolve(self, config):
        return BACKENDS[config.backend].resolve(config)

    def run(self, ctx, source, config, out_dir):
        return BACKENDS[config.backend].run(ctx, source, config, out_dir)
