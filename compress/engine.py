"""Execute a plan: build each stage run once (or take it from the store), then measure
every candidate, and write the run directory.

Stages run through an `Executor`. `LocalExecutor` runs them in this process; a cluster
engine would implement the same `build` method and leave stages untouched.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from compress.artifacts import Artifact, Kind
from compress.data import fingerprint
from compress.errors import CompressError, InputError, MeasureError, StageError
from compress.plan import Node, Plan, build_plan, candidate_name, content_key, describe
from compress.provenance import git_revision, package_versions
from compress.quiet import verbose
from compress.recipe import load_recipe, suite_overrides
from compress.records import Manifest, Measurement, RecipeInfo, SuiteInfo, failed
from compress.records import RunStats as Stats
from compress.stages.base import StageContext, get_stage
from compress.store import Store
from compress.suite import load_suite


class Executor(ABC):
    """Builds one node's artifact into a directory the store provides."""

    @abstractmethod
    def build(self, node: Node, source: Artifact, ctx: StageContext, out_dir: Path) -> dict:
        """Write the node's output into out_dir; return its checks."""


class LocalExecutor(Executor):
    def build(self, node, source, ctx, out_dir):
        return get_stage(node.stage).run(ctx, source, node.config, out_dir)


@dataclass
class Outcome:
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # node key -> reason
    stats: Stats = field(default_factory=Stats)
    rebuilt: set[str] = field(default_factory=set)


class Reporter:
    """Progress and messages; the CLI passes a rich-backed one, the API a silent one
    (warnings still go to stderr: they say a figure or a key is not what it seems)."""

    def step(self, message: str) -> None: ...

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def progress(self, description: str, total: int):
        return lambda n=1: None


def model_artifact(plan: Plan, store: Store, stats: Stats, reporter: Reporter) -> Artifact:
    """The model as given; a GGUF checkpoint is converted once into the store first."""
    from compress.models import convert_gguf, gguf_file

    key = plan.model_node.key
    gguf = gguf_file(plan.recipe.model)
    if gguf is None:
        return Artifact(key=key, path=Path(plan.model_path), kind=Kind.PYTORCH,
                        meta={"key": key, "stage": None, "source": plan.model_path,
                              "revision": plan.model_revision})
    cached = store.get(key)
    if cached is not None:
        stats.stage_cache_hits += 1
        return cached
    with store.building(key) as tmp:
        cached = store.get(key)  # a concurrent run may have converted it meanwhile
        if cached is not None:
            stats.stage_cache_hits += 1
            return cached
        reporter.step(f"converting {gguf} to a safetensors model (once)")
        t0 = time.perf_counter()
        convert_gguf(plan.model_path, gguf, tmp, revision=plan.model_revision)
        stats.stage_executions += 1
        return store.commit(tmp, {
            "key": key, "kind": Kind.PYTORCH.value, "stage": "import-gguf", "step": "model",
            "source": f"{plan.model_path}/{gguf}", "revision": plan.model_revision,
            "versions": package_versions(),
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "created": datetime.now(UTC).isoformat(timespec="seconds")})


def build_all(plan: Plan, store: Store, executor: Executor | None = None, force: bool = False,
              reporter: Reporter | None = None) -> Outcome:
    """Build every node in order; a failed node fails its descendants, not its siblings."""
    executor = executor or LocalExecutor()
    reporter = reporter or Reporter()
    out = Outcome()
    try:
        out.artifacts[plan.model_node.key] = model_artifact(plan, store, out.stats, reporter)
    except CompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model as given failed to load or convert
        raise CompressError(f"could not import the model {plan.model_path}: "
                            f"{type(exc).__name__}: {exc}") from None
    recipe = plan.recipe
    for node in plan.nodes:
        parent = node.parent.key
        if parent in out.errors:
            out.errors[node.key] = f"input {node.parent.step!r} failed"
            continue
        cached = store.get(node.key)
        if cached is not None and not force:
            out.artifacts[node.key] = cached
            out.stats.stage_cache_hits += 1
            continue
        stage = get_stage(node.stage)
        roles = stage.data_roles(node.config)
        ctx = StageContext(
            task=recipe.task, seed=recipe.seed,
            data={r: plan.data[r] for r in roles if r in plan.data},
            columns={r: (recipe.data[r].text_column, recipe.data[r].label_column)
                     for r in roles if r in plan.data},
            trust_remote_code=recipe.model.trust_remote_code,
            progress=reporter.progress, log=reporter.step,
            checkpoints=store.checkpoints(node.key, f"{node.step} ({node.stage})"))
        reporter.step(f"building {candidate_name(node)} ({node.stage}) {node.key[:8]}")
        try:
            with store.building(node.key) as tmp:
                cached = store.get(node.key)  # a concurrent run may have built it meanwhile
                if cached is not None and not force:
                    out.artifacts[node.key] = cached
                    out.stats.stage_cache_hits += 1
                    continue
                t0 = time.perf_counter()
                with store.reading(parent):  # a --force rebuild of the input waits
                    checks = executor.build(node, out.artifacts[parent], ctx, tmp)
                meta = {
                    "key": node.key, "kind": node.kind.value, "stage": node.stage,
                    "step": node.step, "config": node.config_dict(), "parent": parent,
                    "format": stage.produces_format(node.config),
                    "data": node.data_fingerprints, "properties": node.properties,
                    "task": recipe.task,
                    "seed": recipe.seed if stage.uses_seed else None,
                    "stage_version": stage.version, "versions": package_versions(),
                    "wall_time_s": round(time.perf_counter() - t0, 3), "checks": checks,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                out.artifacts[node.key] = store.commit(tmp, meta)
                out.stats.stage_executions += 1
                out.rebuilt.add(node.key)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed stage must not stop the others
            what = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            reason = f"stage {node.stage} failed: {what}"
            out.errors[node.key] = reason
            reporter.step(f"[red]{candidate_name(node)}: {reason}[/red]")
            if not isinstance(exc, CompressError) and verbose():
                reporter.step(traceback.format_exc())
    return out


def measurement_key(plan: Plan, artifact_key: str, reference: str | None) -> str:
    """Keyed by artifact, suite settings, eval data, machine, and the baseline measurement
    whose outputs the fidelity figures compare against."""
    from compress.measure.runner import MEASURE_VERSION, machine_fingerprint

    return content_key({"artifact": artifact_key, "settings": plan.suite.settings(),
                        "eval": fingerprint(plan.eval_data), "machine": machine_fingerprint(),
                        "version": MEASURE_VERSION, "reference": reference,
                        "versions": package_versions()})


def import_peak(store: Store, runtime_kind: str, threads: int,
                remeasure: bool) -> tuple[int | None, str]:
    """Peak memory of a runner's imports alone on this machine (cached like a measurement)."""
    from compress.measure.runner import MEASURE_VERSION, import_baseline, machine_fingerprint

    key = content_key({"import_only": runtime_kind, "machine": machine_fingerprint(),
                       "versions": package_versions(), "version": MEASURE_VERSION})
    with store.measuring(key):
        cached = store.get_measurement(key)
        if cached is None or remeasure:
            cached = import_baseline(runtime_kind, threads)
            store.put_measurement(key, cached)
    return (cached.get("memory") or {}).get("peak_rss_bytes"), key


def measure_all(plan: Plan, store: Store, built: Outcome, remeasure: bool = False,
                reporter: Reporter | None = None) -> dict[str, Measurement]:
    """Measure each candidate in its own process, baselines first (their outputs are the
    reference for fidelity). Cached by artifact, settings, eval data, machine, reference."""
    from compress.measure.runner import eval_payload, measure

    reporter = reporter or Reporter()
    suite = plan.suite
    payload = eval_payload(suite.task, plan.eval_data, suite.dataset)
    results: dict[str, Measurement] = {}
    peaks: dict[str, tuple] = {}  # runtime -> import-only peak, once per run
    advance = reporter.progress("measuring", len(plan.candidates))
    for cand in sorted(plan.candidates, key=lambda c: c.node.key != c.baseline.key):
        key = cand.node.key
        if key in built.errors:
            results[key] = failed(built.errors[key])
            advance(1)
            continue
        base_m = results.get(cand.baseline.key)
        ref = None if cand.baseline.key == key or base_m is None else base_m.measurement_key
        mkey = measurement_key(plan, key, ref)
        fresh = remeasure or key in built.rebuilt
        cached = None if fresh else store.get_measurement(mkey, with_outputs=True)
        if cached is not None:
            results[key] = Measurement.model_validate({**cached, "measurement_key": mkey,
                                                       "cached": True})
            built.stats.measurement_cache_hits += 1
            advance(1)
            continue
        artifact = built.artifacts[key]
        try:
            with store.measuring(mkey):
                cached = None if fresh else store.get_measurement(mkey, with_outputs=True)
                if cached is not None:  # a concurrent run measured it meanwhile
                    results[key] = Measurement.model_validate(
                        {**cached, "measurement_key": mkey, "cached": True})
                    built.stats.measurement_cache_hits += 1
                    advance(1)
                    continue
                reporter.step(f"measuring {cand.name}")
                res = _measure_locked(store, artifact, suite, payload, ref, mkey, measure)
            runtime = artifact.kind.runtime
            if runtime not in peaks:
                peaks[runtime] = import_peak(store, runtime, suite.latency.threads, remeasure)
            base, base_key = peaks[runtime]
            mem = res["memory"]
            mem["import_peak_rss_bytes"] = base
            mem["inference_delta_bytes"] = (mem["peak_rss_bytes"] - base
                                            if base and mem.get("peak_rss_bytes") else None)
            res["import_baseline_key"] = base_key
            res["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            res["versions"] = package_versions()
            m = Measurement.model_validate({**res, "measurement_key": mkey, "cached": False})
            store.put_measurement(mkey, res)
            results[key] = m
            built.stats.measurements += 1
        except MeasureError as exc:
            results[key] = failed(f"measurement failed: {exc}")
            reporter.step(f"[red]{cand.name}: measurement failed: {exc}[/red]")
        advance(1)
    return results


def _measure_locked(store: Store, artifact: Artifact, suite, payload: dict, ref: str | None,
                    mkey: str, measure) -> dict:
    """Measure while holding the artifact for reading; outputs land under a unique temp
    name and are renamed into place."""
    with store.reading(artifact.key):
        return measure(artifact, suite, payload, store.outputs_path(ref) if ref else None,
                       store.outputs_path(mkey))


def prepare(recipe_path: str | Path, overrides: list[str] | None = None) -> Plan:
    """Load and validate a recipe and its suite into a plan (no work is done)."""
    recipe = load_recipe(recipe_path, overrides)
    if not recipe.suite_path().is_file():
        raise recipe.source.error(("suite",), f"suite file not found: {recipe.suite_path()}")
    suite, suite_src = load_suite(recipe.suite_path(), suite_overrides(overrides))
    return build_plan(recipe, suite, suite_src)


RUN_FILES = ("manifest.json", "results.json")


def default_run_dir(plan: Plan, parent: Path = Path("runs")) -> Path:
    """runs/<recipe name>-<time>, created here; a second run in the same second gets its
    own directory (-2, -3, ...)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run directory in {parent}: "
                         f"{exc.strerror}") from None
    for n in range(1, 1000):
        path = parent / (f"{plan.recipe.name}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot create the run directory {path}: {exc.strerror}") from None
        _check_writable(path)
        return path
    raise InputError(f"{parent}: too many runs of {plan.recipe.name!r} started at {stamp}")


def prepare_out_dir(path: str | Path) -> Path:
    """Check and create --out before any work: it must be new, empty, or a run directory
    (which is then overwritten), and writable."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--out {path}: exists and is not a directory")
        if any(path.iterdir()) and not any((path / f).is_file() for f in RUN_FILES):
            raise InputError(f"--out {path}: exists, is not empty and is not a run directory "
                             "(no manifest.json or results.json); refusing to write results "
                             "into it. Choose a new or empty directory")
    else:
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise InputError(f"--out {path}: cannot create it ({exc.strerror})") from None
    _check_writable(path)
    return path


def _check_writable(path: Path) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".compress-probe-"):
            pass
    except OSError as exc:
        raise InputError(f"--out {path}: cannot write there ({exc.strerror})") from None


def run_recipe(recipe_path: str | Path, out_dir: str | Path | None = None,
               cache_dir: str | Path | None = None, overrides: list[str] | None = None,
               force: bool = False, remeasure: bool = False, executor: Executor | None = None,
               reporter: Reporter | None = None):
    """Run a recipe end to end and write its run directory. Returns the loaded `Run`."""
    from compress.results import Run, build_results, write_run

    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    plan = prepare(recipe_path, overrides)
    reporter = reporter or Reporter()
    for message in plan.warnings:
        reporter.warn(message)
    store = Store(cache_dir, warn=reporter.warn)
    run_dir = prepare_out_dir(out_dir) if out_dir else default_run_dir(plan)
    with store.shared_lock():
        store.clean_stale()
        built = build_all(plan, store, executor, force, reporter)
        measured = measure_all(plan, store, built, remeasure, reporter)
        summary, tidy, units = build_results(plan, built, measured)
        built.stats.failures = sum(r.status != "ok" for r in summary)
        manifest = Manifest(
            recipe=RecipeInfo(path=str(recipe_path),
                              given=plan.recipe.source.path.read_text(),
                              overrides=list(overrides or []),
                              resolved=plan.recipe.model_dump(mode="json", by_alias=True)),
            suite=SuiteInfo(path=str(plan.recipe.suite_path()), resolved=plan.suite),
            plan=describe(plan), seed=plan.recipe.seed,
            versions=package_versions(), git=git_revision(plan.recipe.base_dir),
            cache_dir=str(store.root), started=started_at,
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            wall_time_s=round(time.perf_counter() - started, 3), stats=built.stats)
        write_run(run_dir, manifest, summary, tidy, units)
        store.register_run(run_dir, list(built.artifacts),
                           [k for m in measured.values()
                            for k in (m.measurement_key, m.import_baseline_key) if k])
    return Run(run_dir)
