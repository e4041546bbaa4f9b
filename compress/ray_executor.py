"""`--executor ray`: each stage build is a Ray task, run where the cluster has room.

- The driver (`compress run`) connects to the cluster named by `--ray-address` (or the
  recipe's `executor.address`, or $RAY_ADDRESS), else starts a Ray instance on this
  machine. Before anything is built it asks every live node for the versions of the
  packages that make artifacts (part of every cache key) and refuses a cluster whose nodes
  differ from the driver, naming node, package and versions. Each build checks again on its
  worker (a node that joined later).
- Each build asks for the stage's resources (`Stage.resources`: CPUs, GPUs, memory). Ray
  runs as many at once as the cluster has room for; on a single machine of N CPUs that is N
  one-CPU builds.
- The worker holds the key's lock in the shared store, builds into its own temp dir and
  commits the artifact atomically (`compress.build.build_node`). The cache directory must be
  the same path on every node (a shared filesystem: NFS, a Kubernetes PVC).
- A build that fails, or a task that dies (worker crash, node lost), fails its node with the
  reason; the engine fails its descendants and goes on with the rest. Tasks are not retried
  (`max_retries=0`), as the local executor does not retry. An interrupted driver cancels its
  tasks; what was committed stays in the cache, and the next run resumes from it.
"""

from __future__ import annotations

import os
import time

from compress.build import BuildJob, BuildResult, build_node, version_mismatch
from compress.errors import CompressError, InputError
from compress.executor import Executor
from compress.provenance import package_versions

# environment a driver passes on to the workers it starts (a cluster's own is left alone)
PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
              "COMPRESS_PLUGINS", "COMPRESS_VERBOSE", "PYTHONPATH")
HEARTBEAT_S = 60.0  # how often the driver lists the builds still running


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs the ray package (pip install 'ray==2.60.0', "
                         "or the project's dev extras)") from None
    return ray


def connect(address: str | None):
    """Connect to the cluster at `address` ($RAY_ADDRESS when None), or start a local Ray
    instance; an already connected driver (a notebook, the tests) keeps its connection."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 logging_level="WARNING", runtime_env={"env_vars": env} if env else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local instance"
        raise CompressError(f"cannot connect to the Ray cluster at {where}: {exc}") from None
    return ray


def node_versions(ray) -> dict[str, dict[str, str]]:
    """Package versions on every live node that can run a build (has CPUs), by address.
    Nodes without CPUs (GPU nodes that only measure) may differ (onnxruntime-gpu): each
    measurement records its own versions."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def versions():
        return package_versions()

    refs = {}
    for node in ray.nodes():
        if not node.get("Alive") or not node.get("Resources", {}).get("CPU"):
            continue
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        refs[node.get("NodeManagerAddress") or node["NodeID"]] = versions.options(
            scheduling_strategy=strategy).remote()
    return dict(zip(refs, ray.get(list(refs.values()), timeout=300), strict=True))


def check_versions(ray) -> None:
    """Refuse a cluster whose nodes have other package versions than this driver."""
    mine = package_versions()
    bad = {node: version_mismatch(mine, theirs)
           for node, theirs in node_versions(ray).items() if theirs != mine}
    if bad:
        lines = "; ".join(f"node {node}: {', '.join(diff)}" for node, diff in sorted(bad.items()))
        raise CompressError("the Ray cluster's workers have other package versions than this "
                            f"driver (they are part of every cache key): {lines}. Install the "
                            "same versions on every node (docs/examples/kuberay/)")


def _build(job: BuildJob) -> BuildResult:
    return build_node(job)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address
        self._running: dict = {}  # ObjectRef -> (job, submitted at)
        self._remote = None

    def start(self, store, reporter):
        super().start(store, reporter)
        ray = self.ray = connect(self.address)
        check_versions(ray)
        self._remote = ray.remote(_build)
        res = ray.cluster_resources()
        reporter.step(f"Ray cluster: {len([n for n in ray.nodes() if n.get('Alive')])} "
                      f"node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU; "
                      f"cache {store.root}")

    def describe(self):
        return f"ray ({self.address or os.environ.get('RAY_ADDRESS') or 'local instance'})"

    def submit(self, job, resources):
        ref = self._remote.options(**resources.ray_options(), max_retries=0,
                                   name=f"build {job.node.step} {job.node.key[:8]}").remote(job)
        self._running[ref] = (job, time.time())

    @property
    def busy(self):
        return bool(self._running)

    def wait(self):
        ray = self.ray
        refs = list(self._running)
        while True:
            ready, _ = ray.wait(refs, num_returns=1, timeout=HEARTBEAT_S)
            if ready:
                break
            now = time.time()
            self.reporter.step("still building: " + ", ".join(
                f"{job.node.step} {job.node.key[:8]} ({now - t0:.0f} s)"
                for job, t0 in self._running.values()))
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        out = []
        for ref in ready:
            job, _ = self._running.pop(ref)
            try:
                res = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the task died: worker crash, node lost
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                res = BuildResult(key=job.node.key, error=f"stage {job.node.stage} failed: "
                                  f"its Ray task died ({type(exc).__name__}: {first})")
            for line in res.log:
                self.reporter.step(f"{job.node.step} on {res.host}: {line}")
            out.append(res)
        return out

    def cancel(self):
        for ref in list(self._running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001, S110 - best effort: the task may be gone
                pass
        self._running.clear()
