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
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from compress.errors import InputError
from compress.store import atomic_write_text, fsync_file, write_json

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
    }
    return row


def build_results(plan, built, measured: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(summary rows, tidy rows) in the plan's candidate order."""
    primary = plan.suite.primary_metric
    summary, tidy = [], []
    for cand in plan.candidates:
        m = measured.get(cand.node.key, {})
        artifact = built.artifacts.get(cand.node.key)
        summary.append(summary_row(cand, m, artifact, primary))
        tidy.extend(tidy_rows(cand, m, artifact))
    by_key = {c.node.key: r for c, r in zip(plan.candidates, summary, strict=True)}
    for cand, row in zip(plan.candidates, summary, strict=True):
        base = by_key.get(cand.baseline.key)
        row["baseline"] = base["candidate"] if base else None
        value, ref = row.get(primary), base.get(primary) if base else None
        row["primary_delta"] = value - ref if value is not None and ref is not None else None
    return summary, tidy


def write_run(run_dir: Path, manifest: dict, summary: list[dict], tidy: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "manifest.json", manifest)
    write_json(run_dir / "results.json", {"candidates": summary, "measurements": tidy})
    atomic_write_text(run_dir / "results.csv", pd.DataFrame(summary).to_csv(index=False))
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


def read_json(path: Path, what: str):
    """A JSON file a user handed us, or InputError naming the file and what is wrong."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({what} expected)") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (offset {exc.start}); expected {what}") \
            from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); expected {what}") from None


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


NUMERIC = ("accuracy", "macro_f1", "spearman", "pearson", "perplexity", "next_token_accuracy",
           "top1_agreement", "kl_divergence", "cosine", "primary_delta", "latency_p50_ms",
           "latency_p95_ms", "throughput", "decode_ms_per_token", "size_mb", "peak_rss_mb",
           "mem_delta_mb", "batch_size", "seq_len", "threads", "n_eval")
_Row = create_model("_Row", __base__=_Loose, candidate=(str, ...),
                    status=(Literal["ok", "failed"], ...), kind=(str, ...),
                    primary_metric=(str | None, None), baseline=(str | None, None),
                    artifact_path=(str | None, None),
                    **{k: (float | None, None) for k in NUMERIC})


class _Results(_Loose):
    candidates: list[_Row]
    measurements: list[dict] = []


class _Resolved(_Loose):
    name: str


class _SuiteResolved(_Loose):
    task: str


class _RecipeEntry(_Loose):
    resolved: _Resolved


class _SuiteEntry(_Loose):
    resolved: _SuiteResolved


class _Manifest(_Loose):
    recipe: _RecipeEntry
    suite: _SuiteEntry
    plan: dict = {}
    stats: dict = {}


def _check(model, data, path: Path, what: str) -> None:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(k) for k in err["loc"]) or "(top level)"
        value = repr(err.get("input"))
        value = value if len(value) <= 60 else value[:57] + "..."
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InputError(f"{path}: not a compress {what}: {loc}: got {value}; expected: "
                         f"{err['msg']}{more}") from None


class Run:
    """A finished run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "results.json").is_file():
            raise InputError(f"{self.path}: not a run directory (no results.json)")
        self.manifest = read_json(self.path / "manifest.json", "a run manifest")
        _check(_Manifest, self.manifest, self.path / "manifest.json", "run manifest")
        data = read_json(self.path / "results.json", "run results")
        _check(_Results, data, self.path / "results.json", "results file")
        self.rows = data["candidates"]
        self.measurements = data.get("measurements", [])

    def table(self) -> pd.DataFrame:
        """The tidy table: one row per figure, with its provenance."""
        return pd.DataFrame(self.measurements)

    def summary(self) -> pd.DataFrame:
        """One row per candidate: the figures that matter, side by side."""
        return pd.DataFrame(self.rows)

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
        return self.manifest.get("stats") or {}


def load_run(path: str | Path) -> Run:
    return Run(path)
