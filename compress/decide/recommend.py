"""Recommend the cheapest candidate x target that meets the targets.

1. Quality against the measured baseline (primary metric; lower-is-better metrics such as
   perplexity are turned around): max absolute drop, max relative drop, min recovery ratio
   (candidate / baseline, or baseline / candidate when lower is better), an absolute floor
   (a ceiling when lower is better), and a fidelity floor (top-1 agreement or cosine).
2. Latency and memory on each target: with a traffic profile, the serving model (dynamic
   batching and queueing under Poisson arrivals at the peak, see serving.py) picks the
   cheapest configuration meeting the end-to-end latency SLO; see cost.py.
3. Cheapest: lowest monthly cost at the traffic counted in whole instances; without
   traffic, lowest cost per 1,000 inferences at full utilisation. Ties: better quality,
   then smaller model, then cost per 1k, then candidate name, then target name.
Also: why runners-up and the baseline lost, the Pareto frontier of quality vs cost, and
when nothing qualifies, what came closest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from compress.decide.cost import SLO, Traffic, cost_table, measured_curves
from compress.hardware.catalog import Catalog, load_catalog
from compress.hardware.projection import Setting
from compress.results import LOWER_IS_BETTER

FIDELITY_KEYS = ("top1_agreement", "cosine")


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def quality_checks(summary: pd.DataFrame, targets: dict, metric: str) -> pd.DataFrame:
    """One row per candidate: its primary metric, the baseline's, and each target's verdict."""
    lower = metric in LOWER_IS_BETTER
    rows = summary.to_dict("records")
    by_name = {r["candidate"]: r for r in rows}
    out = []
    for r in rows:
        base = by_name.get(r.get("baseline") or r["candidate"], r)
        v, b = _num(r.get(metric)), _num(base.get(metric))
        reasons = []
        if r.get("status", "ok") != "ok":
            reasons.append(f"failed: {r.get('error')}")
        if v is None or b is None:
            reasons.append(f"no {metric} measured")
            out.append({"candidate": r["candidate"], "value": v, "baseline_value": b,
                        "drop": None, "passes_quality": False, "quality_reasons": reasons})
            continue
        drop = (v - b) if lower else (b - v)           # positive = worse
        rel = drop / abs(b) if b else 0.0
        recovery = (b / v if v else 0.0) if lower else (v / b if b else 1.0)
        t = targets
        if t.get("max_drop") is not None and drop > t["max_drop"] + 1e-12:
            reasons.append(f"{metric} drop {drop:.4f} > max_drop {t['max_drop']}")
        if t.get("max_relative_drop") is not None and rel > t["max_relative_drop"] + 1e-12:
            reasons.append(f"{metric} relative drop {rel:.2%} > {t['max_relative_drop']:.2%}")
        if t.get("min_recovery") is not None and recovery < t["min_recovery"] - 1e-12:
            reasons.append(f"recovery {recovery:.3f} < min_recovery {t['min_recovery']}")
        if t.get("min_value") is not None:
            bad = v > t["min_value"] if lower else v < t["min_value"]
            if bad:
                reasons.append(f"{metric} {v:.4f} {'above ceiling' if lower else 'below floor'} "
                               f"{t['min_value']}")
        if t.get("min_fidelity") is not None and r["candidate"] != base["candidate"]:
            fid = next(((k, _num(r.get(k))) for k in FIDELITY_KEYS
                        if _num(r.get(k)) is not None), None)
            if fid is None:
                reasons.append("no fidelity measured")
            elif fid[1] < t["min_fidelity"] - 1e-12:
                reasons.append(f"{fid[0]} {fid[1]:.4f} < min_fidelity {t['min_fidelity']}")
        out.append({"candidate": r["candidate"], "value": v, "baseline_value": b,
                    "drop": drop, "relative_drop": rel, "recovery": recovery,
                    "passes_quality": not reasons, "quality_reasons": reasons})
    return pd.DataFrame(out)


@dataclass
class Recommendation:
    winner: dict | None
    quality: pd.DataFrame
    options: pd.DataFrame            # candidate x target x runtime, with cost and status
    pareto: pd.DataFrame
    explanation: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    metric: str = ""
    ranking: str = "cost_per_1k"


def _sort_key(metric_lower: bool):
    def key(r):
        q = r["value"] if metric_lower else -r["value"]
        return (r["_rank"], q, r.get("size_mb") or 0.0, r.get("cost_per_1k") or 0.0,
                r["candidate"], r["target"])
    return key


def recommend(summary: pd.DataFrame, metric: str, targets: dict | None = None,
              catalog: Catalog | None = None, calibration: dict | None = None,
              setting: Setting | None = None, traffic: Traffic | None = None,
              target_names: list[str] | None = None, options: pd.DataFrame | None = None,
              curves: dict[str, dict] | None = None, threads: int = 1,
              quality_batch: int | None = None, seed: int = 0) -> Recommendation:
    """The recommendation from a run summary (DataFrame, one row per candidate).

    `curves`: measured batch curves (cost.measured_curves of the run's tidy table);
    `threads`: threads of one worker; `quality_batch`: the batch size quality was
    measured at (flags dynamically quantized candidates served at larger batches)."""
    targets = {k: v for k, v in (targets or {}).items() if v is not None}
    catalog = catalog or load_catalog()
    setting = setting or Setting(int(summary["seq_len"].dropna().iloc[0])
                                 if "seq_len" in summary and summary["seq_len"].notna().any()
                                 else 128)
    lower = metric in LOWER_IS_BETTER
    q = quality_checks(summary, targets, metric)
    if options is None:
        options = cost_table(summary.to_dict("records"), catalog, setting, calibration,
                             targets.get("max_latency_ms"), targets.get("max_memory_mb"),
                             traffic, target_names, curves=curves, threads=threads,
                             slo=slo_of(targets), quality_batch=quality_batch, seed=seed)
    ranking = "monthly_cost" if traffic is not None else "cost_per_1k"
    opts = options.merge(q[["candidate", "value", "passes_quality"]], on="candidate",
                         how="left")
    sizes = dict(zip(summary["candidate"], summary.get("size_mb", [None] * len(summary)),
                     strict=True))
    opts["size_mb"] = opts["candidate"].map(sizes)
    opts["_rank"] = opts[ranking]
    priced = opts[(opts["status"] == "ok") & opts["_rank"].notna()]
    good = priced[priced["passes_quality"] == True]  # noqa: E712
    rec = Recommendation(None, q, options, pd.DataFrame(), metric=metric, ranking=ranking,
                         provenance={**catalog.provenance(),
                                     "calibration": _cal_name(calibration),
                                     "traffic": traffic.__dict__ if traffic else None,
                                     "targets": targets})
    ex = rec.explanation
    name = {"monthly_cost": "monthly cost", "cost_per_1k": "cost per 1k inferences"}[ranking]
    if len(good):
        ranked = sorted(good.to_dict("records"), key=_sort_key(lower))
        w = ranked[0]
        rec.winner = {k: v for k, v in w.items() if not k.startswith("_")}
        ex.append(_describe(w, metric, ranking, traffic, "Recommended"))
        seen = {(w["candidate"], w["target"])}
        for r in ranked[1:]:
            if (r["candidate"], r["target"]) in seen:
                continue
            seen.add((r["candidate"], r["target"]))
            if len(seen) > 4:
                break
            tie = " (tie on cost, lost on the tie-break)" if r["_rank"] == w["_rank"] else ""
            ex.append(f"Runner-up {r['candidate']} on {r['target']} ({r['runtime']}): "
                      f"{name} {_money(r['_rank'], ranking)} vs "
                      f"{_money(w['_rank'], ranking)}{tie}")
        if isinstance(w.get("composition"), str):
            ex.append(f"Note: {w['composition']}")
    else:
        ex.append("Nothing meets the targets.")
        ex.extend(_closest(q, opts, metric, ranking))
    ex.extend(_notes(opts))
    base_names = set(summary.get("baseline", pd.Series(dtype=object)).dropna())
    for b in sorted(base_names):
        if rec.winner and rec.winner["candidate"] == b:
            continue
        rows = priced[priced["candidate"] == b]
        if not len(rows):
            why = options[options["candidate"] == b]["reason"].dropna()
            ex.append(f"Baseline {b}: no target meets the latency/memory targets"
                      + (f" ({why.iloc[0]})" if len(why) else ""))
            continue
        best = rows.sort_values("_rank").iloc[0]
        rank_b, ratio = best["_rank"], None
        if rec.winner and w["_rank"]:
            ratio = rank_b / w["_rank"]
        ex.append(f"Baseline {b}: cheapest on {best['target']} ({best['runtime']}) at "
                  f"{name} {_money(rank_b, ranking)}"
                  + (f", {ratio:.1f}x the winner" if ratio else ""))
    rec.pareto = pareto(opts, lower)
    return rec


def slo_of(targets: dict) -> SLO:
    """The latency SLO carried by the targets (suite `targets:` or flags)."""
    return SLO(targets.get("max_latency_ms"), int(targets.get("latency_percentile") or 95),
               targets.get("max_ttft_ms"), targets.get("max_tpot_ms"))


def _notes(opts: pd.DataFrame) -> list[str]:
    """What the reader must know about the figures: missing measurements, unpriced
    targets (once each)."""
    out = []
    for msg in opts.get("missing", pd.Series(dtype=object)).dropna().unique()[:1]:
        n = int((opts["missing"].notna()).sum())
        out.append(f"Missing figures: {msg} ({n} candidate(s))")
    unpriced = opts[opts["status"] == "no price"]["target"].unique()
    for t in unpriced:
        why = opts[(opts["target"] == t) & (opts["status"] == "no price")]["reason"].iloc[0]
        out.append(f"Not priced: {why}")
    return out


def _cal_name(cal):
    if not cal:
        return "none (default efficiencies, not calibrated on any hardware class)"
    return f"{cal.get('name')} ({cal.get('created')}, {cal.get('path', 'in memory')})"


def _money(v, ranking):
    return f"${v:,.0f}/month" if ranking == "monthly_cost" else f"${v:.6f}"


def _describe(w, metric, ranking, traffic, verb):
    if traffic is None:
        return (f"{verb}: {w['candidate']} on {w['target']} via {w['runtime']} "
                f"({w['provenance']}), {metric} {w['value']:.4f}, batch "
                f"{int(w['batch_size'])}, service p95 {w['latency_p95_ms']:.2f} ms, "
                f"{w['throughput_per_s']:.1f} inferences/s per instance at full "
                f"utilisation, ${w['cost_per_1k']:.6f} per 1k inferences (no traffic "
                f"given: no queueing)")
    s = (f"{verb}: {w['candidate']} on {w['target']} via {w['runtime']} "
         f"({w['provenance']}), {metric} {w['value']:.4f}; {_serving(w)}; "
         f"${w['monthly_cost']:,.0f}/month at {traffic.requests_per_day:,.0f} requests/day "
         f"(peak x{traffic.peak_factor:g}), ${w['cost_per_1k']:.6f} per 1k requests")
    if _present(w.get("cost_per_1m_tokens")):
        s += f", ${w['cost_per_1m_tokens']:.4f} per 1M generated tokens"
    return s


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _serving(w) -> str:
    """The serving configuration and what it gives, in words."""
    if not _present(w.get("max_queue_delay_ms")):
        return w.get("serving") or f"batch {int(w['batch_size'])}"
    s = (f"{int(w['instances'])} instance(s) x {int(w['workers'])} worker(s), max batch "
         f"{int(w['max_batch'])}, max queue delay {w['max_queue_delay_ms']:g} ms, "
         f"utilisation {w['utilisation']:.0%}")
    if _present(w.get("latency_p95_ms")):
        s += f", end-to-end p95 {w['latency_p95_ms']:.1f} ms"
    if _present(w.get("latency_p99_ms")):
        s += f" / p99 {w['latency_p99_ms']:.1f} ms"
    if _present(w.get("ttft_p95_ms")):
        s += f", TTFT p95 {w['ttft_p95_ms']:.1f} ms, TPOT {w['tpot_ms']:.1f} ms"
    return s


def _closest(q, opts, metric, ranking) -> list[str]:
    out = []
    failing = q[~q["passes_quality"]]
    passing = q[q["passes_quality"]]
    if len(passing):
        names = set(passing["candidate"])
        o = opts[opts["candidate"].isin(names)]
        for _, r in o[o["reason"].notna()].head(3).iterrows():
            out.append(f"Closest: {r['candidate']} meets quality but on {r['target']}: "
                       f"{r['reason']}")
        if not out:
            out.append("Closest: candidates meet quality, but no target has a price")
    if len(failing):
        f = failing.dropna(subset=["drop"]).sort_values("drop")
        for _, r in f.head(2).iterrows():
            out.append(f"Closest on quality: {r['candidate']}: "
                       + "; ".join(r["quality_reasons"]))
    return out


def pareto(opts: pd.DataFrame, lower: bool) -> pd.DataFrame:
    """Each candidate at its cheapest runnable target; keep those no other beats on both
    quality and cost."""
    ok = opts[(opts["status"] == "ok") & opts["_rank"].notna() & opts["value"].notna()]
    if not len(ok):
        return pd.DataFrame(columns=["candidate", "target", "runtime", "value", "cost",
                                     "passes_quality"])
    best = ok.sort_values("_rank").groupby("candidate", as_index=False).first()
    pts = best.to_dict("records")
    keep = []
    for p in pts:
        qp = -p["value"] if lower else p["value"]
        dominated = any(((-o["value"] if lower else o["value"]) >= qp and o["_rank"] <= p["_rank"]
                         and ((-o["value"] if lower else o["value"]) > qp
                              or o["_rank"] < p["_rank"])) for o in pts)
        if not dominated:
            keep.append({"candidate": p["candidate"], "target": p["target"],
                         "runtime": p["runtime"], "value": p["value"], "cost": p["_rank"],
                         "provenance": p["provenance"], "passes_quality": p["passes_quality"]})
    return pd.DataFrame(keep).sort_values("cost").reset_index(drop=True)


def recommend_run(run, targets: dict | None = None, catalog: Catalog | None = None,
                  calibration: dict | None = None, traffic: Traffic | None = None,
                  target_names: list[str] | None = None) -> Recommendation:
    """recommend() for a run directory (compress.load_run), with the suite's targets,
    settings and traffic unless overridden."""
    suite = run.suite
    t = suite.targets.model_dump()
    t.update({k: v for k, v in (targets or {}).items() if v is not None})
    setting = Setting.of_suite(suite)
    if traffic is None and suite.traffic is not None:
        traffic = Traffic(**suite.traffic.model_dump())
    return recommend(run.summary(), run.primary_metric, t, catalog, calibration, setting,
                     traffic, target_names, curves=measured_curves(run.measurements),
                     threads=int(suite.latency.threads or 1),
                     quality_batch=suite.quality.batch_size,
                     seed=int(run.info.seed or 0))
