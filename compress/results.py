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

from compress.errors import InputError
from compress.store import atomic_write_text, write_json

LOWER_IS_BETTER = {"perplexity", "kl_divergence"}


def _latency_rows(m: dict) -> list[dict]:
    return m.get("latency") or []


def _primary_latency(m: dict) -> dict:
    """The first setting's forward (or prefill) record; decode separately."""
    rows = _latency_rows(m)
    return next((r for r in rows if r["phase"] in ("forward", "prefill")), {})


def tidy_rows(cand, m: dict, artifact) -> list[dict]:
    """One row per figure, each with its provenance."""
    if m.get("status") != "ok":
        return []
    env = m.get("env", {})
    common = {
        "candidate": cand.name, "role": cand.role, "kind": cand.node.kind.value,
        "provenance": "measured", "device": env.get("device"),
        "device_name": env.get("device_name"), "backend": env.get("backend"),
        "providers": ",".join(env.get("providers") or []) or None,
        "fell_back": env.get("fell_back"), "threads": env.get("threads"),
        "timestamp": m.get("measured_at"),
        "versions": json.dumps(m.get("versions") or {}, sort_keys=True),
        "artifact_key": cand.node.key,
    }
    rows = []

    def add(category, metric, value, unit=None, **extra):
        if value is not None:
            rows.append({**common, "category": category, "metric": metric,
                         "value": float(value), "unit": unit, "batch_size": None,
                         "seq_len": None, "phase": None, "noisy": None, **extra})

    for metric, value in (m.get("quality") or {}).items():
        add("quality", metric, value, {"scored_tokens": "tokens", "n_eval": "examples"}.get(metric))
    for metric, value in (m.get("fidelity") or {}).items():
        add("fidelity", metric, value, "nats" if metric == "kl_divergence" else None)
    for r in _latency_rows(m):
        setting = {"batch_size": r["batch_size"], "seq_len": r["seq_len"], "phase": r["phase"],
                   "noisy": r["noisy"]}
        for stat in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "std_ms"):
            add("latency", f"latency_{stat[:-3]}", r[stat], "ms", **setting)
        add("latency", "throughput", r["throughput"], r["throughput_unit"], **setting)
        add("latency", "spread", r["spread"], "(p95-p50)/p50", **setting)
    mem = m.get("memory") or {}
    add("size", "size", mem.get("size_bytes"), "bytes")
    for dtype, nbytes in (mem.get("weights_bytes_by_dtype") or {}).items():
        add("size", f"weights[{dtype}]", nbytes, "bytes")
    for name in ("peak_rss_bytes", "import_peak_rss_bytes", "inference_delta_bytes",
                 "cuda_peak_allocated_bytes", "cuda_peak_reserved_bytes"):
        add("memory", name.removesuffix("_bytes"), mem.get(name), "bytes")
    return rows


def summary_row(cand, m: dict, artifact, primary_metric: str) -> dict:
    ok = m.get("status") == "ok"
    env, mem = m.get("env", {}), m.get("memory", {})
    lat = _primary_latency(m)
    decode = next((r for r in _latency_rows(m) if r["phase"] == "decode"), {})
    row = {
        "candidate": cand.name, "role": cand.role, "step": cand.node.step,
        "stage": cand.node.stage or "model", "kind": cand.node.kind.value,
        "status": "ok" if ok else "failed",
        "error": None if ok else m.get("error", "not measured"),
        **{k: v for k, v in (m.get("quality") or {}).items()},
        **{k: v for k, v in (m.get("fidelity") or {}).items()},
        "latency_p50_ms": lat.get("p50_ms"), "latency_p95_ms": lat.get("p95_ms"),
        "throughput": lat.get("throughput"), "throughput_unit": lat.get("throughput_unit"),
        "decode_ms_per_token": decode.get("p50_ms"),
        "decode_tokens_per_s": decode.get("throughput"),
        "noisy": any(r["noisy"] for r in _latency_rows(m)) if ok else None,
        "size_mb": mem["size_bytes"] / 1e6 if mem.get("size_bytes") else None,
        "peak_rss_mb": mem["peak_rss_bytes"] / 1e6 if mem.get("peak_rss_bytes") else None,
        "mem_delta_mb": (mem["inference_delta_bytes"] / 1e6
                         if mem.get("inference_delta_bytes") is not None else None),
        "backend": env.get("backend"), "device": env.get("device"),
        "device_name": env.get("device_name"),
        "providers": ",".join(env.get("providers") or []) or None,
        "fell_back": env.get("fell_back"), "threads": env.get("threads"),
        "batch_size": lat.get("batch_size"), "seq_len": lat.get("seq_len"),
        "provenance": "measured" if ok else None, "measured_at": m.get("measured_at"),
        "measurement_cached": m.get("cached"), "artifact_key": cand.node.key,
        "artifact_path": str(artifact.path) if artifact else None,
        "stage_wall_time_s": artifact.meta.get("wall_time_s") if artifact else None,
        "primary_metric": primary_metric,
        "quality_inputs": (m.get("quality_inputs") or {}).get("policy") if ok else None,
    }
    checks = (artifact.meta.get("checks") or {}) if artifact else {}
    if checks.get("best_epoch") is not None:  # a stage that trained and kept one epoch
        row["kept_epoch"] = checks["best_epoch"]
        row["epochs_run"] = len(checks.get("history") or []) or None
        row["selection"] = checks.get("selection")
    return row


def build_results(plan, built, measured: dict[str, dict]
                  ) -> tuple[list[dict], list[dict], dict]:
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
        m = measured.get(cand.node.key, {})
        artifact = built.artifacts.get(cand.node.key)
        summary.append(summary_row(cand, m, artifact, primary))
        tidy.extend(tidy_rows(cand, m, artifact))
        if m.get("status") == "ok" and m.get("units") is not None:
            units["candidates"][cand.name] = m["units"]
    by_key = {c.node.key: r for c, r in zip(plan.candidates, summary, strict=True)}
    for cand, row in zip(plan.candidates, summary, strict=True):
        base = by_key.get(cand.baseline.key)
        row["baseline"] = base["candidate"] if base else None
        value, ref = row.get(primary), base.get(primary) if base else None
        row["primary_delta"] = value - ref if value is not None and ref is not None else None
    level = plan.suite.targets.confidence or DEFAULT_CONFIDENCE
    add_intervals(summary, tidy, units, level)
    return summary, tidy, units


DEFAULT_CONFIDENCE = 0.95
TIDY_CI = ("ci_low", "ci_high", "confidence", "ci_method", "units", "n_units")


def add_intervals(summary: list[dict], tidy: list[dict], units: dict, level: float) -> None:
    """Put each quality figure's interval (and the paired interval of each change against
    the baseline) into the summary rows and the tidy table, and judge each baseline
    against chance."""
    from compress.confidence import Intervals, above_chance, fmt

    baselines = {r["candidate"]: r.get("baseline") for r in summary}
    ivs = Intervals(units, baselines, level)
    primary = units.get("primary_metric")
    lower = primary in LOWER_IS_BETTER
    extra_tidy = []
    for row in summary:
        name = row["candidate"]
        if name not in units["candidates"]:
            continue
        row.update(confidence=level, quality_units=ivs.unit, n_units=ivs.n_units(name))
        for metric in ivs.metrics():
            fig = ivs.figure(name, metric)
            row[f"{metric}_low"], row[f"{metric}_high"] = fig.low, fig.high
            for t in tidy:
                if t["candidate"] == name and t["category"] == "quality" and \
                        t["metric"] == metric:
                    t.update(ci_low=fig.low, ci_high=fig.high, confidence=level,
                             ci_method=fig.method, units=ivs.unit, n_units=fig.n_units)
            if fig.delta is not None:
                common = next((t for t in tidy if t["candidate"] == name), None) or {}
                base = {k: v for k, v in common.items() if k not in ("metric", "value")}
                extra_tidy.append({**base, "category": "quality", "metric": f"delta[{metric}]",
                                   "value": fig.delta, "unit": f"vs {row.get('baseline')}",
                                   "ci_low": fig.delta_low, "ci_high": fig.delta_high,
                                   "confidence": level, "ci_method": "paired-bootstrap",
                                   "units": ivs.unit, "n_units": fig.n_units})
                if fig.mcnemar_p is not None:
                    extra_tidy.append({**base, "category": "quality",
                                       "metric": f"mcnemar_p[{metric}]",
                                       "value": fig.mcnemar_p, "unit": "p-value",
                                       "units": ivs.unit, "n_units": fig.n_units})
            if metric == primary and fig.delta is not None:
                row.update(primary_delta_low=fig.delta_low, primary_delta_high=fig.delta_high,
                           mcnemar_p=fig.mcnemar_p,
                           discordant=list(fig.discordant) if fig.discordant else None)
        if row.get("baseline") == name and primary in ivs.metrics():
            fig, chance = ivs.figure(name, primary), ivs.chance(name)
            ok = above_chance(fig, chance, lower)
            row.update(chance_level=chance, above_chance=ok)
            if ok is False:
                row["sanity"] = (f"baseline {primary} {fmt(fig.value, fig.low, fig.high)} "
                                 f"({level:.0%} interval {fig.low:.3f}..{fig.high:.3f}) is not "
                                 f"clearly above chance ({chance:.3f}): comparisons against "
                                 "it mean nothing")
    tidy.extend(extra_tidy)
    for t in tidy:
        for k in TIDY_CI:
            t.setdefault(k, None)


def write_run(run_dir: Path, manifest: dict, summary: list[dict], tidy: list[dict],
              units: dict | None = None) -> None:
    from compress.confidence import UNITS_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "manifest.json", manifest)
    if units is not None:
        write_json(run_dir / UNITS_FILE, units)
    write_json(run_dir / "results.json", {"candidates": summary, "measurements": tidy})
    atomic_write_text(run_dir / "results.csv", pd.DataFrame(summary).to_csv(index=False))
    frame = pd.DataFrame(tidy)
    atomic_write_text(run_dir / "measurements.csv", frame.to_csv(index=False))
    tmp = run_dir / ".measurements.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    tmp.replace(run_dir / "measurements.parquet")


class Run:
    """A finished run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "results.json").is_file():
            raise InputError(f"{self.path}: not a run directory (no results.json)")
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        data = json.loads((self.path / "results.json").read_text())
        self.rows = data["candidates"]
        self.measurements = data.get("measurements", [])

    def table(self) -> pd.DataFrame:
        """The tidy table: one row per figure, with its provenance."""
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
    def task(self) -> str:
        return self.manifest["suite"]["resolved"]["task"]

    @property
    def primary_metric(self) -> str | None:
        return self.rows[0].get("primary_metric") if self.rows else None

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.rows)

    @property
    def stats(self) -> dict:
        return self.manifest["stats"]


def load_run(path: str | Path) -> Run:
    return Run(path)
