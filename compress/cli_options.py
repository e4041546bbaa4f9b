"""The command-line options shared by several `compress` commands (thresholds, traffic,
prices, calibration, confidence), and what they ask of the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help="artifact cache [default: $COMPRESS_CACHE_DIR or the user cache dir]")]
Sets = Annotated[list[str] | None, typer.Option(
    "--set", help="override a recipe setting: key.path=value (repeatable); "
                  "pipeline.<step id>.with.<setting>=..., suite.<path>=... for the suite")]
ExecutorName = Annotated[str | None, typer.Option(
    "--executor", help="local (this machine) or ray (a Ray cluster); run: the recipe's "
    "executor when not given, else local")]
RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", help="the Ray cluster, e.g. ray://HEAD:10001; when not given: the "
    "recipe's, else $RAY_ADDRESS, else a local Ray instance")]

# quality / latency / memory thresholds shared by `recommend` and `gate` (override the suite)
MaxDrop = Annotated[float | None, typer.Option(
    help="max absolute drop of the primary metric vs the run's baseline")]
MaxRelativeDrop = Annotated[float | None, typer.Option(help="max relative drop (0.02 = 2%)")]
MinRecovery = Annotated[float | None, typer.Option(help="min candidate / baseline ratio")]
MinValue = Annotated[float | None, typer.Option(
    help="floor of the primary metric (ceiling if lower is better)")]
MinFidelity = Annotated[float | None, typer.Option(help="floor of top-1 agreement or cosine")]
MaxLatencyMs = Annotated[float | None, typer.Option(help="max p95 latency (ms)")]
MaxMemoryMb = Annotated[float | None, typer.Option(help="max memory (MB)")]
Confidence = Annotated[str | None, typer.Option(
    help="confidence level of the quality checks (e.g. 0.95), or none for point "
    "comparisons [default: the suite's targets.confidence, else 0.95]")]

MaxTtftMs = Annotated[float | None, typer.Option(
    help="causal-lm: time-to-first-token SLO (ms), queue + prefill")]
MaxTpotMs = Annotated[float | None, typer.Option(
    help="causal-lm: time-per-output-token SLO (ms)")]
LatencyPercentile = Annotated[int | None, typer.Option(
    help="percentile of the latency SLO: 95 or 99 [default: the suite's, else 95]")]
RequestsPerDay = Annotated[float | None, typer.Option(
    help="mean traffic; with it, the serving model sizes instances, batching and queueing")]
PeakFactor = Annotated[float | None, typer.Option(
    help="peak rate / mean rate (Poisson arrivals at the peak) [default 1]")]
Prices = Annotated[Path | None, typer.Option(
    help="YAML prices file: {prices: {T4: {price_per_hour, source}}}; the only way to "
    "price local-cpu")]
CatalogFiles = Annotated[list[Path] | None, typer.Option(
    "--catalog", help="extra catalog YAML, merged by target name")]
Calibration = Annotated[Path | None, typer.Option(
    help="calibration JSON [default: the user cache one, if any]")]


def _traffic(requests_per_day, peak_factor) -> dict | None:
    """What the flags say about traffic (a partial profile completes the saved one)."""
    t = {k: v for k, v in (("requests_per_day", requests_per_day),
                           ("peak_factor", peak_factor)) if v is not None}
    return t or None


def _level(confidence):
    """--confidence as given ('none': point values), else the suite's ("suite")."""
    from compress.quality_checks import parse_confidence

    return parse_confidence(confidence) if confidence is not None else "suite"


def _ask(prices=None, catalog_file=None, calibration=None, traffic=None, targets=None,
         target=None):
    from compress.decide.decision import Ask

    return Ask(catalog_files=[str(c) for c in catalog_file or []] or None,
               prices=str(prices) if prices else None,
               calibration=str(calibration) if calibration else None, traffic=traffic,
               targets=targets, target_names=list(target) if target else None)
