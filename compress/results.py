"""Run directories and the results table.

A run dir holds manifest.json (recipe as given and resolved, plan, versions, git revision,
seed, timings, cache statistics), results.json and results.csv. `load_run(path).table()`
gives the table as a pandas DataFrame, for notebooks and scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from compress.errors import InputError
from compress.store import atomic_write_text, write_json

# the columns `compress show` prints by default, in order
SHOW_COLUMNS = ["candidate", "role", "kind", "backend", "status", "accuracy", "accuracy_delta",
                "latency_p50_ms", "latency_p95_ms", "size_mb", "peak_rss_mb", "error"]


def build_rows(plan, built, measured: dict[str, dict]) -> list[dict]:
    """One row per candidate: what was measured, with its provenance, or why it failed."""
    rows = []
    for cand in plan.candidates:
        m = measured.get(cand.node.key, {})
        ok = m.get("status") == "ok"
        q, lat, mem, env = (m.get(k, {}) for k in ("quality", "latency", "memory", "env"))
        artifact = built.artifacts.get(cand.node.key)
        rows.append({
            "candidate": cand.name, "role": cand.role, "step": cand.node.step,
            "stage": cand.node.stage or "model", "kind": cand.node.kind.value,
            "baseline": next((c.name for c in plan.candidates
                              if c.node.key == cand.baseline.key), None),
            "status": "ok" if ok else "failed",
            "error": None if ok else m.get("error", "not measured"),
            "accuracy": q.get("accuracy"), "n_eval": q.get("n_eval"),
            "latency_p50_ms": lat.get("p50_ms"), "latency_p95_ms": lat.get("p95_ms"),
            "latency_mean_ms": lat.get("mean_ms"), "samples_per_s": lat.get("samples_per_s"),
            "size_mb": mem["size_bytes"] / 1e6 if mem.get("size_bytes") else None,
            "peak_rss_mb": mem["peak_rss_bytes"] / 1e6 if mem.get("peak_rss_bytes") else None,
            "backend": env.get("backend"), "device": env.get("device"),
            "providers": ",".join(env.get("providers") or []) or None,
            "threads": env.get("threads"), "batch_size": env.get("batch_size"),
            "seq_len": env.get("seq_len"), "provenance": "measured" if ok else None,
            "measured_at": m.get("measured_at"), "measurement_cached": m.get("cached"),
            "artifact_key": cand.node.key,
            "artifact_path": str(artifact.path) if artifact else None,
            "stage_wall_time_s": artifact.meta.get("wall_time_s") if artifact else None,
        })
    by_key = {c.node.key: r for c, r in zip(plan.candidates, rows, strict=True)}
    for cand, row in zip(plan.candidates, rows, strict=True):
        base = by_key.get(cand.baseline.key)
        if base and row["accuracy"] is not None and base["accuracy"] is not None:
            row["accuracy_delta"] = row["accuracy"] - base["accuracy"]
        else:
            row["accuracy_delta"] = None
    return rows


def write_run(run_dir: Path, manifest: dict, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "manifest.json", manifest)
    write_json(run_dir / "results.json", {"candidates": rows})
    atomic_write_text(run_dir / "results.csv", pd.DataFrame(rows).to_csv(index=False))


class Run:
    """A finished run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "results.json").is_file():
            raise InputError(f"{self.path}: not a run directory (no results.json)")
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self.rows = json.loads((self.path / "results.json").read_text())["candidates"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.rows)

    @property
    def stats(self) -> dict:
        return self.manifest["stats"]


def load_run(path: str | Path) -> Run:
    return Run(path)
