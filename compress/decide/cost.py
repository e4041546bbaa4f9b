"""Cost of serving each candidate on each target.

For each candidate x target (through each runtime that can run the artifact):

1. A service curve: how long a batch takes at each batch size. On `local-cpu` it is the
   candidate's own measured latency at the batch sizes the suite measured (nothing beyond
   them is assumed: a curve measured at batch 1 only serves batch 1, and the row names
   the figures that are missing); elsewhere it is projected (roofline) at each size whose
   memory fits, and labelled so.
2. With a traffic profile and a latency SLO, the serving model (compress.decide.serving)
   picks the cheapest configuration that meets the SLO end to end under Poisson arrivals
   at the peak: instances, max batch, max queue delay; the row carries it with the
   utilisation and the simulated percentiles. Monthly cost = instances x price x 730 h;
   cost per 1k requests = monthly cost / requests in a month (the idle headroom the peak
   needs is paid for); causal LMs also get cost per 1M generated tokens.
3. Without traffic: the largest batch whose service p95 meets the latency target, and the
   cost per 1k at full utilisation (no queueing: an upper bound on what batching gives).

Workers per instance: physical cores // threads per worker on CPUs (the suite's
`latency.threads`), one on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from compress.decide.serving import ServiceCurve, Z, choose
from compress.hardware.catalog import Catalog
from compress.hardware.projection import CandidateModel, Setting

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = HOURS_PER_MONTH / 24.0
COST_PRESET = [1, 2, 4, 8, 16, 32]
# the catalog runtime a candidate measured on this CPU ran on, by its measured backend
CPU_RUNTIMES = {"onnxruntime": "ort-cpu", "openvino": "openvino-cpu"}


@dataclass
class Traffic:
    requests_per_day: float
    peak_factor: float = 1.0

    @property
    def peak_rps(self) -> float:
        return self.requests_per_day / 86400.0 * self.peak_factor

    @property
    def requests_per_month(self) -> float:
        return self.requests_per_day * DAYS_PER_MONTH


@dataclass
class SLO:
    """End-to-end latency objective: queue wait + batch formation + service."""

    max_latency_ms: float | None = None     # full request (causal LM: all gen_tokens)
    percentile: int = 95                    # 95 or 99
    max_ttft_ms: float | None = None        # causal LM: time to first token
    max_tpot_ms: float | None = None        # causal LM: time per output token

    @property
    def given(self) -> bool:
        return self.max_latency_ms is not None or self.max_ttft_ms is not None


def cost_per_1k(price_per_hour: float, throughput_per_s: float) -> float:
    return price_per_hour / 3600.0 / throughput_per_s * 1000.0


def instances_needed(traffic: Traffic, throughput_per_s: float) -> int:
    return max(1, math.ceil(traffic.peak_rps / throughput_per_s - 1e-9))


def monthly_cost(price_per_hour: float, instances: int) -> float:
    return price_per_hour * instances * HOURS_PER_MONTH


def remeasure_hint(batch_sizes=COST_PRESET) -> str:
    return ("compress run RECIPE --remeasure --set 'suite.latency.batch_sizes="
            f"[{', '.join(map(str, batch_sizes))}]' (or suite.latency.batch_sizes=cost)")


# ------------------------------------------------------------------------ service curves

def measured_curves(measurements: list[dict] | pd.DataFrame) -> dict[str, dict]:
    """Per candidate, the measured latency at each batch size (first sequence length):
    {"batch_sizes", "p50", "p95", "decode_p50"} from a run's tidy table."""
    df = pd.DataFrame(measurements)
    if not len(df) or "category" not in df:
        return {}
    lat = df[(df["category"] == "latency") & df["metric"].isin(["latency_p50", "latency_p95"])]
    out = {}
    for cand, g in lat.groupby("candidate", sort=False):
        seq = g["seq_len"].dropna().iloc[0] if g["seq_len"].notna().any() else None
        g = g[g["seq_len"] == seq] if seq is not None else g
        first = g[g["phase"].isin(["forward", "prefill"])]
        dec = g[(g["phase"] == "decode") & (g["metric"] == "latency_p50")]
        p50 = first[first["metric"] == "latency_p50"].groupby("batch_size")["value"].first()
        p95 = first[first["metric"] == "latency_p95"].groupby("batch_size")["value"].first()
        sizes = sorted(int(b) for b in p50.index)
        d = dec.groupby("batch_size")["value"].first()
        out[cand] = {"batch_sizes": sizes, "p50": [float(p50[b]) for b in sizes],
                     "p95": [float(p95.get(b, p50[b])) for b in sizes],
                     "decode_p50": ([float(d[b]) for b in sizes]
                                    if len(d) and all(b in d.index for b in sizes) else None)}
    return out


def _sigma(p50: float, p95: float) -> float:
    if not p50 or not p95 or p95 <= p50:
        return 0.01
    return min(0.5, max(0.01, math.log(p95 / p50) / Z[95]))


def _local_curve(cand: dict, measured: dict | None, gen_tokens: int,
                 overhead_ms: float) -> ServiceCurve | None:
    if measured and measured["batch_sizes"]:
        m = measured
    elif cand.get("latency_p50_ms") is not None:
        b = int(cand.get("batch_size") or 1)
        dec = cand.get("decode_ms_per_token")
        m = {"batch_sizes": [b], "p50": [cand["latency_p50_ms"]],
             "p95": [cand.get("latency_p95_ms") or cand["latency_p50_ms"]],
             "decode_p50": [dec] if dec is not None else None}
    else:
        return None
    use_decode = gen_tokens > 0 and m.get("decode_p50")
    return ServiceCurve(tuple(m["batch_sizes"]), tuple(m["p50"]),
                        tuple(m["decode_p50"]) if use_decode else None,
                        gen_tokens if use_decode else 0,
                        sigma=_sigma(m["p50"][0], m["p95"][0]), overhead_ms=overhead_ms,
                        provenance="measured")


# ------------------------------------------------------------------------------- pricing

def _price(row: dict, target, curve: ServiceCurve, workers: int, traffic: Traffic | None,
           slo: SLO, max_batch: int, seed: int) -> dict:
    """Fill the serving configuration and its cost (see the module docstring)."""
    price = target.price_per_hour
    gen = curve.gen_tokens
    row.update(price_per_hour=price, price_source=target.price_source, workers=workers)
    pct = slo.percentile
    ratio = math.exp(Z[pct] * curve.sigma)
    if traffic is None:
        sizes = [b for b in curve.batch_sizes if b <= max_batch]
        fits = [b for b in sizes if slo.max_latency_ms is None
                or curve.service(b) * ratio <= slo.max_latency_ms]
        if not fits:
            b = sizes[0]
            row.update(batch_size=b, latency_p95_ms=curve.service(b) * ratio,
                       status="too slow",
                       reason=f"batch {b}: p{pct} {curve.service(b) * ratio:.2f} ms > "
                              f"{slo.max_latency_ms:g} ms")
            return row
        b = fits[-1]
        tput = curve.capacity(workers, b)
        row.update(batch_size=b, max_batch=b, latency_p95_ms=curve.service(b) * ratio,
                   request_ms=curve.service(b), throughput_per_s=tput, status="ok",
                   serving="no traffic: full utilisation, no queueing")
        if price is None:
            row.update(status="no price", reason=_no_price(target))
            return row
        row["cost_per_1k"] = cost_per_1k(price, tput)
        if gen:
            row["cost_per_1m_tokens"] = row["cost_per_1k"] / gen * 1000.0
        return row
    slo_ms = slo.max_latency_ms
    if slo_ms is None and slo.max_ttft_ms is None:
        # no SLO: sized for throughput with 10% headroom, said so on the row
        b = max((s for s in curve.batch_sizes if s <= max_batch),
                key=lambda s: curve.capacity(workers, s))
        cap = curve.capacity(workers, b)
        n = max(1, math.ceil(traffic.peak_rps / (0.9 * cap)))
        row.update(batch_size=b, max_batch=b, max_queue_delay_ms=0.0, instances=n,
                   throughput_per_s=cap, utilisation=traffic.peak_rps / (n * cap),
                   request_ms=curve.service(b), status="ok",
                   serving="no latency SLO: sized for throughput at <= 90% utilisation")
    else:
        c = choose(curve, traffic.peak_rps, workers,
                   slo_ms if slo_ms is not None else math.inf, pct, max_batch, seed,
                   ttft_slo_ms=slo.max_ttft_ms, tpot_slo_ms=slo.max_tpot_ms)
        row["simulations"] = c.simulations
        if not c.feasible:
            row.update(status="too slow", reason=c.reason, batch_size=1,
                       latency_p95_ms=curve.service(1) * ratio)
            return row
        row.update(batch_size=c.max_batch, max_batch=c.max_batch,
                   max_queue_delay_ms=c.max_delay_ms, instances=c.instances,
                   preferred_batch_sizes=c.preferred_batch_sizes,
                   latency_p95_ms=c.p95_ms, latency_p99_ms=c.p99_ms,
                   ttft_p95_ms=c.ttft_p95_ms, tpot_ms=c.tpot_ms,
                   utilisation=c.utilisation, mean_batch=c.mean_batch,
                   throughput_per_s=c.capacity_rps, request_ms=curve.service(c.max_batch),
                   status="ok",
                   serving=f"{c.instances} x {workers} worker(s), max batch {c.max_batch}, "
                           f"max queue delay {c.max_delay_ms:g} ms")
    if price is None:
        row.update(status="no price", reason=_no_price(target))
        return row
    row["monthly_cost"] = monthly_cost(price, row["instances"])
    row["cost_per_1k"] = row["monthly_cost"] / traffic.requests_per_month * 1000.0
    if gen:
        row["cost_per_1m_tokens"] = row["cost_per_1k"] / gen * 1000.0
    return row


def _no_price(target) -> str:
    if target.name == "local-cpu":
        return ("local-cpu has no price: it is a deployment target only when you price it "
                "(--prices FILE with prices: {local-cpu: {price_per_hour: ...}})")
    return (f"{target.name} has no sourced price in the price books used (the default "
            "book prices only what a dated page shows); add one with --prices FILE")


def _composition_note(model: CandidateModel, catalog: Catalog, batch: int,
                      quality_batch: int | None) -> str | None:
    fmt = catalog.formats.get(model.info.format)
    if fmt is None or not fmt.act_quant or quality_batch is None or batch <= quality_batch:
        return None
    return (f"dynamic activation quantization: outputs depend on the batch's composition; "
            f"quality was measured at batch {quality_batch}, served up to batch {batch}")


def cost_table(candidates: list[dict], catalog: Catalog, setting: Setting,
               calibration: dict | None = None, max_latency_ms: float | None = None,
               max_memory_mb: float | None = None, traffic: Traffic | None = None,
               targets: list[str] | None = None, max_batch: int = 64,
               models: dict[str, CandidateModel] | None = None,
               curves: dict[str, dict] | None = None, threads: int = 1,
               slo: SLO | None = None, quality_batch: int | None = None,
               overhead_ms: float = 0.0, seed: int = 0,
               target_curves: dict[tuple[str, str], dict] | None = None) -> pd.DataFrame:
    """One row per candidate x target x runtime (or one `unsupported` row with the reason).

    `candidates`: summary rows (candidate, kind, artifact_path and, for local-cpu, the
    measured latency_p50/p95_ms, decode_ms_per_token, peak_rss_mb, batch_size);
    `curves`: measured batch curves per candidate (`measured_curves(run.measurements)`);
    `threads`: intra-op threads of one worker (the suite's latency.threads);
    `target_curves`: (candidate, target) -> a curve measured on that target GPU
    (`compress.target_measure.target_curves`): it replaces the projection for that pair."""
    slo = slo or SLO(max_latency_ms)
    if slo.max_latency_ms is None and max_latency_ms is not None:
        slo.max_latency_ms = max_latency_ms
    p95_ratio = catalog.defaults.p95_over_p50
    proj_sigma = _sigma(1.0, p95_ratio)
    rows = []
    for cand in candidates:
        if cand.get("status", "ok") != "ok":
            continue
        name = cand["candidate"]
        model = (models or {}).get(name) or CandidateModel(
            name, cand.get("artifact_path"), cand["kind"])
        for tname in targets or catalog.names():
            t = catalog[tname]
            workers = t.worker_count(threads)
            if t.name == "local-cpu" and cand.get("device", "cpu") == "cpu":
                curve = _local_curve(cand, (curves or {}).get(name), setting.gen_tokens,
                                     overhead_ms)
                if curve is not None:
                    rows.append(_local_row(cand, model, catalog, t, curve, workers, traffic,
                                           slo, max_batch, max_memory_mb, quality_batch,
                                           seed))
                    continue
            measured = (target_curves or {}).get((name, t.name))
            if measured is not None:
                rows.append(_target_row(cand, model, catalog, t, measured, setting, workers,
                                        traffic, slo, max_batch, quality_batch, overhead_ms,
                                        seed))
                continue
            for runtime, why in model.supported(t, catalog):
                base = {"candidate": name, "target": t.name, "runtime": runtime,
                        "format": model.info.format, "provenance": "projected",
                        "workers": workers}
                if why:
                    rows.append({**base, "supported": False, "status": "unsupported",
                                 "reason": why})
                    continue
                sizes, first, dec, last_reason, projs = [], [], [], None, {}
                # a 4-bit GEMV kernel serves batch 1 only (catalog `batch_max`, with source)
                cap = catalog.runtimes[runtime].batch_max.get(model.info.format or "",
                                                              max_batch)
                for b in (b for b in BATCHES if b <= min(max_batch, cap)):
                    p = model.project(t, runtime, catalog, setting, b, calibration)
                    need = p.memory_bytes * workers
                    if need > t.memory_gb * 1e9:
                        last_reason = (f"batch {b} needs {need / 1e9:.2f} GB "
                                       f"(weights + activations + workspace"
                                       f"{f' x {workers} workers' if workers > 1 else ''})"
                                       f" > {t.memory_gb:g} GB")
                        break
                    if max_memory_mb is not None and p.memory_bytes / 1e6 > max_memory_mb:
                        last_reason = (f"batch {b} needs {p.memory_bytes / 1e6:.0f} MB > "
                                       f"max_memory_mb {max_memory_mb:g}")
                        break
                    sizes.append(b)
                    first.append(p.latency_ms)
                    dec.append(p.decode_ms_per_token or 0.0)
                    projs[b] = p
                row = {**base, "supported": True, "precision": None, "reason": None}
                if not sizes:
                    p = model.project(t, runtime, catalog, setting, 1, calibration)
                    row.update(precision=p.precision, batch_size=1,
                               latency_p95_ms=p.latency_ms * p95_ratio,
                               request_ms=p.request_ms, memory_gb=p.memory_bytes / 1e9,
                               efficiency_source=p.efficiency_source, status="too big",
                               reason=last_reason)
                    rows.append(row)
                    continue
                gen = setting.gen_tokens
                curve = ServiceCurve(tuple(sizes), tuple(first), tuple(dec) if gen else None,
                                     gen, sigma=proj_sigma, overhead_ms=overhead_ms,
                                     provenance="projected")
                row = _price(row, t, curve, workers, traffic, slo, max_batch, seed)
                b = int(row.get("batch_size") or 1)
                p = projs.get(b) or projs[sizes[0]]
                row.update(precision=p.precision, memory_gb=p.memory_bytes / 1e9,
                           efficiency_source=p.efficiency_source,
                           curve_batch_sizes=list(sizes),
                           composition=_composition_note(model, catalog, b, quality_batch))
                if row["status"] == "ok" and last_reason and b == sizes[-1]:
                    row["limit"] = last_reason
                rows.append(row)
    cols = ["candidate", "target", "runtime", "status", "provenance", "format", "precision",
            "batch_size", "max_batch", "max_queue_delay_ms", "instances", "workers",
            "utilisation", "mean_batch", "latency_p95_ms", "latency_p99_ms", "ttft_p95_ms",
            "tpot_ms", "request_ms", "throughput_per_s", "memory_gb", "price_per_hour",
            "cost_per_1k", "cost_per_1m_tokens", "monthly_cost", "supported", "reason",
            "serving", "composition", "missing", "curve_batch_sizes",
            "preferred_batch_sizes", "price_source", "efficiency_source", "simulations"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols]


def _local_row(cand, model, catalog, t, curve, workers, traffic, slo, max_batch,
               max_memory_mb, quality_batch, seed) -> dict:
    """The local CPU's own measured curve: no projection."""
    mem = (cand.get("peak_rss_mb") or 0) * 1e6
    row = {"candidate": cand["candidate"], "target": t.name,
           "runtime": CPU_RUNTIMES.get(cand.get("backend"), "pytorch-cpu"),
           "supported": True, "reason": None, "format": model.info.format,
           "precision": None, "memory_gb": mem / 1e9, "provenance": "measured",
           "efficiency_source": "measured here", "status": "ok",
           "curve_batch_sizes": list(curve.batch_sizes)}
    if curve.max_batch < min(max_batch, COST_PRESET[-1]):
        row["missing"] = (f"local-cpu latency measured at batch "
                          f"{', '.join(map(str, curve.batch_sizes))} only; larger batches "
                          f"are not assumed. To consider them: {remeasure_hint()}")
    if max_memory_mb is not None and mem / 1e6 > max_memory_mb:
        row.update(status="too big", batch_size=curve.batch_sizes[0],
                   reason=f"measured peak {mem / 1e6:.0f} MB > {max_memory_mb:g} MB")
        return row
    row = _price(row, t, curve, workers, traffic, slo, max_batch, seed)
    row["composition"] = _composition_note(model, catalog, int(row.get("batch_size") or 1),
                                           quality_batch)
    return row


def _target_row(cand, model, catalog, t, measured, setting, workers, traffic, slo, max_batch,
                quality_batch, overhead_ms, seed) -> dict:
    """A curve measured on the target GPU itself (compress.target_measure): no projection."""
    curve = _local_curve(cand, measured, setting.gen_tokens, overhead_ms)
    row = {"candidate": cand["candidate"], "target": t.name,
           "runtime": "ort-cuda" if cand.get("backend") == "onnxruntime" else "pytorch-cuda",
           "supported": True, "reason": None, "format": model.info.format,
           "precision": None, "memory_gb": measured.get("memory_gb"), "provenance": "measured",
           "efficiency_source": measured["label"], "status": "ok",
           "curve_batch_sizes": list(curve.batch_sizes)}
    row = _price(row, t, curve, workers, traffic, slo, max_batch, seed)
    row["composition"] = _composition_note(model, catalog, int(row.get("batch_size") or 1),
                                           quality_batch)
    return row
