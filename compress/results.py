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
    )


def build_results(plan, built, measured: dict[str, Measurement]
                  ) -> tuple[list[SummaryRow], list[dict]]:
    """(summary rows, tidy rows) in the plan's candidate order."""
    primary = plan.suite.primary_metric
    summary, tidy = [], []
    for cand in plan.candidates:
        m = measured.get(cand.node.key) or Measurement(status="failed")
        artifact = built.artifacts.get(cand.node.key)
        summary.append(summary_row(cand, m, artifact, primary))
        tidy.extend(tidy_rows(cand, m))
    by_key = {c.node.key: r for c, r in zip(plan.candidates, summary, strict=True)}
    for cand, row in zip(plan.candidates, summary, strict=True):
        base = by_key.get(cand.baseline.key)
        row.baseline = base.candidate if base else None
        value, ref = row.value(primary), base.value(primary) if base else None
        row.primary_delta = value - ref if value is not None and ref is not None else None
    return summary, tidy


def write_run(run_dir: Path, manifest: Manifest, summary: list[SummaryRow],
              tidy: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in summary]
    write_json(run_dir / "manifest.json", manifest.model_dump(mode="json"))
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
                         f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _direction(row: dict) -> str | None:
    d = direction(str(row.get("metric", "")))
    return d.value if d else None


def load_run(path: str | Path) -> Run:
    return Run(path)
