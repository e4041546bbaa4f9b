"""Confidence intervals of quality figures, from the per-unit results of a run.

What is resampled (the independent units):

- text-classification: the eval examples (articles, sentences). Accuracy gets a Wilson
  interval; macro-F1 and per-class F1 a bootstrap over examples; the change against the
  baseline a paired bootstrap (both models' predictions of the same drawn examples) and,
  for accuracy, the exact McNemar p-value.
- feature-extraction: the documents. The Lee pairs (1,225 pairs of 50 documents) are not
  independent, so each resample draws documents and scores every pair of drawn documents
  (a cluster bootstrap). When no text appears in more than one pair, the pairs themselves
  are the units.
- causal-lm: windows of text (the scoring windows of the sliding-window perplexity): a
  block bootstrap of summed negative log-likelihood over summed tokens.

The unit data lives in the run directory (`quality_units.json`), so a gate or a
recommendation at another confidence level recomputes intervals without measuring again.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from compress import stats
from compress.measure import metrics as M

UNITS_FILE = "quality_units.json"
UNIT_NAMES = {"text-classification": "examples", "feature-extraction": "documents",
              "causal-lm": "windows"}


@dataclass
class Figure:
    """One quality metric of one candidate with its interval (and against its baseline)."""

    metric: str
    value: float
    low: float
    high: float
    confidence: float
    method: str
    units: str                        # examples | documents | pairs | windows
    n_units: int
    delta: float | None = None        # candidate - baseline
    delta_low: float | None = None
    delta_high: float | None = None
    mcnemar_p: float | None = None
    discordant: tuple[int, int] | None = None   # (only baseline right, only candidate right)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- per task

class _Classification:
    def __init__(self, shared: dict, metrics: list[str]):
        self.gold = np.asarray(shared["gold"], dtype=object)
        self.classes = sorted(set(shared["gold"]))
        self.metrics = metrics
        self.n = len(self.gold)
        self.unit = "examples"
        self._pred: dict[int, tuple] = {}

    def _arrays(self, u: dict) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, correct) of one candidate, converted once."""
        if id(u) not in self._pred:
            pred = np.asarray(u["pred"], dtype=object)
            self._pred[id(u)] = (pred, pred == self.gold)
        return self._pred[id(u)]

    def names(self) -> list[str]:
        out = [m for m in ("accuracy", "macro_f1") if m in self.metrics]
        if "per_class_f1" in self.metrics:
            out += [f"f1[{c}]" for c in self.classes]
        return out

    def value(self, u: dict, metric: str, idx) -> float:
        pred, correct = self._arrays(u)
        if metric == "accuracy":
            return float(correct[idx].mean())
        pred, gold = pred[idx], self.gold[idx]
        if metric == "macro_f1":
            return M.macro_f1(pred, gold, self.classes)
        c = metric[3:-1]
        return M.per_class_f1(pred, gold, [c])[c]

    def interval(self, u: dict, metric: str, level: float) -> stats.Interval:
        if metric == "accuracy":
            return stats.wilson(int(self._arrays(u)[1].sum()), self.n, level)
        return stats.bootstrap(lambda i: self.value(u, metric, i), self.n, level)

    def mcnemar(self, u: dict, base: dict):
        p, b, c = stats.mcnemar_exact(self._arrays(u)[1], self._arrays(base)[1])
        return p, (b, c)

    def chance(self, u: dict) -> float | None:
        k = u.get("n_classes") or len(self.classes)
        return 1.0 / k if k else None


def rankdata(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata as ranks

    return ranks(x)


class _Pairs:
    def __init__(self, shared: dict, metrics: list[str]):
        self.scores = np.asarray(shared["scores"], dtype=float)
        a, b = shared["texts"], shared["text_pairs"]
        docs = {t: i for i, t in enumerate(dict.fromkeys(a + b))}
        self.i = np.array([docs[t] for t in a])
        self.j = np.array([docs[t] for t in b])
        self.metrics = [m for m in ("spearman", "pearson") if m in metrics]
        self._sims: dict[int, np.ndarray] = {}
        counts = np.bincount(np.concatenate([self.i, self.j]), minlength=len(docs))
        self.by_document = bool(counts.max() > 1)
        if self.by_document:
            self.unit, self.n = "documents", len(docs)
            self.pair_at = np.full((len(docs), len(docs)), -1)
            self.pair_at[self.i, self.j] = np.arange(len(self.i))
            self.pair_at[self.j, self.i] = np.arange(len(self.i))
        else:
            self.unit, self.n = "pairs", len(self.i)

    def names(self) -> list[str]:
        return self.metrics

    def pairs(self, idx) -> np.ndarray:
        """Pair indices scored in a resample of units (with multiplicity)."""
        if not self.by_document:
            return idx
        grid = self.pair_at[np.ix_(idx, idx)]
        upper = np.triu(np.ones(grid.shape, dtype=bool), 1)
        chosen = grid[upper]
        return chosen[chosen >= 0]

    def value(self, u: dict, metric: str, idx) -> float:
        p = self.pairs(idx)
        if id(u) not in self._sims:
            self._sims[id(u)] = np.asarray(u["sims"], dtype=float)
        sims = self._sims[id(u)][p]
        if len(p) < 3 or np.ptp(sims) == 0 or np.ptp(self.scores[p]) == 0:
            return float("nan")
        x, y = sims, self.scores[p]
        if metric == "spearman":  # Spearman = Pearson of the ranks (ties averaged)
            x, y = rankdata(x), rankdata(y)
        return float(np.corrcoef(x, y)[0, 1])

    def interval(self, u: dict, metric: str, level: float) -> stats.Interval:
        return stats.bootstrap(lambda i: self.value(u, metric, i), self.n, level)

    def mcnemar(self, u, base):
        return None, None

    def chance(self, u: dict) -> float | None:
        return 0.0


class _Windows:
    def __init__(self, shared: dict, metrics: list[str]):
        self.metrics = [m for m in ("perplexity", "next_token_accuracy") if m in metrics]
        self.unit = "windows"
        self.n = None

    def names(self) -> list[str]:
        return self.metrics

    def value(self, u: dict, metric: str, idx) -> float:
        tokens = np.asarray(u["window_tokens"], dtype=float)[idx].sum()
        if metric == "perplexity":
            return float(np.exp(np.asarray(u["window_nll"], dtype=float)[idx].sum() / tokens))
        return float(np.asarray(u["window_correct"], dtype=float)[idx].sum() / tokens)

    def interval(self, u: dict, metric: str, level: float) -> stats.Interval:
        return stats.bootstrap(lambda i: self.value(u, metric, i), len(u["window_tokens"]),
                               level)

    def mcnemar(self, u, base):
        return None, None

    def chance(self, u: dict) -> float | None:
        return None  # perplexity has no chance level


TASKS = {"text-classification": _Classification, "feature-extraction": _Pairs,
         "causal-lm": _Windows}


def shared_units(task: str, payload: dict) -> dict:
    """What every candidate's units are scored against (from the eval payload)."""
    if task == "text-classification":
        return {"gold": payload["labels"]}
    if task == "feature-extraction":
        return {"texts": payload["texts"], "text_pairs": payload["text_pairs"],
                "scores": payload["scores"]}
    return {}


class Intervals:
    """Intervals of every candidate's quality figures at one confidence level.

    `units`: the run's unit data ({"task", "metrics", "shared", "candidates": {name: u}});
    `baselines`: candidate -> its baseline's name.
    """

    def __init__(self, units: dict, baselines: dict[str, str | None], level: float):
        self.level = stats.check_confidence(level)
        self.units = units
        self.task = units["task"]
        self.model = TASKS[self.task](units["shared"], units["metrics"])
        self.baselines = baselines
        self._cache: dict[tuple[str, str], Figure | None] = {}

    def n_units(self, candidate: str) -> int | None:
        u = self.units["candidates"].get(candidate)
        if u is None:
            return None
        return self.model.n if self.model.n is not None else len(u["window_tokens"])

    @property
    def unit(self) -> str:
        return self.model.unit

    def metrics(self) -> list[str]:
        return self.model.names()

    def figure(self, candidate: str, metric: str) -> Figure | None:
        """The metric's interval, and for a candidate with a baseline, the paired interval
        of its change against the baseline; None when the candidate has no unit data."""
        key = (candidate, metric)
        if key not in self._cache:
            self._cache[key] = self._figure(candidate, metric)
        return self._cache[key]

    def _figure(self, candidate: str, metric: str) -> Figure | None:
        cands = self.units["candidates"]
        u = cands.get(candidate)
        if u is None or metric not in self.model.names():
            return None
        m, level = self.model, self.level
        n = self.n_units(candidate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            everything = np.arange(n)
            value = m.value(u, metric, everything)
            ci = m.interval(u, metric, level)
            fig = Figure(metric, value, ci.low, ci.high, level, ci.method, m.unit, n)
            base_name = self.baselines.get(candidate)
            base = cands.get(base_name) if base_name and base_name != candidate else None
            if base is not None and self.n_units(base_name) == n \
                    and not metric.startswith("f1["):
                base_value = m.value(base, metric, everything)
                d = stats.bootstrap(lambda i: m.value(u, metric, i) - m.value(base, metric, i),
                                    n, level, method="paired-bootstrap")
                fig.delta, fig.delta_low, fig.delta_high = value - base_value, d.low, d.high
                if metric == "accuracy":
                    fig.mcnemar_p, fig.discordant = m.mcnemar(u, base)
        return fig

    def chance(self, candidate: str) -> float | None:
        u = self.units["candidates"].get(candidate)
        return None if u is None else self.model.chance(u)


def _given(v) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v))


class SummaryIntervals:
    """The intervals a run stored in its summary rows (at the run's confidence level), for
    callers that hold only a summary table (e.g. `recommend(run.summary(), ...)`)."""

    def __init__(self, rows: list[dict], level: float):
        self.level = level
        self.rows = {r["candidate"]: r for r in rows}

    def figure(self, name: str, metric: str) -> Figure | None:
        r = self.rows.get(name)
        if r is None or not _given(r.get(f"{metric}_low")) or r.get("confidence") != self.level:
            return None
        fig = Figure(metric, r[metric], r[f"{metric}_low"], r[f"{metric}_high"], self.level,
                     "stored", r.get("quality_units") or "examples", int(r.get("n_units") or 0))
        if r.get("primary_metric") == metric and _given(r.get("primary_delta_low")):
            fig.delta = r.get("primary_delta")
            fig.delta_low, fig.delta_high = r["primary_delta_low"], r["primary_delta_high"]
            fig.mcnemar_p = r.get("mcnemar_p") if _given(r.get("mcnemar_p")) else None
        return fig

    def chance(self, name: str) -> float | None:
        r = self.rows.get(name) or {}
        return r.get("chance_level") if _given(r.get("chance_level")) else None


def above_chance(fig: Figure | None, chance: float | None, lower_is_better: bool) -> bool | None:
    """Whether the interval lies clearly above chance; None when there is no chance level."""
    if fig is None or chance is None or lower_is_better:
        return None
    return bool(fig.low > chance)


def fmt(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """'0.973 ±0.015' (half-width; '+0.012/-0.020' when the interval is lopsided)."""
    if value is None or not np.isfinite(value):
        return "-"
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    up, down = high - value, value - low
    if abs(up - down) <= 0.25 * max(up, down, 1e-12):
        return f"{value:.{digits}f} ±{(high - low) / 2:.{digits}f}"
    return f"{value:.{digits}f} +{max(up, 0):.{digits}f}/-{max(down, 0):.{digits}f}"


def notes(rows: list[dict]) -> list[str]:
    """Lines under a results table: how sure the quality figures are, which epoch each
    trained step kept and why, and any baseline not clearly above chance."""
    out = []
    ci = next((r for r in rows if r.get("confidence")), None)
    if ci is not None:
        policy = next((r.get("quality_inputs") for r in rows if r.get("quality_inputs")), None)
        mc = any(r.get("mcnemar_p") is not None for r in rows)
        out.append(f"± {ci['confidence']:.0%} interval over {ci['n_units']} "
                   f"{ci['quality_units']} (Δ: paired bootstrap"
                   + ("; McNemar p in --format json" if mc else "") + ")"
                   + (f"; quality inputs {policy.replace('_', ' ')}" if policy else ""))
    for r in rows:
        if r.get("kept_epoch") is not None:
            of = f" of {r['epochs_run']}" if r.get("epochs_run") else ""
            out.append(f"{r['candidate']}: kept epoch {r['kept_epoch']}{of}"
                       + (f" ({r['selection']})" if r.get("selection") else ""))
    for r in rows:
        if r.get("sanity"):
            out.append(f"warning: {r['sanity']}")
    return out
