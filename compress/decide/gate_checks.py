"""The checks a release gate runs on a run's figures (`compress gate`, see compress.gate).

Each check is `pass`, `fail`, `inconclusive` (a quality check whose interval at the
confidence level straddles the threshold) or `error`; an error is a figure the check needs
that the run does not have (a missing measurement is never a pass). `candidate_figures`
gathers what the checks read: the primary metric, fidelity, and latency, memory and cost
on the target (measured on local-cpu, projected elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compress.decide.recommend import FIDELITY_KEYS
from compress.quality_checks import _num

QUALITY_KEYS = ("max_drop", "max_relative_drop", "min_recovery", "min_value", "min_fidelity")
TARGET_KEYS = QUALITY_KEYS + ("max_latency_ms", "max_memory_mb")
GATE_KEYS = TARGET_KEYS + ("max_cost_per_1k", "max_quality_decrease", "max_cost_increase",
                           "max_latency_increase")
LOCAL = "local-cpu"


@dataclass
class Check:
    candidate: str
    check: str                 # e.g. "quality.max_drop", "cost.max_cost_per_1k"
    status: str                # pass | fail | inconclusive | error
    value: float | None
    threshold: float | None
    message: str
    provenance: str | None = None   # measured | projected
    target: str | None = None
    low: float | None = None        # quality checks: the interval of `value`
    high: float | None = None
    confidence: float | None = None
    needed: int | None = None       # inconclusive: eval units that would decide it


STATUSES = ("pass", "fail", "inconclusive", "error")


# ------------------------------------------------------------------------------ figures

def _on_target(row: dict, target: str, catalog, calibration, setting, thr: dict) -> dict:
    """The cheapest runnable option of one candidate on one target (or why there is none)."""
    from compress.decide.cost import cost_table

    df = cost_table([row], catalog, setting, calibration, thr.get("max_latency_ms"),
                    thr.get("max_memory_mb"), None, [target])
    if not len(df):
        return {"status": "unsupported", "reason": f"no runtime for {target}"}
    ok = df[df["status"] == "ok"]
    pick = (ok.sort_values("cost_per_1k", na_position="last") if len(ok) else df).iloc[0]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in pick.to_dict().items()}


def candidate_figures(run, rows: list[dict], target: str, catalog, calibration,
                      thr: dict) -> dict[str, dict]:
    """Per candidate: primary metric, fidelity, latency, memory and cost on the target."""
    metric = run.primary_metric
    from compress.hardware.projection import Setting

    setting = Setting.of_suite(run.suite)
    out = {}
    for r in rows:
        fid = next(((k, _num(r.get(k))) for k in FIDELITY_KEYS if _num(r.get(k)) is not None),
                   (None, None))
        f = {"candidate": r["candidate"], "status": r.get("status"), "metric": metric,
             "value": _num(r.get(metric)), "fidelity_metric": fid[0], "fidelity": fid[1],
             "target": target}
        if target == LOCAL:
            f.update(latency_p95_ms=_num(r.get("latency_p95_ms")),
                     memory_mb=_num(r.get("peak_rss_mb")), provenance="measured")
        if target == LOCAL and _num(r.get("latency_p50_ms")) is None:
            f.update(target_status="missing", target_reason="no latency measured here to "
                     "price", cost_per_1k=None)
        elif r.get("status") == "ok":
            t = _on_target(r, target, catalog, calibration, setting, thr)
            f.update(target_status=t.get("status"), target_reason=t.get("reason"),
                     runtime=t.get("runtime"), batch_size=_num(t.get("batch_size")),
                     cost_per_1k=_num(t.get("cost_per_1k")),
                     price_per_hour=_num(t.get("price_per_hour")))
            if target != LOCAL:
                mem = _num(t.get("memory_gb"))
                f.update(latency_p95_ms=_num(t.get("latency_p95_ms")),
                         memory_mb=mem * 1000 if mem is not None else None,
                         provenance=t.get("provenance") or "projected")
        out[r["candidate"]] = f
    return out


# ------------------------------------------------------------------------------- checks

def quality_checks(run, chosen: list[str], thr: dict, metric: str,
                   level: float | None) -> list[Check]:
    """The quality checks (compress.quality_checks, shared with the recommendation) of the
    chosen candidates, and the sanity of their baselines."""
    from compress.confidence import SummaryIntervals
    from compress.quality_checks import DEFAULT_CONFIDENCE, sanity_checks
    from compress.quality_checks import quality_checks as checks

    def intervals(lv):
        return run.intervals(lv) if run.units() is not None else SummaryIntervals(run.rows, lv)

    ivs = intervals(level) if level is not None else None
    found = checks(run.rows, {k: thr[k] for k in QUALITY_KEYS if k in thr}, metric,
                   level, ivs, chosen)
    found = [c for c in found if c.check != "measured"]  # the gate reports failures itself
    judging = [k for k in QUALITY_KEYS + ("max_quality_decrease",)
               if k in thr and k != "min_fidelity"]
    sane = (sanity_checks(run.rows, metric, chosen, level, ivs, intervals(DEFAULT_CONFIDENCE))
            if judging else [])
    return [Check(c.candidate, c.check, c.status, c.value, c.threshold, c.message,
                  "measured", None, c.low, c.high, c.confidence, c.needed)
            for c in sane + found]


def perf_checks(name: str, f: dict, thr: dict) -> list:
    out, target = [], f["target"]
    unusable = f.get("target_status") == "unsupported"
    for key, fig, unit, what in (("max_latency_ms", "latency_p95_ms", "ms", "p95 latency"),
                                 ("max_memory_mb", "memory_mb", "MB", "memory"),
                                 ("max_cost_per_1k", "cost_per_1k", "$", "cost per 1k")):
        t = thr.get(key)
        if t is None:
            continue
        check = f"{'cost' if key == 'max_cost_per_1k' else key[4:-3]}.{key}"
        prov = f.get("provenance") if key != "max_cost_per_1k" else (
            "measured" if target == LOCAL else "projected")
        v = f.get(fig)
        if unusable and (target != LOCAL or key == "max_cost_per_1k"):
            out.append(Check(name, check, "fail", None, t, f"cannot run on {target}: "
                             f"{f.get('target_reason')}", prov, target))
        elif key == "max_cost_per_1k" and v is None:
            status = f.get("target_status")
            if status in ("too slow", "too big"):
                out.append(Check(name, check, "fail", None, t, f"{status} on {target}: "
                                 f"{f.get('target_reason')}", prov, target))
            else:
                out.append(Check(name, check, "error", None, t,
                                 f"no cost per 1k on {target}: "
                                 f"{f.get('target_reason') or status or 'no price'}",
                                 prov, target))
        elif v is None:
            out.append(Check(name, check, "error", None, t,
                             f"no {what} measured on {target}", prov, target))
        else:
            ok = v <= t * (1 + 1e-12)
            shown = f"${v:.6f}" if unit == "$" else f"{v:.2f} {unit}"
            limit = f"${t:g}" if unit == "$" else f"{t:g} {unit}"
            out.append(Check(name, check, "pass" if ok else "fail", v, t,
                             f"{what} on {target} {shown} {'<=' if ok else '>'} {limit}",
                             prov, target))
    return out


def regression_checks(name: str, f: dict, prev: dict | None, prev_name: str, thr: dict,
                       lower: bool) -> list:
    out = []
    asked = [k for k in ("max_quality_decrease", "max_cost_increase", "max_latency_increase")
             if thr.get(k) is not None]
    for k in asked:
        check, t = f"regression.{k}", thr[k]
        if prev is None:
            out.append(Check(name, check, "error", None, t,
                             f"previous results have no candidate {prev_name!r}"))
            continue
        if k == "max_quality_decrease":
            v, p = f.get("value"), prev.get("value")
            if v is None or p is None:
                out.append(Check(name, check, "error", None, t, f"no {f['metric']} "
                                 f"{'measured' if v is None else 'in the previous results'}",
                                 "measured"))
                continue
            dec = (v - p) if lower else (p - v)
            ok = dec <= t + 1e-12
            out.append(Check(name, check, "pass" if ok else "fail", dec, t,
                             f"{f['metric']} {v:.4f} vs previous {p:.4f}: decrease "
                             f"{dec:+.4f} {'<=' if ok else '>'} {t:g}", "measured"))
            continue
        fig, what = (("cost_per_1k", "cost per 1k") if k == "max_cost_increase"
                     else ("latency_p95_ms", "p95 latency"))
        # cost per 1k is dollars whatever serves it; latency only compares on one target
        if k == "max_latency_increase" and prev.get("target") != f.get("target"):
            out.append(Check(name, check, "error", None, t,
                             f"previous figures are for {prev.get('target')}, these for "
                             f"{f.get('target')}"))
            continue
        v, p = f.get(fig), prev.get(fig)
        if v is None or p is None or p <= 0:
            out.append(Check(name, check, "error", None, t,
                             f"no {what} {'here' if v is None else 'in the previous results'}"
                             f" on {f.get('target')}"))
            continue
        inc = v / p - 1.0
        ok = inc <= t + 1e-12
        where = ("" if prev.get("target") == f.get("target")
                 else f" (previous on {prev.get('target')})")
        out.append(Check(name, check, "pass" if ok else "fail", inc, t,
                         f"{what} {v:.6g} vs previous {p:.6g}{where}: {inc:+.2%} "
                         f"{'<=' if ok else '>'} {t:+.2%}", f.get("provenance"),
                         f.get("target")))
    return out
