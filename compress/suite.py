"""Evaluation suites (eval/*.yaml): the eval data and measurement settings, shared by
recipes and CI gates so that they all judge on the same ground."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compress.data import DataSpec
from compress.models import Task
from compress.yamlsource import YamlSource, apply_overrides, validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QualitySettings(_Strict):
    metrics: list[Literal["accuracy"]] = Field(["accuracy"], min_length=1)
    max_length: int = Field(128, ge=8, description="tokens per example (truncated)")
    batch_size: int = Field(16, ge=1)


class LatencySettings(_Strict):
    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(128, ge=8, description="tokens per input, padded to this length")
    warmup: int = Field(5, ge=0)
    iterations: int = Field(50, ge=3, description="timed iterations (at least)")
    min_time_s: float = Field(0.0, ge=0, description="keep timing until this much time passed")
    threads: int = Field(1, ge=1, description="intra-op threads, pinned")


class Suite(_Strict):
    name: str
    task: Task
    dataset: DataSpec
    quality: QualitySettings = QualitySettings()
    latency: LatencySettings = LatencySettings()

    def settings(self) -> dict:
        """What a measurement depends on besides the artifact (part of its cache key)."""
        return {"task": self.task, "quality": self.quality.model_dump(),
                "latency": self.latency.model_dump()}


def load_suite(path: str | Path, overrides: list[str] | None = None) -> tuple[Suite, YamlSource]:
    src = YamlSource.load(path, what="suite")
    apply_overrides(src, overrides or [])
    try:
        return Suite.model_validate(src.data), src
    except ValidationError as exc:
        raise validation_error(src, exc, model=Suite) from None
