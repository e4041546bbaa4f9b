"""Cost of serving each candidate on each target.

For each candidate x target (through each runtime that can run the artifact): the largest
batch size whose p95 latency still meets the latency target (and whose memory fits),
the throughput at that batch, cost per 1,000 inferences = price per second / throughput
x 1000, and with a traffic profile the whole instances needed at peak and the monthly cost.
On `local-cpu` the candidate's own measured latency is used (labelled measured); every
other figure is projected and labelled so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from compress.hardware.catalog import Catalog
from compress.hardware.projection import CandidateModel, Setting

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HOURS_PER_MONTH = 730.0


@dataclass
class Traffic:
    requests_per_day: float
    peak_factor: float = 1.0

    @property
    def peak_rps(self) -> float:
        return self.requests_per_day / 86400.0 * self.peak_factor


def cost_per_1k(price_per_hour: float, throughput_per_s: float) -> float:
    return price_per_hour / 3600.0 / throughput_per_s * 1000.0


def instances_needed(traffic: Traffic, throughput_per_s: float) -> int:
    return max(1, math.ceil(traffic.peak_rps / throughput_per_s - 1e-9))


def monthly_cost(price_per_hour: float, instances: int) -> float:
    return price_per_hour * instances * HOURS_PER_MONTH


def _price(row: dict, price, source, throughput, traffic):
    row.update(price_per_hour=price, price_source=source, throughput_per_s=throughput)
    if price is None or not throughput:
        row["status"] = "no price" if price is None else row["status"]
        return row
    row["cost_per_1k"] = cost_per_1k(price, throughput)
    if traffic is not None:
        row["instances"] = instances_needed(traffic, throughput)
        row["monthly_cost"] = monthly_cost(price, row["instances"])
    return row


def _local_measured(cand: dict, model: CandidateModel, catalog: Catalog, setting: Setting,
                    max_latency_ms, max_memory_mb, traffic) -> dict | None:
    """The local CPU's own measured figures (batch as measured): no projection."""
    if cand.get("device") != "cpu" or cand.get("latency_p50_ms") is None:
        return None
    t = catalog["local-cpu"]
    p50, p95 = cand["latency_p50_ms"], cand.get("latency_p95_ms") or cand["latency_p50_ms"]
    batch = int(cand.get("batch_size") or 1)
    request = p50 + setting.gen_tokens * (cand.get("decode_ms_per_token") or 0.0)
    mem = (cand.get("peak_rss_mb") or 0) * 1e6
    row = {"candidate": cand["candidate"], "target": t.name,
           "runtime": "ort-cpu" if cand.get("backend") == "onnxruntime" else "pytorch-cpu",
           "supported": True, "reason": None, "format": model.info.format,
           "precision": None, "batch_size": batch, "latency_p95_ms": p95,
           "request_ms": request, "memory_gb": mem / 1e9, "provenance": "measured",
           "efficiency_source": "measured here", "status": "ok",
           "workers": t.workers}
    if max_latency_ms is not None and p95 > max_latency_ms:
        row["status"] = "too slow"
        row["reason"] = f"measured p95 {p95:.1f} ms > {max_latency_ms:g} ms"
    if max_memory_mb is not None and mem / 1e6 > max_memory_mb:
        row["status"] = "too big"
        row["reason"] = f"measured peak {mem / 1e6:.0f} MB > {max_memory_mb:g} MB"
    throughput = t.workers * batch * 1000.0 / request
    return _price(row, t.price_per_hour, t.price_source, throughput, traffic)


def cost_table(candidates: list[dict], catalog: Catalog, setting: Setting,
               calibration: dict | None = None, max_latency_ms: float | None = None,
               max_memory_mb: float | None = None, traffic: Traffic | None = None,
               targets: list[str] | None = None, max_batch: int = 64,
               models: dict[str, CandidateModel] | None = None) -> pd.DataFrame:
    """One row per candidate x target x runtime (or one `unsupported` row with the reason).

    `candidates`: summary rows (candidate, kind, artifact_path and, for local-cpu, the
    measured latency_p50/p95_ms, decode_ms_per_token, peak_rss_mb, batch_size)."""
    p95_ratio = catalog.defaults.p95_over_p50
    rows = []
    for cand in candidates:
        if cand.get("status", "ok") != "ok":
            continue
        model = (models or {}).get(cand["candidate"]) or CandidateModel(
            cand["candidate"], cand.get("artifact_path"), cand["kind"])
        for tname in targets or catalog.names():
            t = catalog[tname]
            if t.name == "local-cpu":
                local = _local_measured(cand, model, catalog, setting, max_latency_ms,
                                        max_memory_mb, traffic)
                if local is not None:
                    rows.append(local)
                    continue
            for runtime, why in model.supported(t, catalog):
                base = {"candidate": cand["candidate"], "target": t.name, "runtime": runtime,
                        "format": model.info.format, "provenance": "projected",
                        "workers": t.workers}
                if why:
                    rows.append({**base, "supported": False, "status": "unsupported",
                                 "reason": why})
                    continue
                best, last_reason = None, None
                cap = catalog.runtimes[runtime].batch_max.get(model.info.format or "",
                                                              max_batch)
                for b in (b for b in BATCHES if b <= min(max_batch, cap)):
                    p = model.project(t, runtime, catalog, setting, b, calibration)
                    need = p.memory_bytes * t.workers
                    if need > t.memory_gb * 1e9:
                        last_reason = (f"batch {b} needs {need / 1e9:.2f} GB "
                                       f"(weights + activations + workspace"
                                       f"{f' x {t.workers} workers' if t.workers > 1 else ''})"
                                       f" > {t.memory_gb:g} GB")
                        break
                    if max_memory_mb is not None and p.memory_bytes / 1e6 > max_memory_mb:
                        last_reason = (f"batch {b} needs {p.memory_bytes / 1e6:.0f} MB > "
                                       f"max_memory_mb {max_memory_mb:g}")
                        break
                    p95 = p.latency_ms * p95_ratio
                    if max_latency_ms is not None and p95 > max_latency_ms:
                        last_reason = (f"batch {b}: projected p95 {p95:.2f} ms > "
                                       f"{max_latency_ms:g} ms")
                        break
                    best = (b, p, p95)
                row = {**base, "supported": True, "precision": None, "reason": None}
                if best is None:
                    p = model.project(t, runtime, catalog, setting, 1, calibration)
                    row.update(precision=p.precision, batch_size=1,
                               latency_p95_ms=p.latency_ms * p95_ratio,
                               request_ms=p.request_ms, memory_gb=p.memory_bytes / 1e9,
                               efficiency_source=p.efficiency_source,
                               status="too big" if "GB" in (last_reason or "")
                               or "MB" in (last_reason or "") else "too slow",
                               reason=last_reason)
                    rows.append(row)
                    continue
                b, p, p95 = best
                row.update(precision=p.precision, batch_size=b, latency_p95_ms=p95,
                           request_ms=p.request_ms, memory_gb=p.memory_bytes / 1e9,
                           efficiency_source=p.efficiency_source, status="ok")
                throughput = t.workers * b * 1000.0 / p.request_ms
                rows.append(_price(row, t.price_per_hour, t.price_source, throughput,
                                   traffic))
    cols = ["candidate", "target", "runtime", "status", "provenance", "format", "precision",
            "batch_size", "latency_p95_ms", "request_ms", "throughput_per_s", "memory_gb",
            "price_per_hour", "cost_per_1k", "instances", "monthly_cost", "workers",
            "supported", "reason", "price_source", "efficiency_source"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols]
