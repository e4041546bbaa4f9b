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

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from compress.decide.recommend import FIDELITY_KEYS
from compress.errors import InputError
from compress.results import LOWER_IS_BETTER, Run, load_run

QUALITY_KEYS = ("max_drop", "max_relative_drop", "min_recovery", "min_value", "min_fidelity")
TARGET_KEYS = QUALITY_KEYS + ("max_latency_ms", "max_memory_mb")
GATE_KEYS = TARGET_KEYS + ("max_cost_per_1k", "max_quality_decrease", "max_cost_increase",
                           "max_latency_increase")
LOCAL = "local-cpu"


def _num(v):
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


@dataclass
class Check:
    candidate: str
    check: str                 # e.g. "quality.max_drop", "cost.max_cost_per_1k"
    status: str                # pass | fail | error
    value: float | None
    threshold: float | None
    message: str
    provenance: str | None = None   # measured | projected
    target: str | None = None


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

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.checks}
        return 2 if "error" in statuses else 1 if "fail" in statuses else 0

    @property
    def verdict(self) -> str:
        return {0: "pass", 1: "fail", 2: "error"}[self.exit_code]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "error")}

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "run": self.run,
                "metric": self.metric, "target": self.target, "thresholds": self.thresholds,
                "counts": self.counts(), "recommended": self.recommended,
                "baseline": self.baseline, "figures": self.figures,
                "checks": [asdict(c) for c in self.checks], "provenance": self.provenance}

    def to_json(self) -> str:
        from compress.store import strict_json

        return strict_json(self.to_dict())

    def to_junit(self) -> str:
        """JUnit XML: one <testsuite> per candidate, one <testcase> per check."""
        c = self.counts()
        root = ET.Element("testsuites", name="compress gate", tests=str(len(self.checks)),
                          failures=str(c["fail"]), errors=str(c["error"]))
        for cand in dict.fromkeys(ch.candidate for ch in self.checks):
            mine = [ch for ch in self.checks if ch.candidate == cand]
            suite = ET.SubElement(
                root, "testsuite", name=f"gate.{cand}", tests=str(len(mine)),
                failures=str(sum(ch.status == "fail" for ch in mine)),
                errors=str(sum(ch.status == "error" for ch in mine)), skipped="0", time="0")
            for ch in mine:
                case = ET.SubElement(suite, "testcase", classname=f"gate.{cand}",
                                     name=ch.check, time="0")
                if ch.status == "fail":
                    ET.SubElement(case, "failure", message=ch.message, type="threshold")
                elif ch.status == "error":
                    ET.SubElement(case, "error", message=ch.message, type="missing")
                ET.SubElement(case, "system-out").text = ch.message
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(
            root, encoding="unicode") + "\n"

    def to_markdown(self) -> str:
        c = self.counts()
        icon = {"pass": "✅", "fail": "❌", "error": "⚠️"}
        lines = [f"## compress gate: {self.verdict.upper()} {icon[self.verdict]}", "",
                 f"Run `{self.run}`; primary metric **{self.metric}**; target "
                 f"**{self.target}**; {c['pass']} passed, {c['fail']} failed, "
                 f"{c['error']} error(s).", ""]
        if self.recommended:
            r = self.recommended
            lines += [f"Recommended pair: **{r['candidate']}** on **{r['target']}** via "
                      f"{r.get('runtime')}.", ""]
        if self.baseline:
            lines += [f"Compared with the previous release: `{self.baseline}`.", ""]
        if self.recommended and self.recommended.get("decision"):
            lines += [f"Decision: {self.recommended['decision']}.", ""]
        lines += ["| candidate | check | value | threshold | figures | result |",
                  "|---|---|---:|---:|---|---|"]
        for ch in self.checks:
            lines.append(f"| {ch.candidate} | {ch.check} | {_fmt(ch.value)} | "
                         f"{_fmt(ch.threshold)} | {ch.provenance or '-'} | "
                         f"{icon[ch.status]} {ch.status}: {ch.message.replace('|', '/')} |")
        p = self.provenance
        lines += ["", f"Prices: {', '.join(p.get('price_files') or []) or 'catalog defaults'}"
                  f" ({self.target}: {p.get('target_price')}); calibration: "
                  f"{p.get('calibration')}. Quality and local-cpu figures are measured; other "
                  "targets' latency, memory and cost are projected (roofline).", ""]
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}"


# ------------------------------------------------------------------------------ figures

def _setting(manifest: dict):
    from compress.hardware.projection import Setting

    suite = manifest["suite"]["resolved"]
    lat = suite.get("latency") or {}
    gen = lat.get("gen_tokens", 0) if suite.get("task") == "causal-lm" else 0
    return Setting((lat.get("seq_lens") or [128])[0], gen)


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


def candidate_figures(run: Run, rows: list[dict], target: str, catalog, calibration,
                      thr: dict) -> dict[str, dict]:
    """Per candidate: primary metric, fidelity, latency, memory and cost on the target."""
    metric = run.primary_metric
    setting = _setting(run.manifest)
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

def _quality_checks(name: str, f: dict, base: dict | None, thr: dict, lower: bool) -> list:
    metric, out = f["metric"], []
    v = f["value"]
    b = base["value"] if base else None

    def add(check, status, value, threshold, message):
        out.append(Check(name, check, status, value, threshold, message, "measured"))

    asked = [k for k in ("max_drop", "max_relative_drop", "min_recovery")
             if thr.get(k) is not None]
    for k in asked:
        if v is None or b is None:
            add(f"quality.{k}", "error", None, thr[k],
                f"no {metric} measured for {name if v is None else 'its baseline'}")
            continue
        drop = (v - b) if lower else (b - v)
        if k == "max_drop":
            ok = drop <= thr[k] + 1e-12
            add(f"quality.{k}", "pass" if ok else "fail", drop, thr[k],
                f"{metric} {v:.4f} vs baseline {b:.4f}: drop {drop:+.4f} "
                f"{'<=' if ok else '>'} {thr[k]:g}")
        elif k == "max_relative_drop":
            rel = drop / abs(b) if b else 0.0
            ok = rel <= thr[k] + 1e-12
            add(f"quality.{k}", "pass" if ok else "fail", rel, thr[k],
                f"{metric} relative drop {rel:.2%} {'<=' if ok else '>'} {thr[k]:.2%}")
        else:
            rec = (b / v if v else 0.0) if lower else (v / b if b else 1.0)
            ok = rec >= thr[k] - 1e-12
            add(f"quality.{k}", "pass" if ok else "fail", rec, thr[k],
                f"recovery {rec:.4f} {'>=' if ok else '<'} {thr[k]:g}")
    if thr.get("min_value") is not None:
        t = thr["min_value"]
        if v is None:
            add("quality.min_value", "error", None, t, f"no {metric} measured")
        else:
            ok = v <= t if lower else v >= t
            word = "ceiling" if lower else "floor"
            add("quality.min_value", "pass" if ok else "fail", v, t,
                f"{metric} {v:.4f} {'within' if ok else 'outside'} {word} {t:g}")
    if thr.get("min_fidelity") is not None and base is not None and base is not f:
        t = thr["min_fidelity"]
        if f["fidelity"] is None:
            add("fidelity.min_fidelity", "error", None, t,
                "no fidelity (top-1 agreement or cosine) measured")
        else:
            ok = f["fidelity"] >= t - 1e-12
            add("fidelity.min_fidelity", "pass" if ok else "fail", f["fidelity"], t,
                f"{f['fidelity_metric']} {f['fidelity']:.4f} {'>=' if ok else '<'} {t:g}")
    return out


def _perf_checks(name: str, f: dict, thr: dict) -> list:
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


def _regression_checks(name: str, f: dict, prev: dict | None, prev_name: str, thr: dict,
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
        from compress.results import read_json

        data = read_json(p, "a gate verdict (--json) or a results.json")
        if isinstance(data, dict) and "figures" in data and "checks" in data:
            return _verdict_figures(data, p)
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
         catalog=None, calibration: dict | None = None, ask=None) -> GateResult:
    """Check a run against thresholds: the suite's targets (the run's own suite, or
    `suite`), overridden by `thresholds`. See the module docstring.

    What is gated: `candidates` when named; every candidate with `every_candidate`; the
    recommended pair with `recommended`; otherwise the release candidate, the one the recipe
    names in `release:`, else the saved recommendation's (`compress recommend`)."""
    from compress.decide.decision import decide
    from compress.decide.recommend import _cal_name
    from compress.hardware.catalog import load_catalog

    run = run if isinstance(run, Run) else load_run(run)
    catalog = catalog or load_catalog()
    metric = run.primary_metric
    if not run.rows or metric is None:
        raise InputError(f"{run.path}: the run has no candidates")
    if suite is not None:
        base_t, _ = suite_targets(suite, run)
    else:
        base_t = dict(run.manifest["suite"]["resolved"].get("targets") or {})
    thr = {k: v for k, v in base_t.items() if v is not None and k in TARGET_KEYS}
    thr.update({k: v for k, v in (thresholds or {}).items() if v is not None})
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
                        baseline=str(baseline) if baseline else None)
    release = None if (candidates or every_candidate or recommended) \
        else release_candidate(run)
    pinned = None      # the saved decision's row for the gated pair: its figures are used
    if recommended or not (candidates or every_candidate or release):
        from compress.decide.decision import Ask

        ask = ask or Ask(target_names=[target] if target else None)
        decision = decide(run, ask)
        if decision.source == "computed" and decision.path is None and not recommended:
            raise InputError(
                f"{run.path}: nothing to gate: the recipe names no `release:` candidate and "
                "the run has no saved recommendation (run `compress recommend RUN` first); "
                "or name candidates (--candidate NAME) or gate them all (--every-candidate)")
        rec = decision.rec
        if rec.winner is None:
            result.checks.append(Check("recommended", "recommendation", "fail", None, None,
                                       "nothing meets the targets: "
                                       + "; ".join(rec.explanation[1:4])))
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
    lower = metric in LOWER_IS_BETTER
    for name in chosen:
        f = figs[name]
        result.figures[name] = f
        if f["status"] != "ok":
            result.checks.append(Check(name, "measured", "error", None, None,
                                       f"candidate failed: {by_name[name].get('error')}"))
            continue
        base = figs.get(by_name[name].get("baseline") or name)
        result.checks += _quality_checks(name, f, base, thr, lower)
        result.checks += _perf_checks(name, f, thr)
        if prev is not None and regression:
            pname = baseline_candidate or name
            result.checks += _regression_checks(name, f, prev.get(pname), pname, thr, lower)
    t = catalog[result.target]
    result.provenance = {**catalog.provenance(), "calibration": _cal_name(calibration),
                         "target_price": f"${t.price_per_hour}/h ({t.price_source})"}
    return result


def summary_frame(result: GateResult) -> pd.DataFrame:
    return pd.DataFrame([asdict(c) for c in result.checks])
