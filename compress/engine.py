"""Execute a plan: build each stage run once (or take it from the store), then measure
every candidate, and write the run directory.

Stage builds run through an executor (`compress.executor`): `LocalExecutor` in this
process, `compress.ray_executor.RayExecutor` as Ray tasks across a cluster; the engine
schedules the plan as a DAG over either.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from compress.artifacts import Artifact, Kind
from compress.build import BuildResult, job_for
from compress.data import fingerprint
from compress.errors import CompressError, InputError, MeasureError
from compress.executor import Executor, LocalExecutor
from compress.plan import Node, Plan, build_plan, candidate_name, content_key, describe
from compress.provenance import git_revision, package_versions
from compress.recipe import load_recipe, suite_overrides
from compress.records import BuildRecord, Manifest, Measurement, RecipeInfo, SuiteInfo, failed
from compress.records import RunStats as Stats
from compress.stages.base import get_stage
from compress.store import Store
from compress.suite import load_suite


@dataclass
class Outcome:
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # node key -> reason
    stats: Stats = field(default_factory=Stats)
    rebuilt: set[str] = field(default_factory=set)
    builds: list[BuildRecord] = field(default_factory=list)  # what was built, when, where


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
    """Build every node as a DAG: a node is submitted once its input is built (cached
    nodes are taken from the store here), so an executor that runs builds at once
    (`--executor ray`) builds independent branches and sweep variants in parallel. Each
    key is submitted once. A failed node fails its descendants, not its siblings."""
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
    children: dict[str, list[Node]] = {}
    for node in plan.nodes:
        children.setdefault(node.parent.key, []).append(node)
    submitted: set[str] = set()
    todo = {n.key for n in plan.nodes if force or not store.artifact_dir(n.key).is_dir()}
    bar = reporter.progress("building", len(todo)) if todo else (lambda n=1: None)

    def advance(key: str) -> None:  # the bar counts the nodes not cached at the start
        if key in todo:
            todo.discard(key)
            bar(1)
    root = store.root.resolve()

    def ready(parent_key: str) -> None:
        """Schedule the children of a node that just finished (or failed)."""
        for node in children.get(parent_key, []):
            assert node.key not in submitted, f"{node.key} scheduled twice"
            submitted.add(node.key)
            if parent_key in out.errors:
                out.errors[node.key] = f"input {node.parent.step!r} failed"
                advance(node.key)
                ready(node.key)
                continue
            cached = None if force else store.get(node.key)
            if cached is not None:
                out.artifacts[node.key] = cached
                out.stats.stage_cache_hits += 1
                advance(node.key)
                ready(node.key)
                continue
            reporter.step(f"building {candidate_name(node)} ({node.stage}) {node.key[:8]}")
            job = job_for(node, out.artifacts[parent_key], plan, root, force)
            executor.submit(job, get_stage(node.stage).resources(node.config))

    def finished(res: BuildResult) -> None:
        node = next(n for n in plan.nodes if n.key == res.key)
        if res.error is not None:
            out.errors[res.key] = res.error
            reporter.step(f"[red]{candidate_name(node)}: {res.error}[/red]")
        elif res.cached:  # another driver built it meanwhile
            out.artifacts[res.key] = res.artifact
            out.stats.stage_cache_hits += 1
        else:
            out.artifacts[res.key] = res.artifact
            out.stats.stage_executions += 1
            out.rebuilt.add(res.key)
            out.builds.append(BuildRecord(
                step=node.step, key=res.key, stage=node.stage, host=res.host,
                started=_iso(res.started), finished=_iso(res.finished),
                wall_time_s=round(res.finished - res.started, 3)))
        advance(res.key)
        ready(res.key)

    executor.start(store, reporter)
    try:
        ready(plan.model_node.key)
        while executor.busy:
            for res in executor.wait():
                finished(res)
    except KeyboardInterrupt:
        executor.cancel()
        raise
    finally:
        executor.close()
    return out


def make_executor(kind: str | None, address: str | None = None) -> Executor:
    """The executor named on the command line or in the recipe."""
    from compress.errors import InputError

    kind = kind or "local"
    if kind == "local":
        if address:
            raise InputError("--ray-address is for --executor ray")
        return LocalExecutor()
    if kind == "ray":
        from compress.ray_executor import RayExecutor

        return RayExecutor(address)
    raise InputError(f"--executor {kind!r}: expected local or ray")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


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
               force: bool = False, remeasure: bool = False,
               executor: Executor | str | None = None, ray_address: str | None = None,
               reporter: Reporter | None = None):
    """Run a recipe end to end and write its run directory. Returns the loaded `Run`.

    `executor`: an `Executor`, or its name ("local", "ray"; default: the recipe's
    `executor.kind`); `ray_address` (default: the recipe's `executor.address`)."""
    from compress.results import Run, build_results, write_run

    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    plan = prepare(recipe_path, overrides)
    reporter = reporter or Reporter()
    for message in plan.warnings:
        reporter.warn(message)
    store = Store(cache_dir, warn=reporter.warn)
    if not isinstance(executor, Executor):
        spec = plan.recipe.executor
        executor = make_executor(executor or spec.kind, ray_address or (
            spec.address if (executor or spec.kind) == spec.kind else None))
    if plan.suite.measure_on:  # refuse an unknown target before any work
        from compress.hardware.catalog import load_catalog
        from compress.ray_executor import import_ray
        from compress.target_measure import check_targets

        check_targets(plan.suite.measure_on, load_catalog(),
                      f"{plan.recipe.suite_path()}: measure_on")
        import_ray()  # measured on a Ray cluster's GPU nodes
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
            wall_time_s=round(time.perf_counter() - started, 3), stats=built.stats,
            executor=executor.describe(), builds=built.builds)
        write_run(run_dir, manifest, summary, tidy, units)
        if plan.suite.measure_on:
            from compress import target_measure as tm
            from compress.hardware.catalog import load_catalog

            address = ray_address or plan.recipe.executor.address
            tm.write(run_dir, tm.measure_on_targets(plan, built, load_catalog(), address,
                                                    reporter))
        store.register_run(run_dir, list(built.artifacts),
                           [k for m in measured.values()
                            for k in (m.measurement_key, m.import_baseline_key) if k])
    return Run(run_dir)
