"""Typed records of what a run measures and writes, and the files' schema versions.

From the plan onwards every fact travels in one of these pydantic models:

- `Measurement`: what the measuring process reports for one candidate (quality, fidelity,
  latency per setting, memory, environment), also what the measurement cache stores;
- `SummaryRow`: one candidate's figures side by side, a row of `results.json` and of
  `Run.summary()` (its quality and fidelity metrics flattened into columns, as before);
- `Manifest`: how the run was made (recipe, the `Suite`, plan, versions, timings, stats);
- the gate verdict (`compress.gate.Verdict`) and the calibration
  (`compress.hardware.calibrate.Calibration`) live beside the code that makes them.

Each metric has a direction (`direction`): whether higher or lower is better.

Every file a later command or a notebook reads back carries `schema_version`. Version 0 is
a file written before versions existed (compress before 2026-11-29): it reads as version 1,
which added only the version field. A file of any other version is refused (exit 2) with its
version and the supported ones.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from compress.errors import InputError
from compress.suite import Suite

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (0, 1)  # 0: no schema_version field (before 2026-11-29)


class Direction(StrEnum):
    HIGHER = "higher"
    LOWER = "lower"


# metric -> which way is better; counts (n_eval, scored_tokens) have no direction
DIRECTIONS: dict[str, Direction] = {
    "accuracy": Direction.HIGHER, "macro_f1": Direction.HIGHER,
    "spearman": Direction.HIGHER, "pearson": Direction.HIGHER,
    "perplexity": Direction.LOWER, "next_token_accuracy": Direction.HIGHER,
    "top1_agreement": Direction.HIGHER, "kl_divergence": Direction.LOWER,
    "cosine": Direction.HIGHER,
    "latency_p50": Direction.LOWER, "latency_p90": Direction.LOWER,
    "latency_p95": Direction.LOWER, "latency_p99": Direction.LOWER,
    "latency_mean": Direction.LOWER, "latency_std": Direction.LOWER,
    "throughput": Direction.HIGHER, "spread": Direction.LOWER,
    "size": Direction.LOWER, "peak_rss": Direction.LOWER, "import_peak_rss": Direction.LOWER,
    "inference_delta": Direction.LOWER, "cuda_peak_allocated": Direction.LOWER,
    "cuda_peak_reserved": Direction.LOWER,
}
FIDELITY_METRICS = ("top1_agreement", "kl_divergence", "cosine")


def direction(metric: str) -> Direction | None:
    """Whether a higher or a lower value of `metric` is better (None for counts and for
    metrics of user-supplied evaluate modules, whose sense compress cannot know)."""
    if metric.startswith("f1["):
        return Direction.HIGHER
    if metric.startswith("weights["):
        return Direction.LOWER
    return DIRECTIONS.get(metric)


LOWER_IS_BETTER = frozenset(m for m, d in DIRECTIONS.items() if d is Direction.LOWER)


# ---------------------------------------------------------------- schema versions

def check_version(data: Any, where: str | Path) -> int:
    """The schema version of a file's content; InputError (exit 2) when it is not one this
    compress reads."""
    version = data.get("schema_version", 0) if isinstance(data, dict) else None
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise InputError(f"{where}: schema_version {version!r} is not supported; this "
                         f"compress reads versions {', '.join(map(str, SUPPORTED_VERSIONS))} "
                         "(0: no schema_version, written before 2026-11-29)")
    return version


def load_json(path: str | Path, what: str):
    """A JSON file a user handed us, or InputError naming the file and what is wrong."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({what} expected)") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a readable {what}: not UTF-8 text (offset "
                         f"{exc.start})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a directory, not a file ({what} expected)") from None
    except OSError as exc:
        raise InputError(f"{path}: not a readable {what}: cannot read it ({exc.strerror})") \
            from None
    except ValueError as exc:
        raise InputError(f"{path}: not a readable {what}: not valid JSON ({exc})") from None


def read_json(path: str | Path, what: str) -> dict:
    """A versioned JSON file (`load_json`, then its schema_version checked); InputError
    naming the file when it cannot be read."""
    data = load_json(path, what)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not {what}: expected a JSON object, got "
                         f"{type(data).__name__}")
    check_version(data, path)
    return data


def parse(model: type[BaseModel], data: dict, where: str | Path, what: str):
    """Validate `data` into `model`; InputError naming the file and the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        from compress.yamlsource import describe_error

        raise InputError(f"{where}: not a valid {what} (schema_version "
                         f"{data.get('schema_version', 0)}): {loc}: {describe_error(err)}"
                         ) from None


# ---------------------------------------------------------------- measurement

class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(Record):
    """One latency setting: a forward pass (or a causal-lm prefill or decode step)."""

    batch_size: int
    seq_len: int
    phase: Literal["forward", "prefill", "decode"]
    gen_tokens: int | None = None
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    iterations: int
    throughput: float | None
    throughput_unit: str
    spread: float  # (p95 - p50) / p50
    noisy: bool


class Memory(Record):
    peak_rss_bytes: int | None = None          # VmHWM of the measuring process
    import_peak_rss_bytes: int | None = None   # the same runner's imports alone
    inference_delta_bytes: int | None = None   # the difference
    size_bytes: int | None = None              # serialized model
    weights_bytes_by_dtype: dict[str, int] = {}
    cuda_peak_allocated_bytes: int | None = None
    cuda_peak_reserved_bytes: int | None = None


class Env(Record):
    backend: str
    providers: list[str] = []
    requested: list[str] = []
    fell_back: bool = False
    device: str
    device_name: str | None = None
    threads: int
    # OpenVINO: the inference precision the compiled model used, and the one asked for
    inference_precision: str | None = None
    requested_precision: str | None = None
    cuda_version: str | None = None
    compute_capability: str | None = None
    driver: str | None = None


class Measurement(Record):
    """One candidate measured in its own process (or why it could not be)."""

    status: Literal["ok", "failed"]
    error: str | None = None
    traceback: str | None = None
    quality: dict[str, int | float] = {}
    fidelity: dict[str, float] = {}
    latency: list[LatencyStats] = []
    memory: Memory = Memory()
    env: Env | None = None
    measured_at: str | None = None
    versions: dict[str, str] = {}
    import_baseline_key: str | None = None
    outputs_sha256: str | None = None  # digest of its stored outputs (the store checks it)
    measurement_key: str | None = None
    cached: bool | None = None
    units: dict[str, Any] | None = None           # per-unit results the intervals resample
    quality_inputs: dict[str, Any] | None = None  # how the quality pass fed the model

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def primary_latency(self) -> LatencyStats | None:
        """The first setting's forward (or prefill) record."""
        return next((r for r in self.latency if r.phase in ("forward", "prefill")), None)

    def decode_latency(self) -> LatencyStats | None:
        return next((r for r in self.latency if r.phase == "decode"), None)


def failed(error: str) -> Measurement:
    return Measurement(status="failed", error=error)


# ---------------------------------------------------------------- summary row

# columns a row has only when they apply: quality statistics (runs with per-unit
# results), the kept epoch (stages that trained), a baseline's sanity
OPTIONAL_COLUMNS = frozenset({
    "quality_inputs", "kept_epoch", "epochs_run", "selection", "confidence", "quality_units",
    "n_units", "primary_delta_low", "primary_delta_high", "mcnemar_p", "discordant",
    "chance_level", "above_chance", "sanity"})


class SummaryRow(Record):
    """One candidate's figures side by side. `row()` is the flat dict of results.json and
    `Run.summary()`: quality then fidelity metrics as columns after `error`."""

    candidate: str
    role: Literal["candidate", "baseline"] = "candidate"
    step: str | None = None
    stage: str | None = None
    kind: str | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    quality: dict[str, int | float | None] = {}
    fidelity: dict[str, float | None] = {}
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput: float | None = None
    throughput_unit: str | None = None
    decode_ms_per_token: float | None = None
    decode_tokens_per_s: float | None = None
    noisy: bool | None = None
    size_mb: float | None = None
    peak_rss_mb: float | None = None
    mem_delta_mb: float | None = None
    backend: str | None = None
    device: str | None = None
    device_name: str | None = None
    providers: str | None = None
    fell_back: bool | None = None
    threads: int | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    provenance: str | None = None
    measured_at: str | None = None
    measurement_cached: bool | None = None
    artifact_key: str | None = None
    artifact_path: str | None = None
    stage_wall_time_s: float | None = None
    primary_metric: str | None = None
    baseline: str | None = None
    primary_delta: float | None = None
    quality_inputs: str | None = None   # as_served, batched or window
    kept_epoch: int | None = None       # a stage that trained: the epoch kept
    epochs_run: int | None = None
    selection: str | None = None        # why that epoch was kept
    confidence: float | None = None     # level of the intervals below
    quality_units: str | None = None    # what the intervals resample (examples, pairs, ...)
    n_units: int | None = None
    # "<metric>_low" / "<metric>_high" of each quality figure, flattened into columns by row()
    quality_bounds: dict[str, float | None] = {}
    primary_delta_low: float | None = None
    primary_delta_high: float | None = None
    mcnemar_p: float | None = None
    discordant: list[int] | None = None
    chance_level: float | None = None   # a baseline's figure at chance
    above_chance: bool | None = None
    sanity: str | None = None           # why a baseline's comparisons mean nothing

    def value(self, metric: str) -> float | None:
        """A quality or fidelity figure by name."""
        return self.quality.get(metric, self.fidelity.get(metric))

    def row(self) -> dict:
        out = {}
        for name in type(self).model_fields:
            if name in ("quality", "fidelity", "quality_bounds"):
                out.update(getattr(self, name))
            elif name in OPTIONAL_COLUMNS and getattr(self, name) is None:
                continue  # only a run that has them (or a trained stage) shows these
            else:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_row(cls, row: dict) -> SummaryRow:
        """The record of a flat row: columns that are no field are metrics, fidelity ones
        by name, the rest quality."""
        fields = {k: v for k, v in row.items() if k in cls.model_fields}
        metrics = {k: v for k, v in row.items() if k not in cls.model_fields}
        bounds = {k: metrics.pop(k) for k in list(metrics)
                  if k.endswith(("_low", "_high")) and k.rsplit("_", 1)[0] in metrics}
        return cls(**fields, quality_bounds=bounds,
                   quality={k: v for k, v in metrics.items() if k not in FIDELITY_METRICS},
                   fidelity={k: v for k, v in metrics.items() if k in FIDELITY_METRICS})


# ---------------------------------------------------------------- manifest

class RecipeInfo(Record):
    path: str
    given: str  # the YAML as written
    overrides: list[str] = []
    resolved: dict[str, Any]  # the validated recipe, by alias


class SuiteInfo(Record):
    path: str
    resolved: Suite


class RunStats(Record):
    stage_executions: int = 0
    stage_cache_hits: int = 0
    measurements: int = 0
    measurement_cache_hits: int = 0
    failures: int = 0


class BuildRecord(Record):
    """One stage build of a run: where and when it ran (the task timeline)."""

    step: str
    key: str
    stage: str | None = None
    host: str
    started: str  # ISO time, milliseconds
    finished: str
    wall_time_s: float


class Manifest(Record):
    """How a run was made: enough to reproduce it and to judge its figures."""

    schema_version: int = SCHEMA_VERSION
    recipe: RecipeInfo
    suite: SuiteInfo
    plan: dict[str, Any]  # compress.plan.describe
    seed: int
    versions: dict[str, str]
    git: str | None = None
    cache_dir: str
    started: str
    finished: str
    wall_time_s: float
    stats: RunStats
    executor: str | None = None  # where the stages were built ("local", "ray (...)")
    builds: list[BuildRecord] = []  # the stage builds of this run, in finishing order
