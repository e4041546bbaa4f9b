"""Recipes: the YAML a researcher writes, validated strictly.

A recipe names the model, the task, the data its stages train or calibrate on, an ordered
pipeline of stage steps (each may sweep settings), which outputs are candidates, the
baseline they are judged against, and the evaluation suite in eval/ that owns the eval data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from compress.data import DataSpec
from compress.models import ModelSpec, Task
from compress.yamlsource import (
    YamlSource,
    apply_overrides,
    refuse_absurd_numbers,
    validation_error,
)

STEP_ID = r"^[a-z][a-z0-9_-]*$"
MODEL_STEP = "model"  # the model as given, usable as input, candidate or baseline


class Step(BaseModel):
    """One stage in the pipeline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=STEP_ID, description="name used by candidates, baseline, --set")
    stage: str = Field(description="a registered stage (see `compress stages`)")
    input: str | None = Field(None, description="step id (or 'model') whose output this step "
                                                "takes; the previous step when omitted")
    settings: dict[str, Any] = Field(default_factory=dict, alias="with",
                                     description="the stage's settings")
    sweep: dict[str, list[Any]] = Field(default_factory=dict,
                                        description="setting -> list of values; each value "
                                                    "is a variant (Cartesian product)")


class ExecutorSpec(BaseModel):
    """Where stage builds run (`compress.executor`); --executor / --ray-address win."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = Field("local", description="local: this process; ray: "
                                          "Ray tasks on a cluster (or a local Ray instance)")
    address: str | None = Field(None, description="ray: the cluster, e.g. "
                                "ray://head:10001 (default: $RAY_ADDRESS, else a Ray "
                                "instance started on this machine)")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Task
    model: ModelSpec
    suite: str = Field(description="path of the evaluation suite, relative to the recipe")
    data: dict[Literal["train", "dev", "calibration"], DataSpec] = Field(default_factory=dict)
    pipeline: list[Step] = Field(default_factory=list)
    candidates: list[str] | None = Field(None, description="step ids whose outputs are "
                                                           "measured; all steps when omitted")
    baseline: str | None = Field(None, description="step id (or 'model') every candidate is "
                                                   "judged against; default: the first "
                                                   "finetune step, else the model as given")
    release: str | None = Field(None, description="the candidate this recipe releases: "
                                "what `compress gate RUN` checks (default: the saved "
                                "recommendation's)")
    seed: int = 0
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec,
                                   description="where stage builds run (local or ray)")

    _finite = model_validator(mode="before")(classmethod(
        lambda cls, data: refuse_absurd_numbers(data)))

    _source: YamlSource | None = PrivateAttr(None)

    @property
    def source(self) -> YamlSource:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._source.path.parent if self._source else Path.cwd()

    def suite_path(self) -> Path:
        p = Path(self.suite)
        return p if p.is_absolute() else self.base_dir / p


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Parse and validate the recipe's schema (`compress.plan.build_plan` checks the rest)."""
    src = YamlSource.load(path)
    apply_overrides(src, [o for o in overrides or [] if not o.startswith("suite.")])
    src.check_numbers()
    try:
        recipe = Recipe.model_validate(src.data)
    except ValidationError as exc:
        raise validation_error(src, exc, model=Recipe) from None
    recipe._source = src
    return recipe


def suite_overrides(overrides: list[str] | None) -> list[str]:
    """`--set suite.latency.iterations=10` applies to the suite the recipe refers to."""
    return [o[len("suite."):] for o in overrides or [] if o.startswith("suite.")]
