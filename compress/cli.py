"""The `compress` command line: a thin layer over the Python API (compress.engine & co)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from compress import quiet
from compress.errors import CompressError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Compress Hugging Face models with declarative recipes, measure every "
                       "candidate, and compare them.")
# piped output (CI logs, files) gets a wide fixed width instead of folding at 80 columns
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True, soft_wrap=True)  # messages never fold mid-path

CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help="artifact cache [default: $COMPRESS_CACHE_DIR or the user cache dir]")]
Sets = Annotated[list[str] | None, typer.Option(
    "--set", help="override a recipe setting: key.path=value (repeatable); "
                  "pipeline.<step id>.with.<setting>=..., suite.<path>=... for the suite")]

# quality / latency / memory thresholds shared by `recommend` and `gate` (override the suite)
MaxDrop = Annotated[float | None, typer.Option(
    help="max absolute drop of the primary metric vs the run's baseline")]
MaxRelativeDrop = Annotated[float | None, typer.Option(help="max relative drop (0.02 = 2%)")]
MinRecovery = Annotated[float | None, typer.Option(help="min candidate / baseline ratio")]
MinValue = Annotated[float | None, typer.Option(
    help="floor of the primary metric (ceiling if lower is better)")]
MinFidelity = Annotated[float | None, typer.Option(help="floor of top-1 agreement or cosine")]
MaxLatencyMs = Annotated[float | None, typer.Option(help="max p95 latency (ms)")]
MaxMemoryMb = Annotated[float | None, typer.Option(help="max memory (MB)")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                                help="show library logs and warnings")] = False):
    quiet.set_verbose(verbose)


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


def print_table(rows: list[dict], title: str | None = None) -> None:
    """The results table: the columns that matter for the task; baseline marked with *."""
    table = Table(title=title, header_style="bold")
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    for key, header, _ in cols:
        if key == "primary_delta":
            header = f"Δ{next((r['primary_metric'] for r in rows if r.get('primary_metric')), '')}"
        table.add_column(header, overflow="fold", no_wrap=key != "error",
                         justify="left" if key in ("candidate", "kind", "status", "error")
                         else "right")
    baselines = {r.get("baseline") for r in rows}
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            if fmt == "name":
                cells.append(v + (" *" if v in baselines else ""))
            elif fmt == "status":
                cells.append("[green]ok[/green]" if v == "ok" else "[red]failed[/red]")
            elif v is None:
                cells.append("-")
            elif fmt == "lat":
                cells.append(f"{v:.1f}" + ("~" if r.get("noisy") else ""))
            elif fmt == "s":
                cells.append(str(v))
            else:
                cells.append(format(v, fmt))
        table.add_row(*cells)
    console.print(table)
    first = next((r for r in rows if r.get("batch_size")), {})
    noisy = any(r.get("noisy") for r in rows)
    console.print(
        "* baseline; Δ, agree, KL and cos against each candidate's baseline; latency at batch "
        f"{first.get('batch_size', '-')}, {first.get('seq_len', '-')} tokens, "
        f"{first.get('threads', '-')} thread(s) on {first.get('device', '-')}"
        + ("; ~ noisy (p95 far above p50)" if noisy else "") + "; all figures measured here")


@app.command()
def run(recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
        out: Annotated[Path | None, typer.Option("--out", help="run directory "
                                                 "[default: runs/<recipe name>-<time>]")] = None,
        cache_dir: CacheDir = None, set_: Sets = None,
        force: Annotated[bool, typer.Option("--force", help="rebuild every stage")] = False,
        remeasure: Annotated[bool, typer.Option("--remeasure", help="measure again")] = False):
    """Run a recipe: build each stage once (cached), measure every candidate, print the table."""
    from compress.engine import run_recipe

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bars:
            result = run_recipe(recipe, out_dir=out, cache_dir=cache_dir,
                                overrides=set_ or [], force=force, remeasure=remeasure,
                                reporter=RichReporter(bars))
    except KeyboardInterrupt:
        err_console.print("interrupted: finished artifacts are cached; run again to resume")
        raise typer.Exit(130) from None
    s = result.stats
    print_table(result.rows, title=f"{result.manifest['recipe']['resolved']['name']}")
    console.print(f"run dir: {result.path}   stages built: {s['stage_executions']}, "
                  f"cached: {s['stage_cache_hits']}; measurements: {s['measurements']}, "
                  f"cached: {s['measurement_cache_hits']}; "
                  f"{result.manifest['wall_time_s']:.1f} s")
    if not result.ok:
        err_console.print(f"[red]{s['failures']} candidate(s) failed[/red]")
        raise typer.Exit(1)


@app.command()
def validate(recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
             plan: Annotated[bool, typer.Option("--plan", help="list candidates and which "
                                                "stage runs are cached or still to build")] = False,
             cache_dir: CacheDir = None, set_: Sets = None):
    """Check a recipe (schema, stages, chain, data, suite) without running it."""
    from compress.engine import prepare

    p = prepare(recipe, set_ or [])
    for message in p.warnings:
        err_console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
    console.print(f"[green]ok[/green] {recipe}: {len(p.nodes)} stage run(s), "
                  f"{len(p.candidates)} candidate(s)")
    if plan:
        from compress.store import Store

        store = Store(cache_dir, warn=_warn)
        t = Table("candidate", "role", "kind", "chain", header_style="bold")
        for c in p.candidates:
            chain = " → ".join(
                f"{n.step} ({'cached' if store.get(n.key) else 'to build'})"
                for n in c.node.chain() if n.stage)
            t.add_row(c.name, c.role, c.node.kind.value, chain or "model (as given)")
        console.print(t)


@app.command()
def stages():
    """List the stages with their options (generated from their config schemas)."""
    from compress.stages.base import all_stages

    for name, stage in sorted(all_stages().items()):
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


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
         format: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
         tidy: Annotated[bool, typer.Option("--tidy", help="json/csv: every figure with its "
                                            "provenance, one per row")] = False):
    """Print a run's results again, or export them (--format json|csv)."""
    from compress.errors import InputError
    from compress.results import load_run

    r = load_run(run_dir)
    if format == "table":
        print_table(r.rows, title=r.manifest["recipe"]["resolved"]["name"])
    elif format == "json":
        from compress.store import strict_json

        sys.stdout.write(strict_json(r.rows if not tidy else r.measurements) + "\n")
    elif format == "csv":
        sys.stdout.write((r.table() if tidy else r.summary()).to_csv(index=False))
    else:
        raise InputError(f"--format {format!r}: expected table, json or csv")


def _warn(message: str) -> None:
    err_console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)


@app.command()
def cache(cache_dir: CacheDir = None,
          prune: Annotated[bool, typer.Option("--prune", help="remove what no kept run "
                                              "refers to")] = False,
          keep_runs: Annotated[int | None, typer.Option("--keep-runs", min=0, help="with --prune: "
                                                        "keep only the newest N runs")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="with --prune: only "
                                                "say what would go")] = False,
          verify: Annotated[bool, typer.Option("--verify", help="check every artifact against "
                                               "its sha256 digests and every measurement; "
                                               "move what fails aside (exit 1 if any)")
                            ] = False):
    """Show the artifact cache (size, runs); optionally verify or prune it. Both refuse a
    directory that is not a compress cache (no CACHEDIR.TAG)."""
    from compress.store import Store

    store = Store(cache_dir, warn=_warn)
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
    u = store.usage()
    console.print(f"cache: {u['root']}\n  artifacts: {u['artifacts']} "
                  f"({u['artifact_bytes'] / 1e6:.1f} MB), measurements: {u['measurements']}, "
                  f"runs referring to it: {u['runs']}")
    if bad:
        raise typer.Exit(1)


@app.command()
def calibrate(out: Annotated[Path | None, typer.Option(
                  "--out", help="calibration JSON [default: user cache dir "
                  "(compress/calibration/calibration.json) or $COMPRESS_CALIBRATION]")] = None,
              threads: Annotated[int, typer.Option("--threads", min=1,
                                                   help="threads, pinned")] = 1,
              device: Annotated[str, typer.Option(
                  "--device", help="auto (cuda where a CUDA device is available, else cpu), "
                  "cpu or cuda")] = "auto",
              target: Annotated[str | None, typer.Option(
                  "--target", help="cuda: the catalog GPU this device is [default: detected "
                  "from its name]")] = None):
    """Measure this machine's roofline factors from micro-benchmarks only (~15-40 s): GEMM
    efficiency by size per precision and runtime, attention matmuls, vector-op rates, memory
    bandwidth, per-kernel and per-call overheads. Run it on a quiet machine. On a CUDA
    machine it calibrates the GPU's own class (gpu-h200, gpu-t4, ...; fp32, TF32, fp16,
    bf16), which is never applied to another GPU model."""
    from compress.errors import InputError
    from compress.hardware import calibrate as C

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        from compress.hardware.calibrate_gpu import calibrate_cuda

        result = calibrate_cuda(target=target)
    else:
        result = C.calibrate(threads=threads)
    path = C.save(result, out or C.default_path())
    m = result["machine"]
    what = (f"{m['gpu_name']}, compute capability {m['compute_capability']}, driver "
            f"{m.get('driver')}" if "gpu_name" in m else
            f"{m['cpu_model']}, {m['cores']} core(s), {threads} thread(s)")
    console.print(f"calibrated {m['hw_class']} ({what}) in {result['wall_time_s']:.1f} s "
                  f"-> {path}")
    for cls, fit in result["classes"].items():
        t = Table("factor", "value", title=cls, header_style="bold")
        for k, v in fit["compute_efficiency"].items():
            t.add_row(f"compute efficiency {k}", f"{v:.3f}")
        t.add_row("memory efficiency", f"{fit['memory_efficiency']:.3f}")
        for k, v in fit["kernel_overhead_us"].items():
            t.add_row(f"kernel overhead {k}", f"{v:.2f} us")
        for k, v in fit["host_overhead_us"].items():
            t.add_row(f"host overhead {k}", f"{v:.2f} us")
        for k, pts in (fit.get("gemm_curves") or {}).items():
            t.add_row(f"GEMM efficiency curve {k}", "  ".join(
                f"{e:.2f}@{f:.0e}" for f, e in pts[::max(1, len(pts) // 5)]) + " (eff@flops/call)")
        for rt, ops in (fit.get("vector_rates") or {}).items():
            t.add_row(f"vector ops {rt}", "  ".join(
                f"{op} {tab[-1][1] / 1e9:.2f}" for op, tab in ops.items()) + " G elements/s")
        console.print(t)
    console.print(f"load average before/after: {result['load_average']['before']} / "
                  f"{result['load_average']['after']} (calibrate on a quiet machine)",
                  highlight=False)


def _text(v) -> str:
    """A text cell: empty for a missing value (None or a pandas NaN)."""
    return v if isinstance(v, str) else ""


def _f(v, fmt):
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


MaxTtftMs = Annotated[float | None, typer.Option(
    help="causal-lm: time-to-first-token SLO (ms), queue + prefill")]
MaxTpotMs = Annotated[float | None, typer.Option(
    help="causal-lm: time-per-output-token SLO (ms)")]
LatencyPercentile = Annotated[int | None, typer.Option(
    help="percentile of the latency SLO: 95 or 99 [default: the suite's, else 95]")]
RequestsPerDay = Annotated[float | None, typer.Option(
    help="mean traffic; with it, the serving model sizes instances, batching and queueing")]
PeakFactor = Annotated[float | None, typer.Option(
    help="peak rate / mean rate (Poisson arrivals at the peak) [default 1]")]
Prices = Annotated[Path | None, typer.Option(
    help="YAML prices file: {prices: {T4: {price_per_hour, source}}}; the only way to "
    "price local-cpu")]
CatalogFiles = Annotated[list[Path] | None, typer.Option(
    "--catalog", help="extra catalog YAML, merged by target name")]
Calibration = Annotated[Path | None, typer.Option(
    help="calibration JSON [default: the user cache one, if any]")]


def _traffic(requests_per_day, peak_factor) -> dict | None:
    """What the flags say about traffic (a partial profile completes the saved one)."""
    t = {k: v for k, v in (("requests_per_day", requests_per_day),
                           ("peak_factor", peak_factor)) if v is not None}
    return t or None


def _ask(prices=None, catalog_file=None, calibration=None, traffic=None, targets=None,
         target=None):
    from compress.decide.decision import Ask

    return Ask(catalog_files=[str(c) for c in catalog_file or []] or None,
               prices=str(prices) if prices else None,
               calibration=str(calibration) if calibration else None, traffic=traffic,
               targets=targets, target_names=list(target) if target else None)


@app.command()
def recommend(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
              max_drop: MaxDrop = None, max_relative_drop: MaxRelativeDrop = None,
              min_recovery: MinRecovery = None, min_value: MinValue = None,
              min_fidelity: MinFidelity = None, max_latency_ms: MaxLatencyMs = None,
              max_memory_mb: MaxMemoryMb = None, latency_percentile: LatencyPercentile = None,
              max_ttft_ms: MaxTtftMs = None, max_tpot_ms: MaxTpotMs = None,
              requests_per_day: RequestsPerDay = None, peak_factor: PeakFactor = None,
              prices: Prices = None, catalog_file: CatalogFiles = None,
              calibration: Calibration = None,
              target: Annotated[list[str] | None, typer.Option(
                  "--target", help="only these targets (repeatable)")] = None,
              all_rows: Annotated[bool, typer.Option("--all", help="also list unsupported "
                                                     "and failing pairs")] = False,
              format: Annotated[str, typer.Option("--format", help="table or json")] = "table"):
    """Recommend the cheapest candidate x target that meets the quality targets and the
    latency SLO under the traffic (suite settings unless overridden), and save it with every
    input as RUN_DIR/recommendation.json (read by gate, report and export)."""
    from compress.decide import decision as D
    from compress.errors import InputError
    from compress.results import load_run

    if latency_percentile not in (None, 95, 99):
        raise InputError(f"--latency-percentile {latency_percentile}: expected 95 or 99")
    run = load_run(run_dir)
    over = {"max_drop": max_drop, "max_relative_drop": max_relative_drop,
            "min_recovery": min_recovery, "min_value": min_value,
            "min_fidelity": min_fidelity, "max_latency_ms": max_latency_ms,
            "max_memory_mb": max_memory_mb, "latency_percentile": latency_percentile,
            "max_ttft_ms": max_ttft_ms, "max_tpot_ms": max_tpot_ms}
    previous = D.load(run)
    rec, inputs = D.compute(run, _ask(prices, catalog_file, calibration,
                                      _traffic(requests_per_day, peak_factor), over, target))
    saved = D.save(run, rec, inputs)
    if format == "json":
        from compress.store import strict_json

        sys.stdout.write(strict_json(D.load(run).model_dump(mode="json")) + "\n")
        return
    print_recommendation(rec, run.manifest["recipe"]["resolved"]["name"], all_rows)
    note = ""
    if previous is not None:
        diff = D.differences(previous.inputs, inputs)
        note = (" (replaces the previous one; inputs changed: " + "; ".join(diff) + ")"
                if diff else " (replaces the previous one; same inputs)")
    console.print(f"saved: {saved}{note}", highlight=False)


def print_recommendation(rec, title: str, all_rows: bool = False) -> None:
    """The recommendation as tables: explanation, quality, candidate x target, Pareto."""
    traffic = rec.provenance.get("traffic")
    console.print(f"[bold]{title}[/bold]: {rec.metric}, targets "
                  f"{rec.provenance['targets'] or 'none'}")
    for line in rec.explanation:
        console.print(("[green]" if line.startswith("Recommended") else "") + line
                      + ("[/green]" if line.startswith("Recommended") else ""),
                      highlight=False)
    qt = Table("candidate", rec.metric, "drop", "quality", title="quality vs baseline "
               "(measured)", header_style="bold")
    for _, r in rec.quality.iterrows():
        qt.add_row(r["candidate"], _f(r["value"], ".4f"), _f(r.get("drop"), "+.4f"),
                   "[green]ok[/green]" if r["passes_quality"]
                   else "[red]" + "; ".join(r["quality_reasons"]) + "[/red]")
    console.print(qt)
    opts = rec.options
    if not all_rows:
        opts = opts[opts["status"] != "unsupported"]
    causal = "cost_per_1m_tokens" in opts and opts["cost_per_1m_tokens"].notna().any()
    serving = traffic is not None
    cols = ["candidate", "target", "runtime", "status", "figures"]
    cols += (["inst x wk", "max batch", "delay ms", "util", "p95 ms", "p99 ms"] if serving
             else ["batch", "p95 ms", "inf/s"])
    cols += ["$/h", "$ per 1k"] + (["$ per 1M tok"] if causal else []) \
        + (["$/month"] if serving else []) + ["efficiency", "note"]
    t = Table(*cols, title="candidate x target (measured = this machine; projected = "
              "roofline)" + ("; end-to-end latency under Poisson traffic at the peak"
                             if serving else ""), header_style="bold")
    qmap = dict(zip(rec.quality["candidate"], rec.quality["passes_quality"], strict=True))
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
        t.add_row(*cells)
    console.print(t)
    hidden = (rec.options["status"] == "unsupported").sum()
    if hidden and not all_rows:
        reasons = rec.options[rec.options["status"] == "unsupported"]
        console.print(f"{hidden} unsupported candidate x target pair(s) hidden (--all shows "
                      "them), e.g.:")
        for why in reasons["reason"].drop_duplicates().head(4):
            console.print(f"  - {why}", highlight=False)
    pt = Table("candidate", "target", "runtime", rec.metric, rec.ranking, "figures",
               "meets quality", title="Pareto frontier: quality vs cost", header_style="bold")
    for _, r in rec.pareto.iterrows():
        pt.add_row(r["candidate"], r["target"], r["runtime"], _f(r["value"], ".4f"),
                   _f(r["cost"], ".6f" if rec.ranking == "cost_per_1k" else ",.0f"),
                   r["provenance"], "yes" if r["passes_quality"] else "no")
    console.print(pt)
    p = rec.provenance
    changed = [f"{k} {v['price_per_hour']} ({v['source']})" for k, v in p["prices"].items()
               if p["price_files"] and "override" in str(v["source"])]
    console.print(f"catalog: {', '.join(p['catalog_files'])}; prices: "
                  f"{', '.join(p['price_files']) or 'catalog defaults'}"
                  + (f" [{'; '.join(changed)}]" if changed else "")
                  + f"; calibration: {p['calibration']}; traffic: {traffic or 'none'}",
                  highlight=False)
    console.print("quality and local-cpu latency are measured; every other latency, "
                  "throughput and cost figure is projected (roofline)"
                  + ("; queueing and batching are simulated (seeded)" if serving else "")
                  + ".", highlight=False)


@app.command()
def gate(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
         suite: Annotated[Path | None, typer.Option(
             help="suite YAML whose targets to gate on [default: the run's own suite]")] = None,
         baseline: Annotated[Path | None, typer.Option(
             help="previous release: its run dir, results.json or gate verdict JSON")] = None,
         baseline_candidate: Annotated[str | None, typer.Option(
             help="the previous release's candidate to compare with [default: same name]")
         ] = None,
         candidate: Annotated[list[str] | None, typer.Option(
             "--candidate", help="check these candidates (repeatable) [default: the release "
             "candidate: the recipe's `release:`, else the saved recommendation's]")] = None,
         recommended: Annotated[bool, typer.Option(
             "--recommended", help="check the saved recommendation's candidate x target "
             "pair, even when the recipe names a release")] = False,
         every_candidate: Annotated[bool, typer.Option(
             "--every-candidate", help="check every candidate that is not only a baseline, "
             "exploratory ones included")] = False,
         target: Annotated[str | None, typer.Option(
             help="hardware target for latency, memory and cost (projected) "
             "[default: local-cpu, measured]")] = None,
         max_drop: MaxDrop = None, max_relative_drop: MaxRelativeDrop = None,
         min_recovery: MinRecovery = None, min_value: MinValue = None,
         min_fidelity: MinFidelity = None, max_latency_ms: MaxLatencyMs = None,
         max_memory_mb: MaxMemoryMb = None,
         max_cost_per_1k: Annotated[float | None, typer.Option(
             help="max $ per 1,000 inferences on the target")] = None,
         max_quality_decrease: Annotated[float | None, typer.Option(
             "--max-quality-decrease", "--max-accuracy-decrease",
             help="with --baseline: max absolute fall of the primary metric")] = None,
         max_cost_increase: Annotated[float | None, typer.Option(
             help="with --baseline: max relative rise of cost per 1k (0.05 = 5%)")] = None,
         max_latency_increase: Annotated[float | None, typer.Option(
             help="with --baseline: max relative rise of p95 latency")] = None,
         prices: Prices = None, catalog_file: CatalogFiles = None,
         calibration: Calibration = None,
         junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
         markdown: Annotated[Path | None, typer.Option(
             help="write the markdown summary here (also appended to "
             "$GITHUB_STEP_SUMMARY when set)")] = None,
         json_out: Annotated[Path | None, typer.Option(
             "--json", help="write the JSON verdict here")] = None):
    """Gate a release: check the release candidate (the recipe's `release:`, else the saved
    recommendation's pair) against thresholds (the suite's targets unless overridden) and
    optionally against a previous release. Exit 0 all pass, 1 a check fails, 2 the
    run/suite is invalid, nothing is named to gate, or a needed figure is missing."""
    import os

    from compress.errors import InputError
    from compress.gate import gate as run_gate
    from compress.hardware import calibrate as C
    from compress.hardware.catalog import load_catalog

    thresholds = {"max_drop": max_drop, "max_relative_drop": max_relative_drop,
                  "min_recovery": min_recovery, "min_value": min_value,
                  "min_fidelity": min_fidelity, "max_latency_ms": max_latency_ms,
                  "max_memory_mb": max_memory_mb, "max_cost_per_1k": max_cost_per_1k,
                  "max_quality_decrease": max_quality_decrease,
                  "max_cost_increase": max_cost_increase,
                  "max_latency_increase": max_latency_increase}
    result = run_gate(run_dir, thresholds, suite=suite, candidates=candidate,
                      recommended=recommended, every_candidate=every_candidate,
                      target=target, baseline=baseline,
                      baseline_candidate=baseline_candidate,
                      catalog=load_catalog(catalog_file or [], prices),
                      calibration=C.load(calibration),
                      ask=_ask(prices, catalog_file, calibration, None, None,
                               [target] if target else None))
    md = result.to_markdown()
    for path, text in ((junit, result.to_junit()), (markdown, md),
                       (json_out, result.to_json())):
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{path}: cannot write it ({exc.strerror})") from None
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
    t = Table("candidate", "check", "value", "threshold", "figures", "result",
              title=f"gate: {result.run} (target {result.target})", header_style="bold")
    colour = {"pass": "green", "fail": "red", "error": "yellow"}
    for ch in result.checks:
        t.add_row(ch.candidate, ch.check, _f(ch.value, ".6g"), _f(ch.threshold, ".6g"),
                  ch.provenance or "-",
                  f"[{colour[ch.status]}]{ch.status}[/{colour[ch.status]}] {ch.message}")
    console.print(t)
    if result.recommended and result.recommended.get("decision"):
        console.print(result.recommended["decision"], highlight=False)
    c = result.counts()
    console.print(f"[{colour[result.verdict]}]{result.verdict.upper()}[/{colour[result.verdict]}]"
                  f": {c['pass']} passed, {c['fail']} failed, {c['error']} error(s)"
                  + ("; an error is a figure the check needs that the run lacks"
                     if c["error"] else ""), highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("export")
def export_cmd(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
               candidate: Annotated[str | None, typer.Argument(
                   help="the candidate to export (or --recommended)")] = None,
               to: Annotated[Path, typer.Option("--to", help="destination directory "
                                                "(new or empty)")] = ...,
               recommended: Annotated[bool, typer.Option(
                   "--recommended", help="export the recommended candidate (the saved "
                   "recommendation)")] = False,
               format: Annotated[str, typer.Option(
                   "--format", help="hf: the model, tokenizer and a model card; triton: a "
                   "Triton model repository with the recommended serving configuration "
                   "(ONNX candidates)")] = "hf",
               requests_per_day: RequestsPerDay = None, peak_factor: PeakFactor = None,
               prices: Prices = None, catalog_file: CatalogFiles = None,
               calibration: Calibration = None,
               target: Annotated[list[str] | None, typer.Option(
                   "--target", help="only these targets (repeatable)")] = None,
               cache_dir: CacheDir = None):
    """Write a deployable directory: the model in its runnable format, tokenizer, config and
    a README.md model card with the measured figures and provenance (or, with --format
    triton, a Triton model repository). The recommendation is the saved one; options that
    differ from its inputs recompute it, and the output says what differs."""
    from compress.export import export

    out = export(run_dir, candidate, to=to, recommended=recommended, format=format,
                 ask=_ask(prices, catalog_file, calibration,
                          _traffic(requests_per_day, peak_factor), None, target),
                 cache_dir=cache_dir)
    extra = (f" (recommended on {out.recommended['target']})" if out.recommended else "")
    what = ("Triton model repository" if format == "triton" else "model card README.md")
    console.print(f"exported {out.candidate} ({out.kind}){extra} -> {out.path}: "
                  f"{len(out.files)} file(s), {what}", highlight=False)
    if out.recommended:
        console.print(out.recommended["decision"], highlight=False)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
           out: Annotated[Path | None, typer.Option(
               "--out", help="HTML file [default: RUN_DIR/report.html]")] = None,
           requests_per_day: RequestsPerDay = None, peak_factor: PeakFactor = None,
           prices: Prices = None, catalog_file: CatalogFiles = None,
           calibration: Calibration = None,
           target: Annotated[list[str] | None, typer.Option(
               "--target", help="only these targets (repeatable)")] = None):
    """Write one self-contained HTML report (recommendation, candidates, Pareto and cost
    plots, prices, provenance); the plots are also saved as PNG and SVG beside it. The
    recommendation is the saved one; options that differ from its inputs recompute it."""
    from compress.report import build_report

    r = build_report(run_dir, out, ask=_ask(prices, catalog_file, calibration,
                                            _traffic(requests_per_day, peak_factor), None,
                                            target))
    plots = sorted(p for ps in r.plots.values() for p in ps)
    console.print(f"report: {r.path} (plots: {plots[0].parent if plots else '-'}, "
                  f"{len(plots)} file(s))", highlight=False)
    console.print(r.decision, highlight=False)


def _terminated(signum, frame):
    """SIGTERM unwinds like Ctrl-C does, so temp dirs and locks are cleaned up on the way."""
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point: errors a user can act on print one line, never a traceback."""
    import signal

    quiet.configure()
    signal.signal(signal.SIGTERM, _terminated)
    for stream in (sys.stdout, sys.stderr):  # an ASCII locale must not crash on "→" or "Δ"
        if "utf" not in (getattr(stream, "encoding", "") or "").lower() \
                and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        from compress.envcheck import check_onnxruntime

        check_onnxruntime()
        app()  # standalone: exits itself (usage errors exit 2)
    except CompressError as exc:
        err_console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        sys.exit(exc.exit_code)
