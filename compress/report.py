"""`compress report RUN`: one self-contained HTML page about a run.

The recommendation and why; the candidate table; a Pareto plot of quality against cost per
1k inferences; latency against size; cost per target for the top candidates; every
figure labelled measured or projected; the prices and catalog used; the run's provenance.
Plots are matplotlib PNGs embedded as base64 (the page needs no network) and are also
saved beside the page as PNG and SVG.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from compress import report_plots as P
from compress.provenance import describe_git
from compress.quality_checks import _num
from compress.results import Run, load_run

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d1d1f;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.86rem;margin:.6rem 0;width:100%}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f6}td.l,th.l{text-align:left}
.win{background:#e9f7ef;border:1px solid #9fd5b3;padding:.8rem 1rem;border-radius:6px}
.none{background:#fdecea;border:1px solid #f1a79e;padding:.8rem 1rem;border-radius:6px}
.tag{font-size:.75rem;padding:.05rem .35rem;border-radius:3px;color:#fff}
.measured{background:#2e7d32}.projected{background:#6a4fb3}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}.muted{color:#666;font-size:.85rem}
.scroll{overflow-x:auto}details{margin:.4rem 0}summary{cursor:pointer;color:#1f5fa8}
"""
MAX_ROWS = 30   # pairs shown in the candidate x target table; the rest one click away


@dataclass
class Report:
    path: Path
    plots: dict[str, list[Path]] = field(default_factory=dict)
    winner: dict | None = None
    decision: str = ""          # where the recommendation came from (saved / recomputed)


def _e(v) -> str:
    return html.escape("-" if v is None else str(v))


def _text(v) -> str:
    """A text cell: empty for a missing value (None or a pandas NaN)."""
    return v if isinstance(v, str) else ""


def _f(v, spec) -> str:
    v = _num(v)
    return "-" if v is None else format(v, spec)


def _ci(row, key: str) -> str:
    """A quality figure with its interval when the run has one ('0.9730 ±0.0151')."""
    from compress.confidence import fmt

    lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
    if _num(lo) is None or _num(hi) is None:
        return _f(row.get(key), ".4f")
    return _e(fmt(row.get(key), lo, hi, 4))


def _tag(prov) -> str:
    p = prov if prov in ("measured", "projected") else None
    return f'<span class="tag {p}">{p}</span>' if p else "-"


def _table(headers: list[str], rows: list[list[str]], left: int = 1,
           also_left: tuple[int, ...] = ()) -> str:
    def cls(i):
        return "l" if i < left or i in also_left or i - len(headers) in also_left else ""

    th = "".join(f'<th class="{cls(i)}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{cls(i)}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _unsupported(options: pd.DataFrame) -> str:
    """The pairs no runtime can run, grouped by reason: each reason once, with the pairs it
    rules out (they used to fill a third of the pairs table, each repeating its reason)."""
    bad = options[options["status"] == "unsupported"]
    if not len(bad):
        return ""
    rows = []
    for why, g in bad.groupby("reason", sort=False):
        pairs = "; ".join(f"{c}: {', '.join(dict.fromkeys(g[g['candidate'] == c]['target']))}"
                          for c in dict.fromkeys(g["candidate"]))
        rows.append([_e(why), str(len(g)), _e(pairs)])
    return (f"<h3>Not supported ({len(bad)} pair(s), {len(rows)} reason(s))</h3>"
            + _table(["reason", "pairs", "candidates: targets"], rows, left=1,
                     also_left=(-1,)))


# ----------------------------------------------------------------------------------- page

def _config(r) -> str:
    inst, delay = r.get("instances"), r.get("max_queue_delay_ms")
    if inst is None or (isinstance(inst, float) and inst != inst):
        b = r.get("batch_size")
        return "-" if b is None or b != b else f"batch {int(b)}, full utilisation"
    delay = 0 if delay is None or delay != delay else delay
    return (f"{int(inst)} x {int(r['workers'])}, batch <= {int(r['max_batch'])}, "
            f"delay {delay:g} ms")


def build_report(run: Run | str | Path, out: str | Path | None = None, *, ask=None,
                 top: int = 4) -> Report:
    """Write the HTML report (default RUN/report.html) and its plots; return where.

    The recommendation is the run's saved one (`compress recommend`); `ask`
    (compress.decide.decision.Ask) recomputes it with other inputs, and the page says what
    differs from the saved one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compress.decide.decision import decide

    run = run if isinstance(run, Run) else load_run(run)
    out = Path(out) if out else run.path / "report.html"
    plot_dir = out.parent / f"{out.stem}_plots"
    decision = decide(run, ask)
    rec = decision.rec
    metric = rec.metric
    summary = run.summary()
    saved: dict[str, list[Path]] = {}
    name = run.manifest["recipe"]["resolved"].get("name", "run")
    parts = [f"<h1>{_e(name)}: compression report</h1>",
             f'<p class="muted">run <code>{_e(run.path)}</code>, task {_e(run.task)}, '
             f"primary metric <b>{_e(metric)}</b>, finished {_e(run.manifest.get('finished'))}"
             "</p>"]

    # recommendation
    parts.append("<h2>Recommendation</h2>")
    cls = "win" if rec.winner else "none"
    items = "".join(f"<li>{_e(x)}</li>" for x in rec.explanation)
    parts.append(f'<div class="{cls}"><ul>{items}</ul></div>')
    parts.append(f'<p class="muted">Decision: {_e(decision.describe())}.</p>')
    parts.append(f'<p class="muted">Targets: {_e(rec.provenance.get("targets") or "none")}; '
                 f"ranking by {_e(rec.ranking.replace('_', ' '))}; traffic: "
                 f"{_e(rec.provenance.get('traffic') or 'none')}.</p>")

    # candidates
    q = rec.quality.set_index("candidate")
    keys = [k for k in ("accuracy", "macro_f1", "spearman", "pearson", "perplexity",
                        "next_token_accuracy", "top1_agreement", "kl_divergence", "cosine")
            if k in summary and summary[k].notna().any()]
    rows = []
    for _, r in summary.iterrows():
        ok = q.loc[r["candidate"], "passes_quality"] if r["candidate"] in q.index else False
        why = q.loc[r["candidate"], "quality_reasons"] if r["candidate"] in q.index else []
        rows.append([_e(r["candidate"]) + (" *" if r["candidate"] == r.get("baseline") else ""),
                     _e(r.get("kind")), _e(r.get("status")),
                     *[_ci(r, k) for k in keys],
                     _f(r.get("latency_p50_ms"), ".2f"), _f(r.get("latency_p95_ms"), ".2f"),
                     _f(r.get("size_mb"), ".1f"), _f(r.get("peak_rss_mb"), ".0f"),
                     "yes" if ok else _e("; ".join(why) or "no")])
    parts.append("<h2>Candidates</h2>")
    parts.append(_table(["candidate", "kind", "status", *keys, "p50 ms", "p95 ms", "size MB",
                         "peak MB", "meets quality targets"], rows, left=3))
    parts.append('<p class="muted">* baseline. All figures in this table are '
                 f'{_tag("measured")} on this machine '
                 f"({_e(summary.iloc[0].get('device_name') if len(summary) else '-')}).</p>")
    from compress.confidence import notes

    lines = notes(run.rows)
    if lines:
        parts.append('<ul class="muted">' + "".join(f"<li>{_e(x)}</li>" for x in lines)
                     + "</ul>")

    # plots
    parts.append("<h2>Quality vs cost</h2>")
    b64 = P.save(P.pareto_plot(rec, metric, plt), "pareto", plot_dir, saved)
    parts.append(f'<figure><img alt="Pareto plot: {_e(metric)} vs cost" '
                 f'src="data:image/png;base64,{b64}"><figcaption>Each candidate on each '
                 "target it can run on (circles measured here, triangles projected); the "
                 "frontier takes each candidate at its cheapest target.</figcaption></figure>")
    pr = [[_e(p["candidate"]), _e(p["target"]), _e(p["runtime"]), _f(p["value"], ".4f"),
           _f(p["cost"], ".6f"), _tag(p["provenance"]),
           "yes" if p["passes_quality"] else "no"] for _, p in rec.pareto.iterrows()]
    parts.append(_table(["candidate", "target", "runtime", metric, rec.ranking, "figures",
                         "meets quality"], pr, left=3))
    parts.append("<h2>Latency vs size</h2>")
    b64 = P.save(P.latency_size_plot(summary, plt), "latency_size", plot_dir, saved)
    parts.append(f'<figure><img alt="latency vs size" src="data:image/png;base64,{b64}">'
                 f"<figcaption>{_tag('measured')} here.</figcaption></figure>")

    # cost per target, top candidates
    opts = rec.options.merge(rec.quality[["candidate", "passes_quality"]], on="candidate",
                             how="left")
    ranked = (opts[(opts["status"] == "ok") & opts["cost_per_1k"].notna()]
              .sort_values(["passes_quality", "cost_per_1k"], ascending=[False, True]))
    top_names = list(dict.fromkeys(ranked["candidate"]))[:top]
    parts.append("<h2>Cost per target (top candidates)</h2>")
    if top_names:
        b64 = P.save(P.cost_per_target_plot(top_names, rec.options, plt, rec.winner),
                     "cost_per_target", plot_dir, saved)
        parts.append(f'<figure><img alt="cost per target" src="data:image/png;base64,{b64}">'
                     "</figure>")
        shown = rec.options[rec.options["candidate"].isin(top_names)
                            & (rec.options["status"] != "unsupported")].copy()
        shown["_order"] = shown["candidate"].map({n: i for i, n in enumerate(top_names)})
        shown = shown.sort_values(["_order", "cost_per_1k"], na_position="last")
        tr = [[_e(r["candidate"]), _e(r["target"]), _e(r["runtime"]), _e(r["status"]),
               _tag(r["provenance"]), _e(_config(r)), _f(r.get("utilisation"), ".0%"),
               _f(r["latency_p95_ms"], ".2f"), _f(r["throughput_per_s"], ".1f"),
               _f(r["price_per_hour"], ".3f"), _f(r["cost_per_1k"], ".6f"),
               _f(r.get("monthly_cost"), ",.0f"), _e(_text(r.get("efficiency_source"))),
               _e(_text(r["reason"]))] for _, r in shown.iterrows()]
        heads = ["candidate", "target", "runtime", "status", "figures",
                 "serving (instances x workers, max batch, queue delay)", "util", "p95 ms",
                 "capacity/s", "$/h", "$ per 1k", "$/month", "efficiency", "reason"]
        parts.append(_table(heads, tr[:MAX_ROWS], left=6, also_left=(-2, -1)))
        if len(tr) > MAX_ROWS:
            parts.append(f"<details><summary>{len(tr) - MAX_ROWS} more candidate x target "
                         "pair(s)</summary>" + _table(heads, tr[MAX_ROWS:], left=6,
                                                      also_left=(-2, -1)) + "</details>")
        parts.append(_unsupported(rec.options))
    else:
        parts.append("<p>No candidate has a price on any target.</p>")

    # prices and provenance
    p = rec.provenance
    parts.append("<h2>Prices and catalog</h2>")
    books = p.get("price_books") or p.get("price_files") or ["catalog defaults"]
    parts.append(f'<p class="muted">catalog: {_e(", ".join(p.get("catalog_files") or []))}; '
                 f'price books: {_e(", ".join(books))}'
                 f"; calibration: {_e(p.get('calibration'))}. A price without a capture "
                 "date and a URL is marked unverified.</p>")
    parts.append(_table(
        ["target", "$ per hour", "provider", "instance", "per", "status", "captured", "url",
         "book", "note"],
        [[_e(t), _f(v.get("price_per_hour"), ".4f"), _e(v.get("provider") or v.get("source")),
          _e(v.get("instance")), _e(v.get("per")), _e(v.get("status")),
          _e(v.get("captured")), _e(v.get("url")), _e(v.get("book")), _e(v.get("note"))]
         for t, v in p["prices"].items()], left=1, also_left=tuple(range(2, 10))))
    m = run.manifest
    parts.append("<h2>Provenance</h2>")
    prov = [["recipe", _e(m["recipe"].get("path"))], ["suite", _e(m["suite"].get("path"))],
            ["model", _e((m.get("plan") or {}).get("model"))], ["seed", _e(m.get("seed"))],
            ["--set overrides", _e("; ".join(m["recipe"].get("overrides") or [])
                                   or "none (the recipe as written)")],
            ["git", _e(describe_git(m.get("git")).strip("`"))],
            ["versions", _e(", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()))],
            ["started / finished", _e(f"{m.get('started')} / {m.get('finished')}")],
            ["wall time", _e(f"{m.get('wall_time_s')} s")],
            ["cache", _e(json.dumps(m.get("stats") or {}))]]
    parts.append(_table(["", "value"], prov, left=2))
    parts.append('<p class="muted">Quality, fidelity and local-cpu latency/memory are '
                 f'{_tag("measured")}; latency, throughput and cost on other targets are '
                 f'{_tag("projected")} by the roofline model.</p>')

    page = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(name)}: compress report</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return Report(out, saved, rec.winner, decision.describe())
