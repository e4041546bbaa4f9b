"""The quantize backend interface and its registry.

A backend declares its own config (with a `backend: Literal[...]` field, the tag of the
quantize stage's discriminated union), the artifact kinds it accepts and produces, and
where it runs (as data: see `compress.capabilities`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

from compress.artifacts import Artifact, Kind
from compress.errors import StageError
from compress.stages.base import StageConfig, StageContext
from compress.torchutil import cuda_available

# ORT quantization of a graph optimised at these levels fails in shape inference
OPTIMISED_LEVELS = ("O2", "O3", "O4")


class Backend:
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    accepts: ClassVar[set[Kind]]
    produces: ClassVar[Kind]
    format: ClassVar[str]  # the catalog format its artifact computes in (catalog.yaml)
    # capability data for the recommender (compress.capabilities.backend_capabilities)
    runs_on: ClassVar[tuple[str, ...]] = ("cpu", "cuda")  # where the backend can run at all
    weight_format: ClassVar[str] = ""
    activation_format: ClassVar[str] = ""
    bits: ClassVar[int] = 8
    tasks: ClassVar[tuple[str, ...]] = ("text-classification", "feature-extraction",
                                        "causal-lm")
    notes: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str | None] = None  # import name the backend needs

    def resolve(self, config):
        return config

    def format_for(self, config) -> str:
        """The catalog format this config's artifact computes in (`format`, unless the
        backend's settings choose among several)."""
        return self.format

    def check(self, config, task: str) -> str | None:
        if task not in self.tasks:
            return f"quantize backend {self.name} does not support task {task}"
        if self.package and importlib.util.find_spec(self.package) is None:
            return (f"quantize backend {self.name} needs the {self.package!r} package, "
                    "which is not installed here")
        if "cpu" not in self.runs_on and not cuda_available():
            return (f"quantize backend {self.name} needs a CUDA GPU and this machine has "
                    f"none; on CPU use one of: " + ", ".join(
                        n for n, b in BACKENDS.items() if "cpu" in b.runs_on))
        return None

    def check_input(self, config, parent) -> str | None:
        return None

    def data_roles(self, config) -> dict[str, bool]:
        return {}

    def run(self, ctx: StageContext, source: Artifact, config, out_dir: Path) -> dict:
        """The template every backend follows: `load` the input, `apply` the backend's own
        step, `save` the result into out_dir; returns what `save` reports (the comparison
        with the input and the backend's facts). A family (ort, pytorch, bnb) defines
        `load` and `save` once; each backend overrides `apply`."""
        loaded = self.load(ctx, source, config)
        advance = ctx.track(f"quantize {self.name}", 1)
        applied = self.apply(ctx, loaded, config, out_dir)
        facts = self.save(ctx, source, loaded, applied, out_dir)
        advance(1)
        return facts

    def load(self, ctx: StageContext, source: Artifact, config):
        """Read the input (and whatever the comparison needs from it)."""
        raise NotImplementedError

    def apply(self, ctx: StageContext, loaded, config, out_dir: Path):
        """The backend's own step: quantize what `load` returned."""
        raise NotImplementedError

    def save(self, ctx: StageContext, source: Artifact, loaded, applied, out_dir: Path) -> dict:
        """Write `applied` into out_dir; return the checks (comparison with the input)."""
        raise NotImplementedError


BACKENDS: dict[str, Backend] = {}


def backend(cls):
    """Class decorator: register a backend under its `name`."""
    BACKENDS[cls.name] = cls()
    return cls


def refuse_optimised(backend: str, parent) -> str | None:
    """ORT quantization of a graph optimised at O2/O3 fails in shape inference ("Unable to
    find data type for weight_name... shape_inference failed"): refuse that order. The
    level is the input node's `graph_optimization` property (declared by export/optimize)."""
    level = parent.properties.get("graph_optimization")
    if level in OPTIMISED_LEVELS:
        return (f"quantize backend {backend} cannot take {parent.step!r}: it was optimised at "
                f"{level}, and ONNX Runtime quantization of an O2/O3-optimised graph fails in "
                "shape inference ('Unable to find data type for weight_name'). Export with "
                "optimize: O1 (or none), quantize, then add an `optimize` step at "
                f"{level} after the quantize step")
    return None


def refuse_optimised_source(backend: str, source: Artifact) -> None:
    """The same refusal at run time, from the input artifact's recorded properties."""
    level = source.properties.get("graph_optimization")
    if level in OPTIMISED_LEVELS:
        raise StageError(f"{backend}: the input ONNX model was optimised at {level}; "
                         "quantize before O2/O3 optimisation (see the optimize stage)")
