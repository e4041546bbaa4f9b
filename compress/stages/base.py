"""The stage interface and its registry.

A stage turns one artifact into another. It declares a typed config (pydantic,
extra="forbid"), which artifact kinds it accepts and which it produces, and which data
roles it reads, so the planner can refuse a wrong chain before anything runs and can key
each run by everything that determines its output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from compress.artifacts import Artifact, Kind
from compress.yamlsource import refuse_absurd_numbers

if TYPE_CHECKING:
    import pandas as pd

    from compress.checkpoints import CheckpointArea
    from compress.plan import Node


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, absurd numbers too."""

    model_config = ConfigDict(extra="forbid")

    _finite = model_validator(mode="before")(classmethod(
        lambda cls, data: refuse_absurd_numbers(data)))


@dataclass(frozen=True)
class Resources:
    """What one build of a stage needs where it runs (the Ray executor asks the cluster for
    it; the local executor runs one build at a time in its own process)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int | None = None  # None: no reservation

    def ray_options(self) -> dict:
        out = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory_mb:
            out["memory"] = int(self.memory_mb * 1024 * 1024)
        return out


@dataclass
class StageContext:
    """What a running stage may use besides its input artifact and config."""

    task: str
    seed: int
    data: dict[str, pd.DataFrame]  # role -> frame, only the roles the stage declared
    columns: dict[str, tuple[str, str | None]]  # role -> (text column, label column)
    trust_remote_code: bool = False
    progress: Callable[[str, int], Any] | None = None  # (description, total) -> advance(n)
    log: Callable[[str], None] = field(default=lambda msg: None)
    # where a training stage checkpoints and resumes (the engine gives each build its
    # key's area; None: no checkpoints)
    checkpoints: CheckpointArea | None = None

    def texts(self, role: str) -> list[str]:
        return self.data[role][self.columns[role][0]].astype(str).tolist()

    def labels(self, role: str) -> list[str] | None:
        col = self.columns[role][1]
        return None if col is None else self.data[role][col].astype(str).tolist()

    def track(self, description: str, total: int) -> Callable[[int], None]:
        """A progress callback: call it with the number of steps done since the last call."""
        if self.progress is None:
            return lambda n=1: None
        return self.progress(description, total)


class Stage:
    """Base class. Subclasses set the class attributes and implement `run`.

    The planner calls, in order: `parse_config`, `check` (config x task), `resolve`,
    `data_roles`, then per input node `accepts` and `check_input`, then `produces` and
    `properties` for the node it adds. The engine calls `run`; a stage that fails raises
    `StageError` (anything else is reported with its type, as a bug).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    version: ClassVar[str] = "1"  # bump when a change alters what the stage produces
    uses_seed: ClassVar[bool] = False
    # the default baseline: when a recipe's first step is this stage on the model as given,
    # and the recipe names no baseline, candidates are judged against that step's output
    # (a fine-tuned model is the reference its compressed versions must keep up with)
    default_baseline: ClassVar[bool] = False
    # the setting whose value picks the config class, for stages whose config is a pydantic
    # discriminated union (quantize: `backend`); validation errors are reported without it
    tag: ClassVar[str | None] = None

    def parse_config(self, data: dict) -> StageConfig:
        """Validate a step's settings (raises pydantic.ValidationError)."""
        return self.Config.model_validate(data)

    def config_types(self) -> dict[str, type[StageConfig]]:
        """Config schemas to document, by title (several for stages with backends)."""
        return {self.name: self.Config}

    def accepts(self, config: StageConfig) -> set[Kind]:
        raise NotImplementedError

    def produces(self, config: StageConfig, input_kind: Kind) -> Kind:
        raise NotImplementedError

    def produces_format(self, config: StageConfig) -> str | None:
        """The catalog format (compress/hardware/catalog.yaml) its artifact computes in,
        when the stage decides it (quantize); None: read from the stored weights' dtype."""
        return None

    def data_roles(self, config: StageConfig) -> dict[str, bool]:
        """Data roles this stage reads: role -> required."""
        return {}

    def check(self, config: StageConfig, task: str) -> str | None:
        """A reason to refuse this config for this task at validation time, or None."""
        return None

    def check_input(self, config: StageConfig, parent: Node) -> str | None:
        """A reason to refuse this input node (its kind already accepted), or None. The
        node's `properties` are those its producing stage declared."""
        return None

    def label(self, config: StageConfig) -> str:
        """How messages name this step's stage (e.g. 'quantize backend=ort-dynamic-int8')."""
        return self.name

    def properties(self, config: StageConfig, input_properties: dict) -> dict:
        """Facts about the artifact this config produces that later stages may need (e.g.
        {"graph_optimization": "O2"}); the engine writes them into the artifact's metadata
        and the planner hands them to the next stage's `check_input`. JSON values only."""
        return {}

    def resources(self, config: StageConfig) -> Resources:
        """What one build needs: a CPU; and a GPU when the config runs it on CUDA (a
        `device: cuda` setting). Training stages declare the memory they reserve."""
        gpus = 1.0 if getattr(config, "device", None) == "cuda" else 0.0
        return Resources(cpus=1.0, gpus=gpus, memory_mb=self.memory_mb if self.trains else None)

    # stages that train (finetune, distill, prune with recovery) set this: on a CUDA target
    # their builds ask the cluster for a GPU (see `resources`) and reserve `memory_mb`
    trains: ClassVar[bool] = False
    memory_mb: ClassVar[int] = 2048

    def resolve(self, config: StageConfig) -> StageConfig:
        """Replace every `auto` setting by its value on this machine (before hashing)."""
        return config

    def run(self, ctx: StageContext, source: Artifact, config: StageConfig,
            out_dir: Path) -> dict:
        """Write the output model into `out_dir`; return checks for the artifact metadata.
        Raise `compress.errors.StageError` when the output cannot be built or fails its
        check."""
        raise NotImplementedError


STAGES: dict[str, Stage] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to recipes under its `name`."""
    if cls.name in STAGES:
        raise ValueError(f"stage {cls.name!r} registered twice")
    STAGES[cls.name] = cls()
    return cls


PLUGINS_ENV = "COMPRESS_PLUGINS"
# built-in stage modules: registered like plugins, by name, so that this module (which
# every stage imports) imports no stage
BUILTIN = ("compress.stages.distill", "compress.stages.export", "compress.stages.finetune",
           "compress.stages.openvino", "compress.stages.prune", "compress.stages.quantize")


def load_stages() -> None:
    """Register the built-in stages, then those of the modules named in $COMPRESS_PLUGINS
    (comma-separated, importable; each registers its stages with @register)."""
    import importlib
    import os

    for module in BUILTIN:
        importlib.import_module(module)
    for module in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
        try:
            importlib.import_module(module.strip())
        except ImportError as exc:
            from compress.errors import InputError

            raise InputError(f"${PLUGINS_ENV}: cannot import {module!r}: {exc}") from None


def get_stage(name: str) -> Stage:
    load_stages()
    return STAGES[name]


def all_stages() -> dict[str, Stage]:
    load_stages()
    return dict(STAGES)
