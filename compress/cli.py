"""The `compress` command line: a thin layer over the Python API (compress.engine & co)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from compress import quiet, render
from compress.cli_options import (  # the options and asks shared by the commands
    CacheDir,
    Calibration,
    CatalogFiles,
    Confidence,
    ExecutorName,
    LatencyPercentile,
    MaxDrop,
    MaxLatencyMs,
    MaxMemoryMb,
    MaxRelativeDrop,
    MaxTpotMs,
    MaxTtftMs,
    MinFidelity,
    MinRecovery,
    MinValue,
    PeakFactor,
    Prices,
    RayAddress,
    RequestsPerDay,
    Sets,
    _ask,
    _level,
    _traffic,
)
from compress.errors import CompressError
from compress.tables import make_console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Compress Hugging Face models with declarative recipes, measure every "
                       "candidate, and compare them.")
# stdout: the terminal's width or $COLUMNS; piped without COLUMNS, lines are not folded and
# tables go out as markdown (compress.tables). Made again per invocation (_main).
console = make_console()
err_console = Console(stderr=True, soft_wrap=True)  # messages never fold mid-path


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                                help="show library logs and warnings")] = False):
    global console
    console = make_console()
    quiet.set_verbose(verbose)


@app.command()
def run(recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
        out: Annotated[Path | None, typer.Option("--out", help="run directory "
                                                 "[default: runs/<recipe name>-<time>]")] = None,
        cache_dir: CacheDir = None, set_: Sets = None,
        force: Annotated[bool, typer.Option("--force", help="rebuild every stage")] = False,
        remeasure: Annotated[bool, typer.Option("--remeasure", help="measure again")] = False,
        executor: ExecutorName = None, ray_address: RayAddress = None):
    """Run a recipe: build each stage once (cached), measure every candidate, print the table."""
    from compress.engine import run_recipe

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bars:
            result = run_recipe(recipe, out_dir=out, cache_dir=cache_dir,
                                overrides=set_ or [], force=force, remeasure=remeasure,
                                executor=executor, ray_address=ray_address,
                                reporter=render.RichReporter(bars))
    except KeyboardInterrupt:
        err_console.print("interrupted: finished artifacts are cached; run again to resume")
        raise typer.Exit(130) from None
    s = result.stats
    render.results_table(console, result.rows,
                         title=f"{result.manifest['recipe']['resolved']['name']}")
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

        render.plan(console, p, Store(cache_dir, warn=_warn))


@app.command()
def stages():
    """List the stages with their options (generated from their config schemas)."""
    from compress.stages.base import all_stages

    render.stages(console, all_stages())


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
        render.results_table(console, r.rows, title=r.manifest["recipe"]["resolved"]["name"])
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
                            ] = False,
          prune_checkpoints: Annotated[bool, typer.Option(
              "--prune-checkpoints", help="remove the training checkpoints that interrupted "
              "builds left (their re-runs then train afresh); --prune keeps them")] = False):
    """Show the artifact cache (size, runs); optionally verify or prune it. Both refuse a
    directory that is not a compress cache (no CACHEDIR.TAG)."""
    from compress.store import Store

    bad = render.cache(console, Store(cache_dir, warn=_warn), verify=verify, prune=prune,
                       keep_runs=keep_runs, dry_run=dry_run,
                       prune_checkpoints=prune_checkpoints)
    if bad:
        raise typer.Exit(1)


@app.command()
def calibrate(out: Annotated[Path | None, typer.Option(
                  "--out", help="calibration JSON [default: $COMPRESS_CALIBRATION, else "
                  "calibration/calibration.json in the cache dir ($COMPRESS_CACHE_DIR or "
                  "the user cache dir)]")] = None,
              threads: Annotated[int, typer.Option("--threads", min=1,
                                                   help="threads, pinned")] = 1,
              device: Annotated[str, typer.Option(
                  "--device", help="auto (cuda where a CUDA device is available, else cpu), "
                  "cpu or cuda")] = "auto",
              target: Annotated[str | None, typer.Option(
                  "--target", help="cuda: the catalog GPU this device is [default: detected "
                  "from its name]")] = None,
              on: Annotated[str | None, typer.Option(
                  "--on", help="calibrate a catalog GPU (T4, L4, A10G, ...) on a node of "
                  "that model in a Ray cluster (with --executor ray)")] = None,
              executor: ExecutorName = None, ray_address: RayAddress = None):
    """Measure this machine's roofline factors from micro-benchmarks only (about 1-2 minutes):
    GEMM efficiency by size per precision and runtime, attention matmuls, vector-op rates,
    memory bandwidth, batch-1 GEMV rates, per-kernel and per-call overheads. Run it on a
    quiet machine. On a CUDA machine it calibrates the GPU's own class (gpu-h200, gpu-t4,
    ...; fp32, TF32, fp16, bf16), which is never applied to another GPU model."""
    from compress.hardware import calibrate as C

    if on or executor == "ray":
        from compress.target_measure import calibrate_on

        result = calibrate_on(on, ray_address, executor=executor)
        path = C.save(result, out or C.default_path())
    else:
        from compress.hardware.calibrate_gpu import calibrate_here

        result = calibrate_here(device, threads, target)
        path = C.save(result, out or C.default_path(mark=True))
    render.calibration(console, result, path, threads)


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
              confidence: Confidence = None,
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
    ask = _ask(prices, catalog_file, calibration, _traffic(requests_per_day, peak_factor),
               over, target)
    ask.confidence = _level(confidence)
    previous = D.load(run)
    rec, inputs = D.compute(run, ask)
    if rec.refused:  # a baseline at chance: nothing to recommend, nothing saved
        render.refused(console, err_console, rec, format)
        raise typer.Exit(1)
    saved = D.save(run, rec, inputs)
    if format == "json":
        from compress.store import strict_json

        sys.stdout.write(strict_json(D.load(run).model_dump(mode="json")) + "\n")
        return
    render.recommendation(console, rec, run.manifest["recipe"]["resolved"]["name"], all_rows)
    note = ""
    if previous is not None:
        diff = D.differences(previous.inputs, inputs)
        note = (" (replaces the previous one; inputs changed: " + "; ".join(diff) + ")"
                if diff else " (replaces the previous one; same inputs)")
    console.print(f"saved: {saved}{note}", highlight=False)




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
             "--json", help="write the JSON verdict here")] = None,
         confidence: Confidence = None):
    """Gate a release: check the release candidate (the recipe's `release:`, else the saved
    recommendation's pair) against thresholds (the suite's targets unless overridden) and
    optionally against a previous release. Exit 0 all pass, 1 a check fails (or a quality
    check is inconclusive), 2 the run/suite is invalid, nothing is named to gate, or a
    needed figure is missing."""
    from compress.gate import gate as run_gate
    from compress.gate_output import write_outputs
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
                               [target] if target else None),
                      confidence=_level(confidence))
    write_outputs(result, junit=junit, markdown=markdown, json_out=json_out)
    render.gate(console, result)
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


def main() -> None:
    """Console entry point: errors a user can act on print one line, never a traceback."""
    quiet.configure()
    quiet.configure_process()
    try:
        from compress.envcheck import check_onnxruntime

        check_onnxruntime()
        app()  # standalone: exits itself (usage errors exit 2)
    except CompressError as exc:
        err_console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        sys.exit(exc.exit_code)
