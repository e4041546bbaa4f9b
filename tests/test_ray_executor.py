"""`--executor ray` on a local Ray instance (2 CPUs, and a fake "T4" accelerator resource on
this CPU-only node): DAG order, parallel branches, a failing stage, a killed driver resumed
from the cache, results identical to the local executor's, and a T4 measurement refused.

One Ray instance serves the whole module (starting one takes seconds)."""

from __future__ import annotations

import os
import re

import pytest

from compress.artifacts import META_FILE
from compress.engine import build_all, prepare, run_recipe
from compress.store import Store
from tests.conftest import RECIPE, ROOT, kill_run_mid_stage

PLUGINS = "tests.boom_stage,tests.rendezvous_stage"


@pytest.fixture(scope="module")
def ray_local():
    import ray

    # the workers the instance starts import the test plugins from the repository
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                             os.environ.get("PYTHONPATH")]))
    ctx = ray.init(num_cpus=2, resources={"accelerator_type:T4": 1},
                   include_dashboard=False, logging_level="ERROR")
    yield ctx
    ray.shutdown()


BRANCHES = """\
name: branches
task: text-classification
model: {model}
suite: suite.yaml
data:
  train: {{source: {train}}}
pipeline:
  - id: meet
    stage: rendezvous
    input: model
    with: {{dir: {meet}, parties: 2, timeout_s: {timeout}}}
    sweep: {{name: [a, b]}}
  - id: onnx
    stage: export
  - id: boom
    stage: boom
    input: model
  - id: after-boom
    stage: export
    input: boom
candidates: [onnx]
"""


def test_dag_order_parallel_branches_and_a_failing_stage(ray_local, write_recipe, tmp_path,
                                                          monkeypatch):
    from compress.ray_executor import RayExecutor

    monkeypatch.setenv("COMPRESS_PLUGINS", PLUGINS)
    path = write_recipe(BRANCHES, meet=tmp_path / "meet", timeout=60)
    plan = prepare(path)
    store = Store(tmp_path / "cache")
    out = build_all(plan, store, RayExecutor())
    steps = {n.key: n for n in plan.nodes}
    by_step = {}
    for n in plan.nodes:
        by_step.setdefault(n.step, []).append(n.key)

    # the two sweep variants met: they were building at the same time
    assert all(k in out.artifacts for k in by_step["meet"] + by_step["onnx"])
    # a failed stage fails its descendant with the reason; its siblings were built
    (boom,), (after,) = by_step["boom"], by_step["after-boom"]
    assert out.errors[boom] == "stage boom failed: RuntimeError: exploded on purpose"
    assert out.errors[after] == "input 'boom' failed"
    assert set(out.errors) == {boom, after}
    assert not (store.root / "artifacts" / boom).exists()
    # DAG order: each build started after its input's build finished
    builds = {b.key: b for b in out.builds}
    assert set(builds) == set(by_step["meet"] + by_step["onnx"])
    for key in by_step["onnx"]:
        parent = steps[key].parent.key
        assert builds[key].started >= builds[parent].finished
    a, b = (builds[k] for k in by_step["meet"])
    assert a.started < b.finished and b.started < a.finished  # the timeline overlaps
    # each key was built once, by the worker, into the shared store
    assert out.stats.stage_executions == 4
    for key in builds:
        assert (store.root / "artifacts" / key / META_FILE).is_file()


def test_the_rendezvous_fails_when_builds_run_one_at_a_time(write_recipe, tmp_path,
                                                             monkeypatch):
    """The same plan on the local executor: the check above can fail."""
    monkeypatch.setenv("COMPRESS_PLUGINS", PLUGINS)
    path = write_recipe(BRANCHES, meet=tmp_path / "meet", timeout=1)
    plan = prepare(path)
    out = build_all(plan, Store(tmp_path / "cache"))
    meets = [n.key for n in plan.nodes if n.step == "meet"]
    assert any("did not run at the same time" in out.errors.get(k, "") for k in meets)


def test_same_results_as_the_local_executor(ray_local, tiny_run, write_recipe, tmp_path):
    from compress.results import Run

    local = Run(tiny_run)
    path = write_recipe()
    remote = run_recipe(path, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                        executor="ray")
    assert remote.ok and remote.manifest["executor"].startswith("ray")
    assert remote.stats["stage_executions"] == 3
    assert remote.manifest["plan"] == local.manifest["plan"]  # candidates and cache keys
    lrows = {r["candidate"]: r for r in local.rows}
    rrows = {r["candidate"]: r for r in remote.rows}
    assert set(lrows) == set(rrows) == {"teacher", "onnx", "int8"}
    for cand, row in rrows.items():
        for metric in ("accuracy", "macro_f1", "top1_agreement"):
            if lrows[cand].get(metric) is not None:
                assert round(row[metric], 4) == round(lrows[cand][metric], 4), (cand, metric)
    hosts = {b["host"] for b in remote.manifest["builds"]}
    assert hosts and all(hosts)


def test_killed_driver_resumes_from_the_cache(ray_local, write_recipe, tmp_path):
    path = write_recipe()
    cache = tmp_path / "cache"
    keys = {n.step: n.key for n in prepare(path).nodes}
    address = ray_local.address_info["address"]
    # kill the driver once the export (second stage) is being built on a worker
    kill_run_mid_stage(path, tmp_path / "run1", cache, keys["onnx"], "--executor", "ray",
                       "--ray-address", address)
    assert {a.name for a in (cache / "artifacts").iterdir()} >= {keys["teacher"]}
    assert not (tmp_path / "run1" / "results.json").exists()
    # resume: the finished teacher is reused; the export's worker died with its driver
    # (its lock with it, or this would block) and the export is built again
    run = run_recipe(path, out_dir=tmp_path / "run2", cache_dir=cache, executor="ray")
    assert run.ok
    assert run.stats["stage_cache_hits"] >= 1
    assert run.stats["stage_cache_hits"] + run.stats["stage_executions"] == 3
    assert all((cache / "artifacts" / k / META_FILE).is_file() for k in keys.values())


MODEL_ONLY = """\
name: on-t4
task: text-classification
model: {model}
suite: suite.yaml
candidates: [model]
"""


def test_a_t4_measurement_on_this_cpu_node_is_refused(ray_local, write_recipe, tmp_path):
    """The node advertises accelerator_type:T4 but has no T4: the worker refuses, the figure
    is never labelled T4, and the pair stays projected (listed apart, with the reason)."""
    from compress import target_measure as tm
    from compress.decide.recommend import recommend_run

    path = write_recipe(MODEL_ONLY)
    run = run_recipe(path, out_dir=tmp_path / "run", overrides=["suite.measure_on=[T4]"],
                     executor="ray")
    assert run.ok
    on = tm.read(run.path)
    assert on.requested == ["T4"]
    (r,) = on.results
    assert (r.candidate, r.target, r.status) == ("model", "T4", "refused")
    assert "has no CUDA device" in r.reason and "requested T4" in r.reason
    assert r.measurement is None and r.gpu_name is None
    assert tm.target_curves(on) == {}
    rec = recommend_run(run)
    t4 = rec.options[rec.options["target"] == "T4"]
    assert len(t4) and set(t4["provenance"]) == {"projected"}
    assert not any("T4" in str(s) for s in rec.options["efficiency_source"] if "measured" in
                   str(s))
    assert rec.provenance["measured_on"] == []
    assert rec.provenance["still_projected"] == [f"model on T4: {r.reason}"]


def test_measured_target_figures_replace_the_projection(tiny_run):
    """A (candidate, target) curve measured on the target GPU replaces the roofline for that
    pair only, labelled with the GPU's name and driver. The figures are made up (no GPU
    here): this checks the plumbing, and they are never written to a run."""
    from compress import target_measure as tm
    from compress.decide.recommend import recommend
    from compress.records import LatencyStats, Measurement
    from compress.results import Run

    run = Run(tiny_run)
    lat = LatencyStats(batch_size=1, seq_len=32, phase="forward", p50_ms=0.5, p90_ms=0.6,
                       p95_ms=0.6, p99_ms=0.7, mean_ms=0.52, std_ms=0.05, min_ms=0.45,
                       iterations=10, throughput=2000.0, throughput_unit="samples/s",
                       spread=0.2, noisy=False)
    on = tm.TargetMeasurements(requested=["T4"], results=[tm.TargetMeasurement(
        candidate="teacher", target="T4", status="measured", gpu_name="Tesla T4",
        compute_capability="7.5", driver="535.1", host="gpu-node",
        measurement=Measurement(status="ok", latency=[lat]))])
    rec = recommend(run.summary(), run.primary_metric, {}, confidence=None,
                    target_curves=tm.target_curves(on))
    rows = rec.options
    t4 = rows[rows["target"] == "T4"]
    mine = t4[t4["candidate"] == "teacher"]
    assert mine["provenance"].tolist() == ["measured"]
    assert "Tesla T4" in mine["efficiency_source"].iloc[0]
    assert "driver 535.1" in mine["efficiency_source"].iloc[0]
    assert mine["latency_p95_ms"].iloc[0] < 1.0  # the measured figure, not a projection
    others = t4[t4["candidate"] != "teacher"]
    assert len(others) and set(others["provenance"]) == {"projected"}
    assert rec.provenance["measured_on"] == ["teacher on T4: " + on.results[0].label()]


def test_calibrating_t4_on_this_cpu_node_is_refused(ray_local):
    from compress.errors import CompressError
    from compress.target_measure import calibrate_on

    with pytest.raises(CompressError, match="calibration on T4 refused: .*has no CUDA device"):
        calibrate_on("T4")
    with pytest.raises(CompressError, match="no node of the Ray cluster has "
                                            "accelerator_type:L4"):
        calibrate_on("L4")


def test_a_cluster_with_other_package_versions_is_refused(ray_local, monkeypatch):
    import ray

    from compress import ray_executor
    from compress.errors import CompressError
    from compress.provenance import package_versions

    mine = package_versions()
    ray_executor.check_versions(ray)  # this instance's workers match the driver
    other = {**mine, "torch": "2.12.0"}
    monkeypatch.setattr(ray_executor, "node_versions", lambda r: {"10.0.0.7": other})
    with pytest.raises(CompressError, match=re.escape(
            f"node 10.0.0.7: torch: driver {mine['torch']}, worker 2.12.0")):
        ray_executor.check_versions(ray)


def test_a_worker_with_other_versions_refuses_to_build(write_recipe, tmp_path):
    """Checked again on the worker for each build (a node may join after the driver's
    check): the build fails with the versions named, and nothing is committed."""
    from compress.build import build_node, job_for

    plan = prepare(write_recipe())
    node = plan.nodes[0]
    store = Store(tmp_path / "cache")
    from compress.engine import model_artifact
    from compress.records import RunStats

    source = model_artifact(plan, store, RunStats(), None)
    job = job_for(node, source, plan, store.root, force=False)
    job.versions = {**job.versions, "transformers": "0.0.1"}
    res = build_node(job)
    assert res.artifact is None
    assert "other package versions than the driver" in res.error
    assert f"transformers: driver 0.0.1, worker {plan_versions()['transformers']}" in res.error
    assert not (store.root / "artifacts" / node.key).exists()


def plan_versions():
    from compress.provenance import package_versions

    return package_versions()


def test_executor_names_and_addresses_are_checked(write_recipe, tmp_path):
    from compress.engine import make_executor
    from compress.errors import InputError
    from tests.conftest import run_cli

    with pytest.raises(InputError, match="--executor 'dask': expected local or ray"):
        make_executor("dask")
    with pytest.raises(InputError, match="--ray-address is for --executor ray"):
        make_executor("local", "ray://head:10001")
    bad = run_cli("run", str(write_recipe()), "--executor", "dask", "--out",
                  str(tmp_path / "run"))
    assert bad.returncode == 2 and "expected local or ray" in bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = run_cli("run", str(write_recipe()), "--set", "suite.measure_on=[Z9]", "--out",
                      str(tmp_path / "run2"))
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "measure_on: unknown target 'Z9'; expected one of: T4, L4" in unknown.stderr
    bad_kind = run_cli("validate", str(write_recipe(RECIPE_WITH_EXECUTOR, name="ex.yaml")))
    assert bad_kind.returncode == 2 and "Traceback" not in bad_kind.stderr
    assert "executor.kind" in bad_kind.stderr and "'dask'" in bad_kind.stderr


RECIPE_WITH_EXECUTOR = RECIPE + "executor: {{kind: dask}}\n"
