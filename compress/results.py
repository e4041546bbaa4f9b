"""Run directories and results.

A run dir holds:
  manifest.json      recipe as given and resolved, plan, versions, git revision, seed,
                     timings, cache statistics, the suite
  results.json       {"candidates": one summary row per candidate,
                      "measurements": the tidy table, one row per figure}
  results.csv        the summary rows
  measurements.csv / measurements.parquet   the tidy table

Every figure in the tidy table carries its provenance: measured or projected, device and
its name, backend and providers (and whether ONNX Runtime fell back from the provider
asked for), threads, batch size and sequence length, package versions and timestamp.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from compress.errors import InputError
from compress.records import (
    LOWER_IS_BETTER,
    SCHEMA_VERSION,
    Manifest,
    Measurement,
    SummaryRow,
    direction,
    parse,
    read_json,
)
from compress.store import atomic_write_text, fsync_file, write_json
from compress.suite import Suite
from compress.yamlsource import describe_error

__all__ = ["LOWER_IS_BETTER", "Run", "build_results", "load_run", "write_run"]


def tidy_rows(cand, m: Measurement) -> list[dict]:
    """One row per figure, each with its provenance and its direction."""
    if not m.ok:
        return []
    env = m.env
    common = {
        "candidate": cand.name, "role": cand.role, "kind": cand.node.kind.value,
        "provenance": "measured", "device": env.device if env else None,
        "device_name": env.device_name if env else None,
        "backend": env.backend if env else None,
        "providers": ",".join(env.providers) or None if env else None,
        "fell_back": env.fell_back if env else None, "threads": env.threads if env else None,
        "timestamp": m.measured_at,
        "versions": json.dumps(m.versions, sort_keys=True),
        "artifact_key": cand.node.key,
    }
    rows = []

    def add(category, metric, value, unit=None, **extra):
        if value is not None:
            d = direction(metric)
            rows.append({**common, "category": category, "metric": metric,
                         "value": float(value), "unit": unit, "batch_size": None,
                         "seq_len": None, "phase": None, "noisy": None, **extra,
                         "direction": d.value if d else None})

    for metric, value in m.quality.items():
        add("quality", metric, value, {"scored_tokens": "tokens", "n_eval": "examples"}.get(metric))
    for metric, value in m.fidelity.items():
        add("fidelity", metric, value, "nats" if metric == "kl_divergence" else None)
    for r in m.latency:
        setting = {"batch_size": r.batch_size, "seq_len": r.seq_len, "phase": r.phase,
                   "noisy": r.noisy}
        for stat in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms"):
            add("latency", f"latency_{stat[:-3]}", getattr(r, stat), "ms", **setting)
        add("latency", "throughput", r.throughput, r.throughput_unit, **setting)
        add("latency", "spread", r.spread, "(p95-p50)/p50", **setting)
    mem = m.memory
    add("size", "size", mem.size_bytes, "bytes")
    for dtype, nbytes in mem.weights_bytes_by_dtype.items():
        add("size", f"weights[{dtype}]", nbytes, "bytes")
    for name in ("peak_rss_bytes", "import_peak_rss_bytes", "inference_delta_bytes",
                 "cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes"):
        add("memory", name.removesuffix("_bytes"), getattr(mem, name), "bytes")
    return rows


def summary_row(cand, m: Measurement, artifact, primary_metric: str) -> SummaryRow:
    ok = m.ok
    env, mem = m.env, m.memory
    lat, decode = m.primary_latency(), m.decode_latency()
    return SummaryRow(
        candidate=cand.name, role=cand.role, step=cand.node.step,
        stage=cand.node.stage or "model", kind=cand.node.kind.value,
        status="ok" if ok else "failed", error=None if ok else m.error or "not measured",
        quality=dict(m.quality), fidelity=dict(m.fidelity),
        latency_p50_ms=lat.p50_ms if lat else None, latency_p95_ms=lat.p95_ms if lat else None,
        throughput=lat.throughput if lat else None,
        throughput_unit=lat.throughput_unit if lat else None,
        decode_ms_per_token=decode.p50_ms if decode else None,
        decode_tokens_per_s=decode.throughput if decode else None,
        noisy=any(r.noisy for r in m.latency) if ok else None,
        size_mb=mem.size_bytes / 1e6 if mem.size_bytes else None,
        peak_rss_mb=mem.peak_rss_bytes / 1e6 if mem.peak_rss_bytes else None,
        mem_delta_mb=(mem.inference_delta_bytes / 1e6
                      if mem.inference_delta_bytes is not None else None),
        backend=env.backend if env else None, device=env.device if env else None,
        device_name=env.device_name if env else None,
        providers=",".join(env.providers) or None if env else None,
        fell_back=env.fell_back if env else None, threads=env.threads if env else None,
        batch_size=lat.batch_size if lat else None, seq_len=lat.seq_len if lat else None,
        provenance="measured" if ok else None, measured_at=m.measured_at,
        measurement_cached=m.cached, artifact_key=cand.node.key,
        artifact_path=str(artifact.path) if artifact else None,
        stage_wall_time_s=artifact.meta.get("wall_time_s") if artifact else None,
        primary_metric=primary_metric,
        quality_inputs=(m.quality_inputs or {}).get("policy") if ok else None,
        **_kept_epoch(artifact),
    )


def _kept_epoch(artifact) -> dict:
    checks = (artifact.meta.get("checks") or {}) if artifact else {}
    if checks.get("best_epoch") is None:  # only a stage that trained and kept one epoch
        return {}
    return {"kept_epoch": checks["best_epoch"],
            "epochs_run": len(checks.get("history") or []) or None,
            "selection": checks.get("selection")}


def build_results(plan, built, measured: dict[str, Measurement]
                  ) -> tuple[list[SummaryRow], list[dict], dict]:
    """(summary rows, tidy rows, unit data) in the plan's candidate order."""
    from compress.confidence import shared_units
    from compress.measure.runner import eval_payload

    primary = plan.suite.primary_metric
    summary, tidy = [], []
    units = {"task": plan.suite.task, "metrics": plan.suite.quality_metrics(),
             "primary_metric": primary,
             "shared": shared_units(plan.suite.task, eval_payload(
                 plan.suite.task, plan.eval_data, plan.suite.dataset)),
             "candidates": {}}
    for cand in plan.candidates:
        m = measured.get(cand.node.key) or Measurement(status="failed")
        artifact = built.artifacts.get(cand.node.key)
        summary.append(summary_row(cand, m, artifact, primary))
        tidy.extend(tidy_rows(cand, m))
        if m.ok and m.units is not None:
            units["candidates"][cand.name] = m.units
    by_key = {c.node.key: r for c, r in zip(plan.candidates, summary, strict=True)}
    for cand, row in zip(plan.candidates, summary, strict=True):
        base = by_key.get(cand.baseline.key)
        row.baseline = base.candidate if base else None
        value, ref = row.value(primary), base.value(primary) if base else None
        row.primary_delta = value - ref if value is not None and ref is not None else None
    level = plan.suite.targets.confidence or DEFAULT_CONFIDENCE
    add_intervals(summary, tidy, units, level)
    return summary, tidy, units


DEFAULT_CONFIDENCE = 0.95
TIDY_CI = ("ci_low", "ci_high", "confidence", "ci_method", "units", "n_units")


def add_intervals(summary: list[SummaryRow], tidy: list[dict], units: dict,
                  level: float) -> None:
    """Put each quality figure's interval (and the paired interval of each change against
    the baseline) into the summary rows and the tidy table, and judge each baseline
    against chance."""
    from compress.confidence import Intervals, above_chance, fmt

    baselines = {r.candidate: r.baseline for r in summary}
    ivs = Intervals(units, baselines, level)
    primary = units.get("primary_metric")
    lower = primary in LOWER_IS_BETTER
    extra_tidy = []
    for row in summary:
        name = row.candidate
        if name not in units["candidates"]:
            continue
        row.confidence, row.quality_units = level, ivs.unit
        row.n_units = ivs.n_units(name)
        for metric in ivs.metrics():
            fig = ivs.figure(name, metric)
            row.quality_bounds[f"{metric}_low"] = fig.low
            row.quality_bounds[f"{metric}_high"] = fig.high
            for t in tidy:
                if t["candidate"] == name and t["category"] == "quality" and \
                        t["metric"] == metric:
                    t.update(ci_low=fig.low, ci_high=fig.high, confidence=level,
                             ci_method=fig.method, units=ivs.unit, n_units=fig.n_units)
            if fig.delta is not None:
                common = next((t for t in tidy if t["candidate"] == name), None) or {}
                base = {k: v for k, v in common.items() if k not in ("metric", "value")}
                extra_tidy.append({**base, "category": "quality", "metric": f"delta[{metric}]",
                                   "value": fig.delta, "unit": f"vs {row.baseline}",
                                   "ci_low": fig.delta_low, "ci_high": fig.delta_high,
                                   "confidence": level, "ci_method": "paired-bootstrap",
                                   "units": ivs.unit, "n_units": fig.n_units,
                                   "direction": None})
                if fig.mcnemar_p is not None:
                    extra_tidy.append({**base, "category": "quality",
                                       "metric": f"mcnemar_p[{metric}]",
                                       "value": fig.mcnemar_p, "unit": "p-value",
                                       "units": ivs.unit, "n_units": fig.n_units,
                                       "direction": None})
            if metric == primary and fig.delta is not None:
                row.primary_delta_low, row.primary_delta_high = fig.delta_low, fig.delta_high
                row.mcnemar_p = fig.mcnemar_p
                row.discordant = list(fig.discordant) if fig.discordant else None
        if row.baseline == name and primary in ivs.metrics():
            fig, chance = ivs.figure(name, primary), ivs.chance(name)
            ok = above_chance(fig, chance, lower)
            row.chance_level, row.above_chance = chance, ok
            if ok is False:
                row.sanity = (f"baseline {primary} {fmt(fig.value, fig.low, fig.high)} "
                              f"({level:.0%} interval {fig.low:.3f}..{fig.high:.3f}) is not "
                              f"clearly above chance ({chance:.3f}): comparisons against "
                              "it mean nothing")
    tidy.extend(extra_tidy)
    for t in tidy:
        for k in TIDY_CI:
            t.setdefault(k, None)


def write_run(run_dir: Path, manifest: Manifest, summary: list[SummaryRow],
              tidy: list[dict], units: dict | None = None) -> None:
    from compress.confidence import UNITS_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in summary]
    write_json(run_dir / "manifest.json", manifest.model_dump(mode="json"))
    if units is not None:
        write_json(run_dir / UNITS_FILE, units)
    write_json(run_dir / "results.json", {"schema_version": SCHEMA_VERSION,
                                          "candidates": rows, "measurements": tidy})
    atomic_write_text(run_dir / "results.csv", pd.DataFrame(rows).to_csv(index=False))
    frame = pd.DataFrame(tidy)
    atomic_write_text(run_dir / "measurements.csv", frame.to_csv(index=False))
    import uuid

    tmp = run_dir / f".measurements.parquet.{uuid.uuid4().hex}.tmp"
    try:
        frame.to_parquet(tmp, index=False)
        fsync_file(tmp)
        tmp.replace(run_dir / "measurements.parquet")
    finally:
        tmp.unlink(missing_ok=True)


class Run:
    """A finished run directory, read through its typed records.

    `info` (Manifest, holding the `Suite`) and `candidates` (SummaryRow) are the records;
    `manifest` and `rows` are the same as JSON-able dicts, and `summary()` / `table()` as
    DataFrames, for notebooks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "results.json").is_file():
            raise InputError(f"{self.path}: not a run directory (no results.json)")
        mpath, rpath = self.path / "manifest.json", self.path / "results.json"
        self.info: Manifest = parse(Manifest, read_json(mpath, "run manifest"), mpath,
                                    "run manifest")
        data = read_json(rpath, "results file")
        if not isinstance(data.get("candidates"), list):
            raise InputError(f"{rpath}: not a valid results file: no 'candidates' list")
        self.candidates: list[SummaryRow] = [_summary_row(r, rpath) for r in data["candidates"]]
        self.measurements = [{**r, "direction": r.get("direction", _direction(r))}
                             for r in data.get("measurements", [])]
        self.manifest = self.info.model_dump(mode="json")
        self.rows = [r.row() for r in self.candidates]

    def table(self) -> pd.DataFrame:
        """The tidy table: one row per figure, with its provenance and direction."""
        return pd.DataFrame(self.measurements)

    def summary(self) -> pd.DataFrame:
        """One row per candidate: the figures that matter, side by side."""
        return pd.DataFrame(self.rows)

    def units(self) -> dict | None:
        """Per-unit quality results (what the intervals resample), or None for a run
        written before they were kept."""
        from compress.confidence import UNITS_FILE

        path = self.path / UNITS_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def intervals(self, level: float = DEFAULT_CONFIDENCE):
        """compress.confidence.Intervals of this run's quality figures at `level`, or None
        when the run has no unit data."""
        from compress.confidence import Intervals

        units = self.units()
        if units is None:
            return None
        return Intervals(units, {r["candidate"]: r.get("baseline") for r in self.rows}, level)

    @property
    def suite(self) -> Suite:
        return self.info.suite.resolved

    @property
    def task(self) -> str:
        return self.suite.task

    @property
    def primary_metric(self) -> str | None:
        return self.candidates[0].primary_metric if self.candidates else None

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.candidates)

    @property
    def stats(self) -> dict:
        return self.info.stats.model_dump()


def _summary_row(row, where: Path) -> SummaryRow:
    try:
        return SummaryRow.from_row(row if isinstance(row, dict) else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{where}: not a valid results file: candidate "
                         f"{row.get('candidate') if isinstance(row, dict) else row!r}: "
                         f"{'.'.join(map(str, err['loc']))}: {describe_error(err)}") from None


def _direction(row: dict) -> str | None:
    d = direction(str(row.get("metric", "")))
    return d.value if d else None


def load_run(path: str | Path) -> Run:
    return Run(path)
