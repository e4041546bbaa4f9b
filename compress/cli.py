"""The `compress` command line: a thin layer over the Python API (compress.engine & co)."""

from __future__ import annotations

import json
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
    console.print(f"[green]ok[/green] {recipe}: {len(p.nodes)} stage run(s), "
                  f"{len(p.candidates)} candidate(s)")
    if plan:
        from compress.store import Store

        store = Store(cache_dir)
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
        sys.stdout.write(json.dumps(r.rows if not tidy else r.measurements, indent=2) + "\n")
    elif format == "csv":
        sys.stdout.write((r.table() if tidy else r.summary()).to_csv(index=False))
    else:
        raise InputError(f"--format {format!r}: expected table, json or csv")


@app.command()
def cache(cache_dir: CacheDir = None,
          prune: Annotated[bool, typer.Option("--prune", help="remove what no kept run "
                                              "refers to")] = False,
          keep_runs: Annotated[int | None, typer.Option("--keep-runs", min=0, help="with --prune: "
                                                        "keep only the newest N runs")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="with --prune: only "
                                                "say what would go")] = False):
    """Show the artifact cache (size, runs) and optionally prune it."""
    from compress.store import Store

    store = Store(cache_dir)
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


def main() -> None:
    """Console entry point: errors a user can act on print one line, never a traceback."""
    quiet.configure()
    try:
        from compress.envcheck import check_onnxruntime

        check_onnxruntime()
        app()  # standalone: exits itself (usage errors exit 2)
    except CompressError as exc:
        err_console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        sys.exit(exc.exit_code)
