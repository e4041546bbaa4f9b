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
from compress.quality_checks import (  # noqa: F401 - FIDELITY_KEYS re-exported
    DEFAULT_CONFIDENCE,
    FIDELITY_KEYS,
    QUALITY_KEYS,
)
from compress.results import LOWER_IS_BETTER


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def quality_checks(summary: pd.DataFrame, targets: dict, metric: str,
                   confidence: float | None = DEFAULT_CONFIDENCE, intervals=None
                   ) -> pd.DataFrame:
    """One row per candidate: its primary metric, the baseline's, the verdict of each
    target (compress.quality_checks, the same checks the gate runs) and whether all pass.
    `intervals`: the run's (compress.confidence.Intervals) at `confidence`; by default
    the intervals stored in the summary rows."""
    from compress.confidence import SummaryIntervals
    from compress.quality_checks import quality_checks as checks

    lower = metric in LOWER_IS_BETTER
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in summary.to_dict("records")]
    if intervals is None and confidence is not None:
        intervals = SummaryIntervals(rows, confidence)
    by_name = {r["candidate"]: r for r in rows}
    thr = {k: v for k, v in targets.items() if k in QUALITY_KEYS}
    found = checks(rows, thr, metric, confidence, intervals)
    out = []
    for r in rows:
        base = by_name.get(r.get("baseline") or r["candidate"], r)
        v, b = _num(r.get(metric)), _num(base.get(metric))
        mine = [c for c in found if c.candidate == r["candidate"]]
        reasons = [c.message for c in mine if c.status != "pass"]
        status = next((s for s in ("error", "fail", "inconclusive")
                       if any(c.status == s for c in mine)), "pass")
        drop = None if v is None or b is None else ((v - b) if lower else (b - v))
        out.append({"candidate": r["candidate"], "value": v, "baseline_value": b,
                    "drop": drop,
                    "relative_drop": drop / abs(b) if drop is not None and b else None,
                    "passes_quality": status == "pass", "quality_status": status,
                    "quality_reasons": reasons})
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
    refused: str | None = None       # why no recommendation can be made (baseline at chance)
    confidence: float | None = None


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
              quality_batch: int | None = None, seed: int = 0,
              confidence: float | None = DEFAULT_CONFIDENCE, intervals=None,
              target_curves: dict | None = None, still_projected: list | None = None
              ) -> Recommendation:
    """The recommendation from a run summary (DataFrame, one row per candidate).

    `curves`: measured batch curves (cost.measured_curves of the run's tidy table);
    `threads`: threads of one worker; `quality_batch`: the batch size quality was
    measured at (flags dynamically quantized candidates served at larger batches).
    Quality checks run at `confidence` on `intervals` (the run's; by default those stored
    in the summary), or on point values with confidence None. A baseline that is not
    clearly above chance makes every comparison meaningless: then nothing is recommended
    and `refused` says why."""
    from compress.confidence import SummaryIntervals
    from compress.quality_checks import check_thresholds, sanity_checks

    targets = {k: v for k, v in (targets or {}).items() if v is not None}
    targets.pop("confidence", None)
    check_thresholds(targets, "target")
    catalog = catalog or load_catalog()
    setting = setting or Setting(int(summary["seq_len"].dropna().iloc[0])
                                 if "seq_len" in summary and summary["seq_len"].notna().any()
                                 else 128)
    lower = metric in LOWER_IS_BETTER
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in summary.to_dict("records")]
    if intervals is None and confidence is not None:
        intervals = SummaryIntervals(rows, confidence)
    q = quality_checks(summary, targets, metric, confidence, intervals)
    if options is None:
        options = cost_table(summary.to_dict("records"), catalog, setting, calibration,
                             targets.get("max_latency_ms"), targets.get("max_memory_mb"),
                             traffic, target_names, curves=curves, threads=threads,
                             slo=slo_of(targets), quality_batch=quality_batch, seed=seed,
                             target_curves=target_curves)
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
                                     "targets": targets,
                                     # measured on the target GPU itself, and the pairs
                                     # asked for there that stay projected (with why)
                                     "measured_on": sorted(
                                         f"{c} on {t}: {v['label']}"
                                         for (c, t), v in (target_curves or {}).items()),
                                     "still_projected": list(still_projected or [])})
    rec.confidence = confidence
    ex = rec.explanation
    name = {"monthly_cost": "monthly cost", "cost_per_1k": "cost per 1k inferences"}[ranking]
    sane = sanity_checks(rows, metric, [r["candidate"] for r in rows], confidence, intervals,
                         SummaryIntervals(rows, DEFAULT_CONFIDENCE))
    bad = [c for c in sane if c.status != "pass"]
    if bad:
        rec.refused = "; ".join(c.message for c in bad)
        ex.append(f"No recommendation: {rec.refused}.")
        good = good.iloc[0:0]
    elif len(good):
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
    if not bad and confidence is not None and (q["quality_status"] == "inconclusive").any():
        for _, u in q[q["quality_status"] == "inconclusive"].head(2).iterrows():
            ex.append(f"Undecided at {confidence:.0%}, so not recommended: {u['candidate']}: "
                      + next(m for m in u["quality_reasons"] if m.startswith("eval set")))
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
    classes = ", ".join(cal.get("classes") or {}) or "?"
    return (f"'{cal.get('name')}' of hardware class {classes} "
            f"(made {cal.get('created')}; {cal.get('path', 'in memory')})")


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


UNSET = "suite"


def recommend_run(run, targets: dict | None = None, catalog: Catalog | None = None,
                  calibration: dict | None = None, traffic: Traffic | dict | None = None,
                  target_names: list[str] | None = None,
                  confidence: float | None | str = UNSET) -> Recommendation:
    """recommend() for a run directory (compress.load_run), with the suite's targets,
    settings, traffic and confidence level unless overridden (confidence None: point
    comparisons)."""
    suite = run.suite
    t = suite.targets.model_dump()
    t.update({k: v for k, v in (targets or {}).items() if v is not None})
    if confidence == UNSET:
        confidence = t.get("confidence", DEFAULT_CONFIDENCE)
    t.pop("confidence", None)
    setting = Setting.of_suite(suite)
    if isinstance(traffic, dict):  # a plain dict, as in the README and notebooks
        traffic = Traffic(**traffic)
    if traffic is None and suite.traffic is not None:
        traffic = Traffic(**suite.traffic.model_dump())
    intervals = run.intervals(confidence) if confidence is not None else None
    from compress import target_measure

    on_targets = target_measure.read(run.path)
    return recommend(run.summary(), run.primary_metric, t, catalog, calibration, setting,
                     traffic, target_names, curves=measured_curves(run.measurements),
                     threads=int(suite.latency.threads or 1),
                     quality_batch=suite.quality.batch_size,
                     seed=int(run.info.seed or 0), confidence=confidence,
                     intervals=intervals,
                     target_curves=target_measure.target_curves(on_targets),
                     still_projected=[f"{r.candidate} on {r.target}: {r.reason}"
                                      for r in (on_targets.still_projected()
                                                if on_targets else [])])
