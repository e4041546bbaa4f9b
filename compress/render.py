"""What the CLI prints: the results table, the recommendation, the gate verdict and the
calibration, as rich tables. The commands (compress.cli) only parse, call the API and hand
the result here."""

from __future__ import annotations

import json
import math
import sys

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from compress.tables import Col, print_table


class RichReporter:
    """Progress bars and step messages on the terminal (stderr)."""

    def __init__(self, progress: Progress):
        self.bars = progress

    def step(self, message: str) -> None:
        self.bars.console.print(f"[dim]·[/dim] {message}")

    def warn(self, message: str) -> None:
        self.bars.console.print(f"warning: {message}", style="yellow", markup=False,
                                highlight=False)

    def progress(self, description: str, total: int):
        task = self.bars.add_task(description, total=total)
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            self.bars.advance(task, n)
            if done >= total:
                self.bars.remove_task(task)
        return advance


def plan(console: Console, p, store) -> None:
    """`compress validate --plan`: each candidate's chain, cached or still to build; the
    baseline is marked."""
    from compress.plan import candidate_name

    bases = {c.baseline.key for c in p.candidates}
    rows = []
    for c in p.candidates:
        chain = " → ".join(
            f"{n.step} ({'cached' if store.get(n.key) else 'to build'})"
            for n in c.node.chain() if n.stage)
        rows.append([c.name + (" *" if c.node.key in bases else ""), c.role,
                     candidate_name(c.baseline), c.node.kind.value,
                     chain or "model (as given)"])
    print_table(console, [Col("candidate"), Col("role"), Col("judged against"), Col("kind"),
                          Col("chain")], rows)
    console.print("* baseline: what the other candidates are judged against", highlight=False)


def stages(console: Console, registered: dict) -> None:
    """`compress stages`: each stage with its options, from its config schemas."""
    for name, stage in sorted(registered.items()):
        console.print(f"[bold]{name}[/bold]: {stage.description}")
        for title, cfg in stage.config_types().items():
            if title != name:
                console.print(f"  [cyan]{title}[/cyan]")
            for fname, f in cfg.model_fields.items():
                default = ("required" if f.is_required() else
                           f"default {f.get_default(call_default_factory=True)!r}")
                typ = _type_name(f.annotation)
                desc = f" — {f.description}" if f.description else ""
                console.print(f"    {fname}: {typ} ({default}){desc}")


def _type_name(annotation) -> str:
    """'int | None', "'full' | 'head'", ... for `compress stages`."""
    import types
    from typing import Literal, Union, get_args, get_origin

    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


COLUMNS = [  # (summary column, header, format); shown when any row has a value
    ("candidate", "candidate", "name"), ("kind", "kind", "s"), ("status", "status", "status"),
    ("accuracy", "acc", ".3f"), ("macro_f1", "macro-F1", ".3f"),
    ("spearman", "spearman", ".3f"), ("pearson", "pearson", ".3f"),
    ("perplexity", "ppl", ".2f"), ("next_token_accuracy", "next-tok acc", ".3f"),
    ("primary_delta", "Δ", "+.3f"), ("top1_agreement", "agree", ".3f"),
    ("kl_divergence", "KL", ".4f"), ("cosine", "cos", ".4f"),
    ("latency_p50_ms", "p50 ms", "lat"), ("latency_p95_ms", "p95 ms", ".1f"),
    ("decode_ms_per_token", "decode ms/tok", ".1f"), ("size_mb", "size MB", ".1f"),
    ("peak_rss_mb", "peak MB", ".0f"), ("mem_delta_mb", "mem Δ MB", ".0f"),
    ("error", "error", "s"),
]


QUALITY_COLUMNS = ("accuracy", "macro_f1", "spearman", "pearson", "perplexity",
                   "next_token_accuracy")


def _cell(r: dict, key: str, fmt: str) -> str:
    """A quality figure with its interval ('0.973 ±0.015'), when the run has one."""
    from compress.confidence import fmt as ci_fmt

    digits = int(fmt[-2]) if fmt.endswith("f") and fmt[-2].isdigit() else 3
    if key in QUALITY_COLUMNS and r.get(f"{key}_low") is not None:
        return ci_fmt(r[key], r[f"{key}_low"], r[f"{key}_high"], digits)
    if key == "primary_delta" and r.get("primary_delta_low") is not None:
        text = ci_fmt(r[key], r["primary_delta_low"], r["primary_delta_high"], digits)
        return text if text.startswith("-") else "+" + text
    return format(r[key], fmt)


def results_table(console: Console, rows: list[dict], title: str | None = None) -> None:
    """The results table: the columns that matter for the task; baseline marked with *.
    Fitted by compress.tables: a figure is never cut, names wrap first."""
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    heads = []
    for key, header, _ in cols:
        if key == "primary_delta":
            header = f"Δ{next((r['primary_metric'] for r in rows if r.get('primary_metric')), '')}"
        heads.append(Col(header, number=key not in ("candidate", "kind", "status", "error")))
    baselines = {r.get("baseline") for r in rows}
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            if fmt == "name":
                cells.append(v + (" *" if v in baselines else ""))
            elif fmt == "status":
                cells.append(Text("ok", "green") if v == "ok" else Text("failed", "red"))
            elif v is None:
                cells.append("-")
            elif fmt == "lat":
                cells.append(f"{v:.1f}" + ("~" if r.get("noisy") else ""))
            elif fmt == "s":
                cells.append(str(v))
            else:
                cells.append(_cell(r, key, fmt))
        body.append(cells)
    print_table(console, heads, body, title=title)
    first = next((r for r in rows if r.get("batch_size")), {})
    noisy = any(r.get("noisy") for r in rows)
    console.print(
        "* baseline; Δ, agree, KL and cos against each candidate's baseline; latency at batch "
        f"{first.get('batch_size', '-')}, {first.get('seq_len', '-')} tokens, "
        f"{first.get('threads', '-')} thread(s) on {first.get('device', '-')}"
        + ("; ~ noisy (p95 far above p50)" if noisy else "") + "; all figures measured here",
        highlight=False)
    from compress.confidence import notes

    for line in notes(rows):
        console.print(line.replace("warning:", "[red]warning[/red]:", 1), highlight=False)


def _text(v) -> str:
    """A text cell: empty for a missing value (None or a pandas NaN)."""
    return v if isinstance(v, str) else ""


def _f(v, fmt):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def calibration(console: Console, result: dict, path, threads: int) -> None:
    """The fitted roofline factors of `compress calibrate`."""
    m = result["machine"]
    what = (f"{m['gpu_name']}, compute capability {m['compute_capability']}, driver "
            f"{m.get('driver')}" if "gpu_name" in m else
            f"{m['cpu_model']}, {m['cores']} core(s), {threads} thread(s)")
    console.print(f"calibrated hardware class {m['hw_class']} ({what}) in "
                  f"{result['wall_time_s']:.1f} s; saved as calibration '{result['name']}' "
                  f"-> {path}", highlight=False)
    for cls, fit in result["classes"].items():
        rows = [[f"compute efficiency {k}", f"{v:.3f}"]
                for k, v in fit["compute_efficiency"].items()]
        rows.append(["memory efficiency", f"{fit['memory_efficiency']:.3f}"
                     + _copy_rate(result)])
        rows += [[f"kernel overhead {k}", f"{v:.2f} us"]
                 for k, v in fit["kernel_overhead_us"].items()]
        rows += [[f"host overhead {k}", f"{v:.2f} us"]
                 for k, v in fit["host_overhead_us"].items()]
        rows += [[f"decode overhead {k}", f"{v:.2f} us per op"]
                 for k, v in (fit.get("decode_overhead_us") or {}).items()]
        for k, pts in (fit.get("gemm_curves") or {}).items():
            rows.append([f"GEMM efficiency curve {k}", "  ".join(
                f"{e:.2f}@{f:.0e}" for f, e in pts[::max(1, len(pts) // 5)]) + " (eff@flops/call)"])
        for rt, ops in (fit.get("vector_rates") or {}).items():
            rows.append([f"vector ops {rt}", "  ".join(
                f"{op} {tab[-1][1] / 1e9:.2f}" for op, tab in ops.items()) + " G elements/s"])
        for k, pts in (fit.get("gemv_rates") or {}).items():
            rows.append([f"batch-1 GEMV {k}", "  ".join(
                f"{r / 1e9:.2f}@{b / 1e6:.1f}MB" for b, r in pts) + " (GB/s@weights/call)"])
        print_table(console, [Col("factor"), Col("value")], rows, title=cls)
    console.print(f"load average before/after: {result['load_average']['before']} / "
                  f"{result['load_average']['after']} (calibrate on a quiet machine)",
                  highlight=False)


def _copy_rate(result: dict) -> str:
    """What the memory efficiency is a fraction of: a figure above 1 means the copy beat
    the catalog's nominal bandwidth (which is a nominal, not this machine's spec)."""
    copy = ((result.get("benchmarks") or {}).get("torch") or {}).get("copy") or []
    nominal = (result.get("nominal") or {}).get("bandwidth_bytes_s")
    if not copy or not nominal:
        return ""
    rate = copy[-1]["bytes"] / copy[-1]["seconds"]
    return (f" (a {copy[-1]['mb']} MiB copy moved {rate / 1e9:.1f} GB/s, read + write, "
            f"against a nominal {nominal / 1e9:.1f} GB/s per worker)")


def refused(console: Console, err_console: Console, rec, format: str) -> None:
    """A recommendation refused (a baseline at chance): why, as JSON or a message."""
    if format == "json":
        sys.stdout.write(json.dumps({"winner": None, "refused": rec.refused,
                                     "confidence": rec.confidence,
                                     "explanation": rec.explanation}, indent=2) + "\n")
    else:
        err_console.print(f"[red]no recommendation[/red]: {rec.refused}", highlight=False)


def recommendation(console: Console, rec, title: str, all_rows: bool = False) -> None:
    """The recommendation as tables: explanation, quality, candidate x target, Pareto."""
    traffic = rec.provenance.get("traffic")
    console.print(f"[bold]{title}[/bold]: {rec.metric}, targets "
                  f"{rec.provenance['targets'] or 'none'}")
    for line in rec.explanation:
        console.print(("[green]" if line.startswith("Recommended") else "") + line
                      + ("[/green]" if line.startswith("Recommended") else ""),
                      highlight=False)
    quality = [[r["candidate"], _f(r["value"], ".4f"), _f(r.get("drop"), "+.4f"),
                Text("ok", "green") if r["passes_quality"]
                else Text("; ".join(r["quality_reasons"]), "red")]
               for _, r in rec.quality.iterrows()]
    print_table(console, [Col("candidate"), Col(rec.metric, True), Col("drop", True),
                          Col("quality")], quality, title="quality vs baseline (measured)")
    opts = rec.options
    if not all_rows:
        opts = opts[opts["status"] != "unsupported"]
    causal = "cost_per_1m_tokens" in opts and opts["cost_per_1m_tokens"].notna().any()
    serving = traffic is not None
    cols = [Col(h) for h in ("candidate", "target", "runtime", "status", "figures")]
    cols += [Col(h, True) for h in (
        ["inst x wk", "max batch", "delay ms", "util", "p95 ms", "p99 ms"] if serving
        else ["batch", "p95 ms", "inf/s"])]
    cols += [Col(h, True) for h in ["$/h", "$ per 1k"] + (["$ per 1M tok"] if causal else [])
             + (["$/month"] if serving else [])] + [Col("efficiency"), Col("note")]
    qmap = dict(zip(rec.quality["candidate"], rec.quality["passes_quality"], strict=True))
    rows = []
    for _, r in opts.iterrows():
        status = r["status"] if qmap.get(r["candidate"]) or r["status"] != "ok" \
            else "quality"
        cells = [r["candidate"], r["target"], str(r["runtime"]), status, r["provenance"]]
        if serving:
            inst = (f"{_f(r['instances'], '.0f')} x {_f(r['workers'], '.0f')}"
                    if _f(r.get("instances"), ".0f") != "-" else "-")
            cells += [inst, _f(r.get("max_batch"), ".0f"), _f(r.get("max_queue_delay_ms"), "g"),
                      _f(r.get("utilisation"), ".0%"), _f(r["latency_p95_ms"], ".1f"),
                      _f(r.get("latency_p99_ms"), ".1f")]
        else:
            cells += [_f(r["batch_size"], ".0f"), _f(r["latency_p95_ms"], ".2f"),
                      _f(r["throughput_per_s"], ".1f")]
        cells += [_f(r["price_per_hour"], ".3f"), _f(r["cost_per_1k"], ".6f")]
        if causal:
            cells.append(_f(r.get("cost_per_1m_tokens"), ".4f"))
        if serving:
            cells.append(_f(r["monthly_cost"], ",.0f"))
        notes = [x for x in (r.get("reason"), r.get("composition")) if isinstance(x, str)]
        if r["status"] == "no price":
            notes = ["not priced"]
        cells.append(_text(r.get("efficiency_source")))
        cells.append("; ".join(notes))
        rows.append(cells)
    print_table(console, cols, rows, key=2,
                title="candidate x target (measured = this machine; projected = roofline)"
                + ("; end-to-end latency under Poisson traffic at the peak" if serving else ""))
    hidden = (rec.options["status"] == "unsupported").sum()
    if hidden and not all_rows:
        reasons = rec.options[rec.options["status"] == "unsupported"]
        console.print(f"{hidden} unsupported candidate x target pair(s) hidden (--all shows "
                      "them), e.g.:")
        for why in reasons["reason"].drop_duplicates().head(4):
            console.print(f"  - {why}", highlight=False)
    pareto = [[r["candidate"], r["target"], r["runtime"], _f(r["value"], ".4f"),
               _f(r["cost"], ".6f" if rec.ranking == "cost_per_1k" else ",.0f"),
               r["provenance"], "yes" if r["passes_quality"] else "no"]
              for _, r in rec.pareto.iterrows()]
    print_table(console, [Col("candidate"), Col("target"), Col("runtime"),
                          Col(rec.metric, True), Col(rec.ranking, True), Col("figures"),
                          Col("meets quality")], pareto, key=2,
                title="Pareto frontier: quality vs cost")
    from compress.hardware.pricebook import price_lines

    p = rec.provenance
    books = p.get("price_books") or p.get("price_files") or ["catalog defaults"]
    console.print(f"catalog: {', '.join(p['catalog_files'])}; price books: "
                  f"{', '.join(books)}; calibration: {p['calibration']}; traffic: "
                  f"{traffic or 'none'}", highlight=False)
    priced = set(opts["target"][opts["price_per_hour"].notna()])
    for line in price_lines(p["prices"], priced):
        console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    for line in p.get("measured_on") or []:
        console.print(f"measured on the target GPU: {line}", highlight=False)
    for line in p.get("still_projected") or []:
        console.print(f"asked to measure, still projected: {line}", highlight=False)
    console.print("quality and local-cpu latency are measured"
                  + (", and the pairs measured on their target GPU above"
                     if p.get("measured_on") else "") + "; every other latency, "
                  "throughput and cost figure is projected (roofline)"
                  + ("; queueing and batching are simulated (seeded)" if serving else "")
                  + ".", highlight=False)


def gate(console: Console, result) -> None:
    """`compress gate`: one row per check, then the verdict line."""
    colour = {"pass": "green", "fail": "red", "error": "yellow", "inconclusive": "magenta"}
    rows = []
    for ch in result.checks:
        res = Text(ch.status, colour[ch.status])
        res.append(f" {ch.message}", style=None)
        rows.append([ch.candidate, ch.check, _f(ch.value, ".6g"), _f(ch.threshold, ".6g"),
                     ch.provenance or "-", res])
    print_table(console, [Col("candidate"), Col("check"), Col("value", True),
                          Col("threshold", True), Col("figures"), Col("result")], rows,
                title=f"gate: {result.run} (target {result.target})")
    if result.recommended and result.recommended.get("decision"):
        console.print(result.recommended["decision"], highlight=False)
    c = result.counts()
    console.print(f"[{colour[result.verdict]}]{result.verdict.upper()}[/{colour[result.verdict]}]"
                  f": {c['pass']} passed, {c['fail']} failed, "
                  + (f"{c['inconclusive']} inconclusive, " if c.get("inconclusive") else "")
                  + f"{c['error']} error(s)"
                  + ("; an error is a figure the check needs that the run lacks"
                     if c["error"] else "")
                  + (f"; quality judged at {result.confidence:.0%} confidence"
                     if result.confidence is not None else "; quality compared as point values"),
                  highlight=False)


def cache(console: Console, store, *, verify: bool, prune: bool, keep_runs: int | None,
          dry_run: bool, prune_checkpoints: bool = False) -> int:
    """`compress cache`: optionally verify and prune, then the usage; the number of corrupt
    entries verify found (the command exits 1 when there are any)."""
    bad = 0
    if verify:
        v = store.verify()
        bad = len(v["artifacts_corrupt"]) + len(v["measurements_corrupt"])
        console.print(f"verified {v['artifacts']} artifact(s), {v['measurements']} "
                      f"measurement(s): {len(v['artifacts_corrupt'])} artifact(s) and "
                      f"{len(v['measurements_corrupt'])} measurement(s) corrupt"
                      + (" (moved to corrupt/; they will be rebuilt)" if bad else ""),
                      highlight=False)
    if prune:
        r = store.prune(keep_runs=keep_runs, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        console.print(f"{verb} {r['artifacts_removed']} artifact(s), "
                      f"{r['measurements_removed']} measurement(s), "
                      f"{r['bytes_freed'] / 1e6:.1f} MB; kept {r['runs_kept']} run(s)")
    if prune_checkpoints:
        r = store.prune_checkpoints(dry_run=dry_run)
        console.print(f"{'would remove' if dry_run else 'removed'} the checkpoints of "
                      f"{r['checkpoints_removed']} interrupted build(s), "
                      f"{r['bytes_freed'] / 1e6:.1f} MB", highlight=False)
    u = store.usage()
    console.print(f"cache: {u['root']}\n  artifacts: {u['artifacts']} "
                  f"({u['artifact_bytes'] / 1e6:.1f} MB), measurements: {u['measurements']}, "
                  f"runs referring to it: {u['runs']}")
    areas = store.checkpoint_areas()
    for a in areas:
        at = f"step {a['step']} of {a['total']}" if a["step"] is not None else \
            "no complete checkpoint"
        console.print(f"  checkpoint of {a['label'] or 'a build'} {a['key'][:8]}: {at}, "
                      f"{a['bytes'] / 1e6:.1f} MB, "
                      + ("its build is running" if a["live"] else "left by an interrupted build"),
                      highlight=False, markup=False)
    if any(not a["live"] for a in areas):
        console.print("  (a re-run of the build resumes from its checkpoint; "
                      "--prune-checkpoints removes them)", highlight=False)
    return bad
