"""Gate a model release on a run's figures: `compress gate RUN`.

Checks, per candidate (or for the recommended candidate x target pair):

- quality against the run's own baseline (primary metric): max_drop, max_relative_drop,
  min_recovery, min_value (a ceiling when lower is better, e.g. perplexity);
- fidelity floor (top-1 agreement or cosine) for candidates that have a baseline;
- p95 latency and memory: on a named target, the projected figures (roofline); without
  one, the figures measured here;
- cost per 1,000 inferences on the target (default local-cpu, measured);
- with a previous release's results (`baseline`): regressions of the primary metric
  (absolute), of cost per 1k and of p95 latency (relative).

Each check is `pass`, `fail` or `error`. An error is a figure the check needs that the run
does not have: a missing measurement is never a pass. The verdict's exit code: 0 all pass,
1 a check fails, 2 an error (or an invalid run, suite or argument).

Outputs: JUnit XML (one test case per check per candidate), a markdown summary, a JSON
verdict. The verdict records each candidate's figures, so a later release can be gated
against it (`--baseline verdict.json`) after the previous run's artifacts are gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compress.decide.gate_checks import (
    GATE_KEYS,
    LOCAL,
    QUALITY_KEYS,
    STATUSES,
    TARGET_KEYS,
    Check,
    _num,
    candidate_figures,
    perf_checks,
    quality_checks,
    regression_checks,
)
from compress.errors import InputError
from compress.gate_output import to_junit, to_markdown
from compress.records import SCHEMA_VERSION, Direction, Record, direction, parse
from compress.results import Run, load_run

__all__ = ["Check", "GateResult", "Verdict", "gate", "read_verdict", "suite_targets"]


class Recommended(Record):
    candidate: str
    target: str
    runtime: str | None = None
    cost_per_1k: float | None = None
    serving: Any = None         # the serving model's sizing (compress.decide), if any
    decision: str | None = None  # which saved or computed decision was gated


class Verdict(Record):
    """The JSON verdict (`compress gate --json`): what a later release is gated against
    (`--baseline verdict.json`) and what CI reads (`recommended.candidate`)."""

    schema_version: int = SCHEMA_VERSION
    verdict: Literal["pass", "fail", "error"]
    exit_code: int
    run: str
    metric: str
    target: str
    thresholds: dict[str, float]
    confidence: float | None = None  # of the quality checks; None: point comparisons
    counts: dict[str, int]
    recommended: Recommended | None = None
    baseline: str | None = None
    figures: dict[str, dict[str, Any]]  # candidate -> compress.decide.gate_checks figures
    checks: list[Check]
    provenance: dict[str, Any] = {}


def read_verdict(path: str | Path) -> Verdict:
    """A verdict file of any supported schema version (InputError otherwise)."""
    from compress.records import read_json

    return parse(Verdict, read_json(path, "gate verdict"), path, "gate verdict")


@dataclass
class GateResult:
    run: str
    metric: str
    target: str
    thresholds: dict
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, dict] = field(default_factory=dict)
    recommended: dict | None = None
    baseline: str | None = None
    provenance: dict = field(default_factory=dict)
    confidence: float | None = None  # of the quality checks; None: point comparisons

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.checks}
        return 2 if "error" in statuses else 1 if statuses & {"fail", "inconclusive"} else 0

    @property
    def verdict(self) -> str:
        return {0: "pass", 1: "fail", 2: "error"}[self.exit_code]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def record(self) -> Verdict:
        return Verdict(verdict=self.verdict, exit_code=self.exit_code, run=self.run,
                       metric=self.metric, target=self.target, thresholds=self.thresholds,
                       confidence=self.confidence,
                       counts=self.counts(), recommended=self.recommended,
                       baseline=self.baseline, figures=self.figures, checks=self.checks,
                       provenance=self.provenance)

    def to_dict(self) -> dict:
        return self.record().model_dump(mode="json")

    def to_json(self) -> str:
        from compress.store import strict_json

        return strict_json(self.to_dict())

    def to_junit(self) -> str:
        """JUnit XML: one <testsuite> per candidate, one <testcase> per check."""
        return to_junit(self)

    def to_markdown(self) -> str:
        return to_markdown(self)


# --------------------------------------------------------------------------------- gate

def suite_targets(path: str | Path, run: Run) -> tuple[dict, dict | None]:
    """(targets, traffic) of a suite file, refused when it is for another task."""
    from compress.suite import load_suite

    suite, _ = load_suite(path)
    if suite.task != run.task:
        raise InputError(f"{path}: suite is for {suite.task}, the run is {run.task}")
    if suite.primary_metric != run.primary_metric:
        raise InputError(f"{path}: suite's primary metric is {suite.primary_metric}, the "
                         f"run's is {run.primary_metric}")
    return suite.targets.model_dump(), (suite.traffic.model_dump() if suite.traffic else None)


def _verdict_figures(data: dict, path: Path) -> dict[str, dict]:
    """The figures of a gate verdict JSON: {candidate: {figure: number or null}}."""
    figures = data["figures"]
    numeric = ("value", "fidelity", "latency_p95_ms", "memory_mb", "cost_per_1k",
               "price_per_hour", "batch_size")

    def number(v) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    ok = isinstance(figures, dict) and all(
        isinstance(f, dict) and all(number(f.get(k)) for k in numeric)
        for f in figures.values())
    if not ok or not isinstance(data["checks"], list):
        raise InputError(f"--baseline {path}: not a gate verdict: expected 'figures' as "
                         "{candidate: {figure: value}} and 'checks' as a list (write one "
                         "with `compress gate --json FILE`)")
    return figures


def _previous(path: str | Path, target: str, catalog, calibration, thr) -> dict[str, dict]:
    """Figures of a previous release: a gate verdict JSON, a run dir or its results.json."""
    p = Path(path)
    if p.is_file():
        from compress.records import read_json

        data = read_json(p, "a gate verdict (--json) or a results.json")
        if isinstance(data, dict) and "figures" in data and "checks" in data:
            _verdict_figures(data, p)  # numbers where figures are expected
            return parse(Verdict, data, f"--baseline {p}", "gate verdict").figures
        if isinstance(data, dict) and "candidates" in data:
            p = p.parent
        else:
            raise InputError(f"--baseline {p}: neither a gate verdict (--json) nor a "
                             "results.json")
    if not p.exists():
        raise InputError(f"--baseline {p}: no such file or run directory")
    prev = load_run(p)
    return candidate_figures(prev, prev.rows, target, catalog, calibration, thr)


def release_candidate(run: Run) -> str | None:
    """The candidate the recipe releases (`release:`), if it names one."""
    name = (run.manifest.get("recipe", {}).get("resolved") or {}).get("release")
    if name is None:
        return None
    names = [r["candidate"] for r in run.rows]
    if name not in names:
        raise InputError(f"{run.manifest['recipe'].get('path')}: release: {name!r} is not a "
                         f"candidate of the run (candidates: {', '.join(names)})")
    return name


def gate(run: Run | str | Path, thresholds: dict | None = None, *,
         suite: str | Path | None = None, candidates: list[str] | None = None,
         recommended: bool = False, every_candidate: bool = False,
         target: str | None = None,
         baseline: str | Path | None = None, baseline_candidate: str | None = None,
         catalog=None, calibration: dict | None = None, ask=None,
         confidence: float | None | str = "suite") -> GateResult:
    """Check a run against thresholds: the suite's targets (the run's own suite, or
    `suite`), overridden by `thresholds`, with quality judged at `confidence` (default:
    the suite's targets.confidence, else 0.95; None compares point values). See the
    module docstring.

    What is gated: `candidates` when named; every candidate with `every_candidate`; the
    recommended pair with `recommended`; otherwise the release candidate, the one the recipe
    names in `release:`, else the saved recommendation's (`compress recommend`)."""
    from compress.decide.decision import decide
    from compress.decide.recommend import _cal_name
    from compress.hardware.catalog import load_catalog
    from compress.quality_checks import DEFAULT_CONFIDENCE, check_thresholds

    run = run if isinstance(run, Run) else load_run(run)
    catalog = catalog or load_catalog()
    metric = run.primary_metric
    if not run.rows or metric is None:
        raise InputError(f"{run.path}: the run has no candidates")
    if suite is not None:
        base_t, _ = suite_targets(suite, run)
    else:
        base_t = run.suite.targets.model_dump()
    thr = {k: v for k, v in base_t.items() if v is not None and k in TARGET_KEYS}
    thr.update({k: v for k, v in (thresholds or {}).items() if v is not None})
    asked_confidence = confidence
    if confidence == "suite":
        confidence = base_t.get("confidence", DEFAULT_CONFIDENCE)
    check_thresholds(thr)
    unknown = set(thr) - set(GATE_KEYS)
    if unknown:
        raise InputError(f"unknown threshold(s): {', '.join(sorted(unknown))}")
    regression = [k for k in ("max_quality_decrease", "max_cost_increase",
                              "max_latency_increase") if thr.get(k) is not None]
    if regression and baseline is None:
        raise InputError(f"{', '.join(regression)} need --baseline (a previous release's "
                         "run, results.json or gate verdict)")
    if sum(bool(x) for x in (candidates, recommended, every_candidate)) > 1:
        raise InputError("give one of: candidate names, --recommended, --every-candidate")
    if target is not None and target not in catalog.names():
        raise InputError(f"--target {target!r}: not in the catalog ({', '.join(catalog.names())})")

    names = [r["candidate"] for r in run.rows]
    result = GateResult(str(run.path), metric, target or LOCAL, thr,
                        baseline=str(baseline) if baseline else None, confidence=confidence)
    release = None if (candidates or every_candidate or recommended) \
        else release_candidate(run)
    pinned = None      # the saved decision's row for the gated pair: its figures are used
    if recommended or not (candidates or every_candidate or release):
        from compress.decide.decision import Ask

        ask = ask or Ask(target_names=[target] if target else None)
        if asked_confidence != "suite":
            ask.confidence = confidence
        decision = decide(run, ask)
        if decision.source == "computed" and decision.path is None and not recommended:
            raise InputError(
                f"{run.path}: nothing to gate: the recipe names no `release:` candidate and "
                "the run has no saved recommendation (run `compress recommend RUN` first); "
                "or name candidates (--candidate NAME) or gate them all (--every-candidate)")
        rec = decision.rec
        if rec.winner is None:
            why = (f"no recommendation: {rec.refused}" if rec.refused
                   else "nothing meets the targets: " + "; ".join(rec.explanation[1:4]))
            result.checks.append(Check("recommended", "recommendation", "fail", None, None,
                                       why))
            result.provenance = {**catalog.provenance(), "calibration": _cal_name(calibration),
                                 "decision": decision.describe()}
            return result
        w = rec.winner
        result.recommended = {"candidate": w["candidate"], "target": w["target"],
                              "runtime": w.get("runtime"), "cost_per_1k": w.get("cost_per_1k"),
                              "serving": w.get("serving"), "decision": decision.describe()}
        result.checks.append(Check(w["candidate"], "recommendation", "pass", None, None,
                                   rec.explanation[0], w.get("provenance"), w["target"]))
        chosen, result.target, pinned = [w["candidate"]], w["target"], w
    elif release:
        chosen = [release]
    elif candidates:
        bad = [c for c in candidates if c not in names]
        if bad:
            raise InputError(f"candidate(s) {', '.join(bad)} not in the run "
                             f"(candidates: {', '.join(names)})")
        chosen = list(candidates)
    else:
        chosen = [r["candidate"] for r in run.rows if r.get("role", "candidate") != "baseline"]
        chosen = chosen or names
    if not thr and not result.recommended:
        raise InputError("nothing to check: the suite has no targets and no threshold was "
                         "given (e.g. --max-drop 0.01, --max-latency-ms 50)")
    by_name = {r["candidate"]: r for r in run.rows}
    need = set(chosen) | {by_name[c].get("baseline") for c in chosen if by_name[c].get("baseline")}
    rows = [r for r in run.rows if r["candidate"] in need]
    figs = candidate_figures(run, rows, result.target, catalog, calibration, thr)
    if pinned is not None:   # the gated pair's figures are the saved decision's, as priced
        f = figs[pinned["candidate"]]
        mem = _num(pinned.get("memory_gb"))
        f.update(target_status=pinned.get("status"), target_reason=pinned.get("reason"),
                 runtime=pinned.get("runtime"), batch_size=_num(pinned.get("batch_size")),
                 cost_per_1k=_num(pinned.get("cost_per_1k")),
                 price_per_hour=_num(pinned.get("price_per_hour")),
                 latency_p95_ms=_num(pinned.get("latency_p95_ms")),
                 memory_mb=mem * 1000 if mem is not None else f.get("memory_mb"),
                 provenance=pinned.get("provenance"), serving=pinned.get("serving"))
    # a given --baseline is read (and refused when malformed) even if no regression
    # threshold uses it, so a broken CI input is found on the first run
    prev = (_previous(baseline, result.target, catalog, calibration, thr)
            if baseline is not None else None)
    lower = direction(metric) is Direction.LOWER
    quality = quality_checks(run, chosen, thr, metric, confidence)
    for name in chosen:
        f = figs[name]
        result.figures[name] = f
        if f["status"] != "ok":
            result.checks.append(Check(name, "measured", "error", None, None,
                                       f"candidate failed: {by_name[name].get('error')}"))
            continue
        base = by_name[name].get("baseline") or name
        result.checks += [c for c in quality if c.candidate == name
                          or (c.check == "quality.baseline" and c.candidate == base
                              and c not in result.checks)]
        result.checks += perf_checks(name, f, thr)
        if prev is not None and regression:
            pname = baseline_candidate or name
            result.checks += regression_checks(name, f, prev.get(pname), pname, thr, lower)
    asked_quality = [k for k in QUALITY_KEYS + ("max_quality_decrease",)
                     if k in thr and k != "min_fidelity"]
    judged = [c for c in result.checks if (c.check.startswith("quality.")
                                           and c.check != "quality.baseline")
              or c.check in ("regression.max_quality_decrease", "measured",
                             "recommendation")]
    if not judged:
        raise InputError(
            "the gate ran no quality check" + (
                f" (asked: {', '.join(asked_quality)}, but nothing was checked)"
                if asked_quality else
                ": a release gate must judge quality (fidelity alone does not); set "
                "targets in the suite or pass --max-drop, --max-relative-drop, "
                "--min-recovery or --min-value"))
    t = catalog[result.target]
    result.provenance = {**catalog.provenance(), "calibration": _cal_name(calibration),
                         "target_price": f"${t.price_per_hour}/h ({t.price_source})"}
    return result
