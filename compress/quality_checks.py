"""The quality checks, one definition for the gate and the recommendation.

Each check compares a candidate's primary metric with its run's baseline (or with an
absolute floor) at a confidence level:

- `pass` when the interval puts the change within the threshold,
- `fail` when the interval puts it beyond,
- `inconclusive` when the interval straddles the threshold: the eval set is too small to
  decide. The message estimates how many units (examples, documents, windows) would
  decide it: an interval's width shrinks as 1/sqrt(N), so an interval of half-width h at
  N units reaches the threshold's distance g from the observed change at about
  N * (h / g)^2 units.
- `error` when a figure the check needs is missing (never a pass), or the check is
  undefined (a ratio against a baseline <= 0).

`confidence=None` compares the point values (the behaviour before intervals). The
baseline itself is checked for sanity: a baseline whose interval includes chance (1/number
of classes for accuracy, 0 for a correlation) makes every comparison meaningless, so the
gate fails and the recommendation refuses. Fidelity floors compare the point value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from compress import stats
from compress.errors import InputError

QUALITY_KEYS = ("max_drop", "max_relative_drop", "min_recovery", "min_value", "min_fidelity")
FIDELITY_KEYS = ("top1_agreement", "cosine")
LOWER_IS_BETTER = {"perplexity", "kl_divergence"}
DEFAULT_CONFIDENCE = 0.95
EPS = 1e-12

# allowed range of each threshold: (low, high, low inclusive)
RANGES = {"max_drop": (0, math.inf, True), "max_relative_drop": (0, 1, True),
          "min_recovery": (0, math.inf, True), "min_value": (-math.inf, math.inf, True),
          "min_fidelity": (0, 1, True), "max_latency_ms": (0, math.inf, False),
          "max_memory_mb": (0, math.inf, False), "max_cost_per_1k": (0, math.inf, False),
          "max_quality_decrease": (0, math.inf, True), "max_cost_increase": (0, math.inf, True),
          "max_latency_increase": (0, math.inf, True)}


def check_thresholds(thresholds: dict, where: str = "threshold") -> dict:
    """Refuse NaN, infinite or out-of-range thresholds (InputError, exit 2)."""
    for key, value in thresholds.items():
        if value is None or key not in RANGES:
            continue
        lo, hi, inclusive = RANGES[key]
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where} {key}: got {value!r}; expected a number") from None
        if not math.isfinite(v):
            raise InputError(f"{where} {key}: got {value!r}; expected a finite number")
        if v > hi or v < lo or (v == lo and not inclusive):
            rng = f"{'[' if inclusive else '('}{lo:g}, {hi:g}]"
            raise InputError(f"{where} {key}: got {v:g}; expected a value in {rng}")
    return thresholds


def parse_confidence(value, where: str = "--confidence") -> float | None:
    """A confidence level in (0, 1), or None for 'none' (point comparisons)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        return stats.check_confidence(float(value))
    except (TypeError, ValueError):
        raise InputError(f"{where}: got {value!r}; expected a level between 0 and 1 "
                         "(e.g. 0.95) or none") from None


@dataclass
class QualityCheck:
    candidate: str
    check: str                # quality.max_drop, quality.baseline, fidelity.min_fidelity, ...
    status: str               # pass | fail | inconclusive | error
    value: float | None       # the point figure checked (drop, ratio, value)
    threshold: float | None
    message: str
    low: float | None = None  # its interval at `confidence`
    high: float | None = None
    confidence: float | None = None
    needed: int | None = None  # units that would decide an inconclusive check

    def to_dict(self) -> dict:
        return asdict(self)


def _num(v):
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _decide(lo: float, hi: float, t: float, higher_passes: bool) -> str:
    """pass / fail / inconclusive of an interval against a bound: for a ceiling
    (higher_passes=False) the interval must lie at or below t to pass."""
    if higher_passes:
        return "pass" if lo >= t - EPS else "fail" if hi < t - EPS else "inconclusive"
    return "pass" if hi <= t + EPS else "fail" if lo > t + EPS else "inconclusive"


def _too_small(n: int, unit: str, lo: float, hi: float, point: float, t: float) -> tuple:
    half = (hi - lo) / 2
    gap = abs(point - t)
    if gap > EPS:
        m = stats.examples_needed(n, half, gap)
        why = "estimated from the observed interval, whose width shrinks as 1/sqrt(N)"
    else:
        m = stats.examples_needed(n, half, abs(t) / 2 if t else half / 2)
        why = ("the observed value sits on the threshold, so no size settles it; that many "
               "would tell a value half-way to the threshold from it, as the interval's "
               "width shrinks as 1/sqrt(N)")
    about = f"about {m} needed" if m else "how many are needed cannot be estimated"
    return f"eval set too small to decide: {n} {unit}, {about} ({why})", m


def quality_checks(rows: list[dict], thresholds: dict, metric: str,
                   confidence: float | None = DEFAULT_CONFIDENCE, intervals=None,
                   candidates: list[str] | None = None) -> list[QualityCheck]:
    """The quality checks of each candidate (default: every row) against its baseline.

    rows: summary rows (candidate, status, baseline, the metric, fidelity figures);
    intervals: compress.confidence.Intervals at `confidence` (needed unless it is None)."""
    lower = metric in LOWER_IS_BETTER
    by_name = {r["candidate"]: r for r in rows}
    names = candidates if candidates is not None else list(by_name)
    out: list[QualityCheck] = []
    for name in names:
        r = by_name[name]
        base_name = r.get("baseline") or name
        base = by_name.get(base_name)
        out += _one(name, r, base_name, base, thresholds, metric, lower, confidence,
                    intervals)
    return out


def _interval_or_error(intervals, name: str, metric: str, level):
    fig = intervals.figure(name, metric) if intervals is not None else None
    if fig is None:
        return None, (f"no interval for {name}'s {metric} at {level:.0%}: the run keeps no "
                      "per-example results (measured before intervals were kept); run it "
                      "again, or pass --confidence none to compare point values")
    return fig, None


def baseline_sanity(name: str, metric: str, confidence: float | None, intervals,
                    lower: bool) -> QualityCheck | None:
    """Fail when the baseline is not clearly above chance (None when there is no chance
    level, as for perplexity, or no unit data to tell)."""
    from compress.confidence import above_chance, fmt

    if lower or intervals is None:
        return None
    fig, chance = intervals.figure(name, metric), intervals.chance(name)
    ok = above_chance(fig, chance, lower)
    if ok is None:
        return None
    level = intervals.level
    shown = f"{metric} {fmt(fig.value, fig.low, fig.high)} ({level:.0%} interval " \
            f"{fig.low:.4f}..{fig.high:.4f})"
    if ok:
        return QualityCheck(name, "quality.baseline", "pass", fig.value, chance,
                            f"baseline {shown} is above chance ({chance:.4f})", fig.low,
                            fig.high, level)
    return QualityCheck(name, "quality.baseline", "fail", fig.value, chance,
                        f"baseline {name} is not clearly above chance: {shown} includes "
                        f"chance level {chance:.4f}; comparisons against it mean nothing",
                        fig.low, fig.high, level)


def _one(name, r, base_name, base, thr, metric, lower, level, intervals) -> list:
    out = []

    def add(check, status, value, threshold, message, lo=None, hi=None, needed=None):
        out.append(QualityCheck(name, check, status, value, threshold, message, lo, hi,
                                level if lo is not None else None, needed))

    if r.get("status", "ok") != "ok":
        add("measured", "error", None, None, f"candidate failed: {r.get('error')}")
        return out
    v = _num(r.get(metric))
    b = _num(base.get(metric)) if base is not None else None
    asked = [k for k in ("max_drop", "max_relative_drop", "min_recovery")
             if thr.get(k) is not None]
    fig = None
    if level is not None and (asked or thr.get("min_value") is not None) and v is not None:
        fig, why = _interval_or_error(intervals, name, metric, level)
        if fig is None:
            for k in asked + (["min_value"] if thr.get("min_value") is not None else []):
                add(f"quality.{k}", "error", None, thr[k], why)
            asked = []
    for k in asked:
        t = thr[k]
        if v is None or b is None:
            add(f"quality.{k}", "error", None, t,
                f"no {metric} measured for {name if v is None else f'its baseline {base_name}'}")
            continue
        if k in ("max_relative_drop", "min_recovery") and b <= 0:
            add(f"quality.{k}", "error", None, t,
                f"{k} is a ratio to the baseline, and baseline {base_name}'s {metric} is "
                f"{b:g}: a ratio needs a baseline above 0; use max_drop")
            continue
        drop = (v - b) if lower else (b - v)
        if fig is not None and name != base_name:
            if fig.delta_low is None:
                add(f"quality.{k}", "error", None, t, f"no paired interval of {name} "
                    f"against {base_name}")
                continue
            lo, hi = ((fig.delta_low, fig.delta_high) if lower
                      else (0.0 - fig.delta_high, 0.0 - fig.delta_low))
        else:
            lo = hi = drop
        n, unit = (fig.n_units, fig.units) if fig is not None else (None, None)
        ci = (f" ({level:.0%} interval {lo + 0.0:+.4f}..{hi + 0.0:+.4f})"
              if fig is not None and name != base_name else "")
        if k == "max_drop":
            value, vlo, vhi, higher = drop, lo, hi, False
            shown = f"{metric} {v:.4f} vs baseline {b:.4f}: drop {drop:+.4f}{ci}"
        elif k == "max_relative_drop":
            value, vlo, vhi, higher = drop / abs(b), lo / abs(b), hi / abs(b), False
            ci = ci and f" ({level:.0%} interval {vlo:+.2%}..{vhi:+.2%})"
            shown = f"{metric} relative drop {value:+.2%}{ci}"
        else:
            rec = (lambda d: b / (b + d) if b + d > 0 else 0.0) if lower else \
                (lambda d: 1 - d / b)
            value, vlo, vhi, higher = rec(drop), rec(hi), rec(lo), True
            ci = ci and f" ({level:.0%} interval {vlo:.4f}..{vhi:.4f})"
            shown = f"recovery {value:.4f}{ci}"
        if level is None or fig is None or name == base_name:
            status = _decide(value, value, t, higher)
        else:
            status = _decide(vlo, vhi, t, higher)
        rel = "<=" if not higher else ">="
        if status == "pass":
            add(f"quality.{k}", "pass", value, t, f"{shown} {rel} {t:g}",
                vlo if ci else None, vhi if ci else None)
        elif status == "fail":
            neg = ">" if not higher else "<"
            add(f"quality.{k}", "fail", value, t, f"{shown} {neg} {t:g}",
                vlo if ci else None, vhi if ci else None)
        else:
            msg, needed = _too_small(n, unit, vlo, vhi, value, t)
            add(f"quality.{k}", "inconclusive", value, t,
                f"{msg}: {shown} straddles {k} {t:g}", vlo, vhi, needed)
    if thr.get("min_value") is not None and not any(c.check == "quality.min_value"
                                                     for c in out):
        t = thr["min_value"]
        word = "ceiling" if lower else "floor"
        if v is None:
            add("quality.min_value", "error", None, t, f"no {metric} measured")
        else:
            lo, hi = (fig.low, fig.high) if fig is not None else (v, v)
            ci = f" ({level:.0%} interval {lo:.4f}..{hi:.4f})" if fig is not None else ""
            status = _decide(lo, hi, t, not lower)
            if status == "inconclusive":
                msg, needed = _too_small(fig.n_units, fig.units, lo, hi, v, t)
                add("quality.min_value", status, v, t,
                    f"{msg}: {metric} {v:.4f}{ci} straddles the {word} {t:g}", lo, hi, needed)
            else:
                add("quality.min_value", status, v, t, f"{metric} {v:.4f}{ci} "
                    f"{'within' if status == 'pass' else 'outside'} {word} {t:g}",
                    lo if ci else None, hi if ci else None)
    if thr.get("min_fidelity") is not None and base is not None and name != base_name:
        t = thr["min_fidelity"]
        fid = next(((k, _num(r.get(k))) for k in FIDELITY_KEYS if _num(r.get(k)) is not None),
                   None)
        if fid is None:
            add("fidelity.min_fidelity", "error", None, t,
                "no fidelity (top-1 agreement or cosine) measured")
        else:
            ok = fid[1] >= t - EPS
            add("fidelity.min_fidelity", "pass" if ok else "fail", fid[1], t,
                f"{fid[0]} {fid[1]:.4f} {'>=' if ok else '<'} {t:g}")
    return out


def sanity_checks(rows: list[dict], metric: str, names: list[str],
                  confidence: float | None, intervals, sanity_intervals=None) -> list:
    """One baseline-sanity check per distinct baseline of `names`. With confidence None,
    the default level's intervals (`sanity_intervals`) still judge chance."""
    lower = metric in LOWER_IS_BETTER
    by_name = {r["candidate"]: r for r in rows}
    ivs = intervals if confidence is not None else sanity_intervals
    out = []
    for base in dict.fromkeys(by_name[n].get("baseline") or n for n in names):
        if base in by_name and by_name[base].get("status", "ok") == "ok":
            c = baseline_sanity(base, metric, confidence, ivs, lower)
            if c is not None:
                out.append(c)
    return out
