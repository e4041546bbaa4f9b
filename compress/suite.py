"""Evaluation suites (eval/*.yaml): the eval data, the metrics, the measurement settings and
the targets, shared by recipes and CI gates so that they all judge on the same ground."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.data import DataSpec
from compress.models import Task
from compress.yamlsource import (
    YamlSource,
    apply_overrides,
    refuse_absurd_numbers,
    validation_error,
)

QUALITY_METRICS = {
    "text-classification": ("accuracy", "macro_f1", "per_class_f1"),
    "feature-extraction": ("spearman", "pearson"),
    "causal-lm": ("perplexity", "next_token_accuracy"),
}
FIDELITY_METRICS = {
    "text-classification": ("top1_agreement", "kl_divergence"),
    "feature-extraction": ("cosine",),
    "causal-lm": ("top1_agreement", "kl_divergence"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _finite = model_validator(mode="before")(classmethod(
        lambda cls, data: refuse_absurd_numbers(data)))


class EvalData(DataSpec):
    """The eval set. Embedding suites score text pairs against human similarity scores."""

    text_pair_column: str | None = Field(None, description="second text of a pair "
                                                           "(feature-extraction)")
    score_column: str | None = Field(None, description="human similarity score of the pair")


class QualitySettings(_Strict):
    metrics: list[str] | None = Field(None, description="default: all of the task's metrics")
    max_length: int = Field(128, ge=8, description="tokens per example (truncated); the "
                                                   "window for causal-lm perplexity")
    stride: int | None = Field(None, ge=1, description="causal-lm sliding-window stride "
                                                       "(default: max_length / 2)")
    max_tokens: int | None = Field(None, ge=16, description="causal-lm: score at most this "
                                                            "many tokens of the text")
    batch_size: int = Field(16, ge=1, description="examples per batch with inputs: batched")
    inputs: Literal["as_served", "batched"] = Field(
        "as_served", description="as_served: score quality on inputs shaped as latency is "
        "measured (first latency batch size, padded to the first sequence length), as the "
        "model is served; batched: batch_size examples padded to the longest, truncated at "
        "max_length (faster, but a dynamically quantized model then sees other activation "
        "scales than in service)")
    evaluate_module: str | None = Field(None, description="path of a local Hugging Face "
                                                          "`evaluate` metric module "
                                                          "(classification)")


class FidelitySettings(_Strict):
    metrics: list[str] | None = Field(None, description="default: all of the task's")
    top_k: int = Field(20, ge=1, le=1000, description="causal-lm: KL over the baseline's "
                                                      "top-k tokens plus a tail bucket")


COST_BATCH_SIZES = [1, 2, 4, 8, 16, 32]


class LatencySettings(_Strict):
    batch_sizes: list[int] = Field([1], min_length=1, description="batch sizes to time; "
                                   "'cost' = the preset for cost work, [1, 2, 4, 8, 16, 32], "
                                   "stopping once throughput stops rising")
    stop_when_flat: float | None = Field(None, ge=0, description="stop timing larger batches "
                                         "once throughput rises by less than this fraction "
                                         "(0.05 = 5%) over the best so far")
    seq_lens: list[int] = Field([128], min_length=1, description="tokens per input, padded "
                                                                 "(prompt length for causal-lm)")
    gen_tokens: int = Field(16, ge=1, description="causal-lm: decode steps timed per run")
    warmup: int = Field(5, ge=0)
    iterations: int = Field(50, ge=3, description="timed iterations (at least)")
    min_time_s: float = Field(0.0, ge=0, description="keep timing until this much time passed")
    threads: int = Field(1, ge=1, description="intra-op threads, pinned")
    device: Literal["cpu", "cuda"] = "cpu"
    providers: list[str] | None = Field(None, description="ONNX Runtime execution providers, "
                                                          "in order (default: for the device)")
    openvino_precision: Literal["fp32", "bf16", "f16"] = Field(
        "fp32", description="OpenVINO candidates: the inference precision they are timed AND "
                            "scored at (its CPU plugin would otherwise pick bf16 wherever the "
                            "CPU has it); the precision used is recorded with each measurement")
    noisy_spread: float = Field(0.25, gt=0, description="flag a latency as noisy when "
                                                        "(p95 - p50) / p50 exceeds this")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data):
        if isinstance(data, dict) and data.get("batch_sizes") == "cost":
            data = {**data, "batch_sizes": list(COST_BATCH_SIZES)}
            data.setdefault("stop_when_flat", 0.05)
        return data

    @model_validator(mode="after")
    def _positive(self):
        if any(b < 1 for b in self.batch_sizes) or any(s < 1 for s in self.seq_lens):
            raise ValueError("batch sizes and sequence lengths must be positive")
        return self

    def ort_providers(self) -> list[str]:
        if self.providers:
            return self.providers
        return (["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device == "cuda"
                else ["CPUExecutionProvider"])


class Targets(_Strict):
    """Quality targets against the measured baseline (the recommendation and gate use them)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_drop: float | None = Field(None, ge=0, description="largest allowed absolute drop "
                                                           "of the primary metric")
    max_relative_drop: float | None = Field(None, ge=0, le=1)
    min_recovery: float | None = Field(None, ge=0, description="candidate / baseline of the "
                                                               "primary metric, at least")
    min_value: float | None = Field(None, description="absolute floor of the primary metric")
    min_fidelity: float | None = Field(None, ge=0, le=1, description="floor of top-1 "
                                                                     "agreement or cosine")
    max_latency_ms: float | None = Field(None, gt=0, description="end-to-end latency SLO "
                                         "(queue + batch formation + service) at the "
                                         "latency_percentile; without traffic, the service "
                                         "p95; causal-lm: the full request of gen_tokens")
    latency_percentile: Literal[95, 99] = Field(95, description="percentile of the SLO")
    max_ttft_ms: float | None = Field(None, gt=0, description="causal-lm: time to first "
                                      "token (queue + prefill) SLO")
    max_tpot_ms: float | None = Field(None, gt=0, description="causal-lm: time per output "
                                      "token (decode) SLO")
    max_memory_mb: float | None = Field(None, gt=0)
    confidence: float | None = Field(
        0.95, gt=0, lt=1, description="confidence level of the quality checks: a check "
        "passes only when the interval puts the change within the threshold; null compares "
        "the point values")


class TrafficProfile(_Strict):
    """Expected load: the recommendation counts whole instances at the peak and prices a
    month of them."""

    requests_per_day: float = Field(gt=0)
    peak_factor: float = Field(1.0, ge=1, description="peak rate / mean rate")


class Suite(_Strict):
    name: str
    task: Task
    dataset: EvalData
    quality: QualitySettings = QualitySettings()
    fidelity: FidelitySettings = FidelitySettings()
    latency: LatencySettings = LatencySettings()
    targets: Targets = Targets()
    traffic: TrafficProfile | None = None
    measure_on: list[str] = Field([], description="catalog GPU targets to measure every "
                                  "candidate on, on a Ray cluster's nodes of that GPU "
                                  "(e.g. [T4, L4, A10G]); their figures replace the "
                                  "projections for those pairs (compress.target_measure)")

    @model_validator(mode="after")
    def _metrics_fit_task(self):
        for section, table in (("quality", QUALITY_METRICS), ("fidelity", FIDELITY_METRICS)):
            chosen = getattr(self, section).metrics
            allowed = table[self.task]
            bad = [m for m in chosen or [] if m not in allowed]
            if bad:
                raise ValueError(f"{section}.metrics: {bad} not available for {self.task}; "
                                 f"expected some of: {', '.join(allowed)}")
        if self.task == "feature-extraction" and not (
                self.dataset.text_pair_column and self.dataset.score_column):
            raise ValueError("dataset: feature-extraction suites need text_pair_column and "
                             "score_column (pairs scored by people)")
        if self.task == "text-classification" and not self.dataset.label_column:
            raise ValueError("dataset.label_column: text-classification needs labels")
        return self

    def quality_metrics(self) -> list[str]:
        return list(self.quality.metrics or QUALITY_METRICS[self.task])

    def fidelity_metrics(self) -> list[str]:
        return list(self.fidelity.metrics or FIDELITY_METRICS[self.task])

    @property
    def primary_metric(self) -> str:
        return self.quality_metrics()[0]

    def settings(self) -> dict:
        """What a measurement depends on besides the artifact and eval data (cache key)."""
        latency = self.latency.model_dump()
        if latency["stop_when_flat"] is None:   # keeps the keys of earlier measurements
            del latency["stop_when_flat"]
        if latency["openvino_precision"] == "fp32":  # the same; measure() passes it anyway
            del latency["openvino_precision"]
        return {"task": self.task, "quality": self.quality.model_dump(),
                "fidelity": self.fidelity.model_dump(), "latency": latency,
                "quality_metrics": self.quality_metrics(),
                "fidelity_metrics": self.fidelity_metrics()}


def load_suite(path: str | Path, overrides: list[str] | None = None) -> tuple[Suite, YamlSource]:
    src = YamlSource.load(path, what="suite")
    apply_overrides(src, overrides or [])
    src.check_numbers()
    try:
        suite = Suite.model_validate(src.data)
    except ValidationError as exc:
        raise validation_error(src, exc, model=Suite) from None
    module = suite.quality.evaluate_module
    if module:  # relative to the suite's folder
        path = Path(module) if Path(module).is_absolute() else src.path.parent / module
        if not path.exists():
            raise src.error(("quality", "evaluate_module"), f"file not found: {module}")
        suite.quality.evaluate_module = str(path.resolve())
    return suite, src
