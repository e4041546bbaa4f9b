"""Measuring candidates on the target GPUs of a Ray cluster (the suite's `measure_on:`), and
calibrating a GPU model there (`compress calibrate --on T4 --executor ray`).

- Each (candidate, target) measurement is a Ray task asking for one GPU and the whole
  `accelerator_type:<name>` resource that Ray sets (to 1) on a node of that GPU model. The
  name comes from the catalog's `ray_accelerator` (one source of truth). Asking for all of
  it means a node runs one measurement at a time: latency is never timed beside another
  measurement. The task asks for no CPU, so GPU nodes started with `num-cpus: 0` take
  measurements and never stage builds (docs/examples/kuberay/).
- The worker checks the GPU it got before it measures: a CUDA device must be there, its
  name must be the requested catalog target (`calibrate_gpu.match_gpu`, which tells an
  A100 80GB from a 40GB one where Ray's resource cannot) and its compute capability the
  target's. Otherwise it refuses, with the reason, and no figure is made: a figure is never
  labelled with a GPU it did not run on.
- Measured figures replace the projections for those pairs in the cost table and the
  recommendation (`target_curves`), labelled with the GPU's reported name and driver. The
  pairs not measured (refused, failed) stay projected and are listed apart.
The results are written to the run directory as `target_measurements.json`.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

from compress.errors import CompressError, InputError, MeasureError
from compress.records import Measurement, Record

FILE = "target_measurements.json"
SCHEMA_VERSION = 1


class TargetMeasurement(Record):
    """One candidate on one target GPU: measured there, or why not."""

    candidate: str
    target: str
    status: Literal["measured", "refused", "failed"]
    reason: str | None = None
    gpu_name: str | None = None  # as the device reports it
    compute_capability: str | None = None
    driver: str | None = None
    host: str | None = None
    measurement: Measurement | None = None

    def label(self) -> str:
        return (f"measured on {self.gpu_name} (cc {self.compute_capability}, driver "
                f"{self.driver or 'unknown'}, node {self.host})")


class TargetMeasurements(Record):
    schema_version: int = SCHEMA_VERSION
    requested: list[str]
    results: list[TargetMeasurement] = []

    def measured(self) -> list[TargetMeasurement]:
        return [r for r in self.results if r.status == "measured"]

    def still_projected(self) -> list[TargetMeasurement]:
        return [r for r in self.results if r.status != "measured"]


def ray_resource(target) -> str:
    """Ray's resource for nodes of this catalog GPU."""
    if target.kind != "gpu" or not target.ray_accelerator:
        raise InputError(f"target {target.name!r} has no ray_accelerator in the catalog: only "
                         "GPU targets with one can be measured on a Ray cluster")
    return f"accelerator_type:{target.ray_accelerator}"


def check_targets(names: list[str], catalog, where: str = "measure_on") -> list:
    """The catalog targets named, each with a Ray accelerator type (InputError otherwise)."""
    out = []
    for name in names:
        if name not in catalog.targets:
            gpus = [n for n, t in catalog.targets.items() if t.ray_accelerator]
            raise InputError(f"{where}: unknown target {name!r}; expected one of: "
                             f"{', '.join(gpus)}")
        ray_resource(catalog[name])
        out.append(catalog[name])
    return out


def gpu_check(target_name: str, compute_capability: float | None) -> dict:
    """On the worker: the GPU at hand, and why it is not the target (`refused`) if so."""
    import torch

    from compress.hardware.calibrate_gpu import _driver_version, match_gpu
    from compress.hardware.catalog import load_catalog

    host = platform.node()
    want = f"{target_name} (compute capability {compute_capability})"
    if not torch.cuda.is_available():
        return {"host": host, "refused": f"node {host} has no CUDA device, though it "
                f"advertises the accelerator resource; requested {want}"}
    props = torch.cuda.get_device_properties(0)
    cc = f"{props.major}.{props.minor}"
    info = {"host": host, "gpu_name": props.name, "compute_capability": cc,
            "driver": _driver_version()}
    found = match_gpu(props.name, load_catalog())
    if found != target_name or (compute_capability is not None
                                and abs(float(cc) - compute_capability) > 1e-6):
        info["refused"] = (f"node {host} has {props.name} (compute capability {cc}, catalog "
                           f"target {found or 'none'}), not the requested {want}")
    return info


def _measure_task(target_name: str, cc: float | None, artifact, suite, payload: dict) -> dict:
    """On the worker: check the GPU, then measure the artifact on it."""
    from compress.measure.runner import measure

    info = gpu_check(target_name, cc)
    if "refused" in info:
        return info
    cuda = suite.model_copy(update={"latency": suite.latency.model_copy(
        update={"device": "cuda"})})
    try:
        info["measurement"] = measure(artifact, cuda, payload, None, None)
    except MeasureError as exc:
        info["failed"] = f"measurement failed on {info['gpu_name']}: {exc}"
    return info


def _nodes_with(ray, resource: str) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive") and resource in n.get("Resources", {})]


def measure_on_targets(plan, built, catalog, address: str | None = None,
                       reporter=None) -> TargetMeasurements:
    """Measure every built candidate on each `measure_on` target of the suite."""
    from compress.measure.runner import eval_payload
    from compress.ray_executor import connect, import_ray

    suite = plan.suite
    out = TargetMeasurements(requested=list(suite.measure_on))
    targets = check_targets(suite.measure_on, catalog, "suite measure_on")
    import_ray()
    ray = connect(address)
    remote = ray.remote(_measure_task)
    payload = eval_payload(suite.task, plan.eval_data, suite.dataset)
    pending = {}
    for t in targets:
        resource = ray_resource(t)
        nodes = _nodes_with(ray, resource)
        for cand in plan.candidates:
            base = {"candidate": cand.name, "target": t.name}
            if cand.node.key not in built.artifacts:
                out.results.append(TargetMeasurement(**base, status="failed",
                                                     reason="the candidate was not built"))
            elif not nodes:
                out.results.append(TargetMeasurement(**base, status="refused", reason=(
                    f"no node of the Ray cluster has {resource}")))
            else:
                if reporter:
                    reporter.step(f"measuring {cand.name} on {t.name} ({resource})")
                # a GPU where the nodes declare one; without, the worker finds none: refused
                gpus = 1 if any(n["Resources"].get("GPU") for n in nodes) else 0
                ref = remote.options(num_cpus=0, num_gpus=gpus, resources={resource: 1},
                                     max_retries=0, name=f"measure {cand.name} on {t.name}"
                                     ).remote(t.name, t.compute_capability,
                                              built.artifacts[cand.node.key], suite, payload)
                pending[ref] = base
    for ref, base in pending.items():
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            out.results.append(TargetMeasurement(**base, status="failed", reason=(
                f"its Ray task died: {type(exc).__name__}")))
            continue
        fields = {k: info.get(k) for k in ("gpu_name", "compute_capability", "driver", "host")}
        if "refused" in info:
            out.results.append(TargetMeasurement(**base, **fields, status="refused",
                                                 reason=info["refused"]))
        elif "failed" in info:
            out.results.append(TargetMeasurement(**base, **fields, status="failed",
                                                 reason=info["failed"]))
        else:
            m = Measurement.model_validate({**info["measurement"], "cached": False})
            out.results.append(TargetMeasurement(**base, **fields, status="measured",
                                                 measurement=m))
        if reporter and out.results[-1].status != "measured":
            reporter.warn(f"{base['candidate']} on {base['target']}: not measured "
                          f"({out.results[-1].reason}); it stays projected")
    return out


def write(run_dir: Path, result: TargetMeasurements) -> None:
    from compress.fsutil import write_json

    write_json(Path(run_dir) / FILE, result.model_dump(mode="json"))


def read(run_dir: Path) -> TargetMeasurements | None:
    """The run's target measurements, or None when it measured on none."""
    import json

    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r}, expected "
                             f"{SCHEMA_VERSION}")
        return TargetMeasurements.model_validate(data)
    except ValueError as exc:
        raise InputError(f"{path}: not a target measurements file ({exc})") from None


def target_curves(result: TargetMeasurements | None) -> dict[tuple[str, str], dict]:
    """(candidate, target) -> the measured service curve, for `decide.cost.cost_table`."""
    out = {}
    for r in result.measured() if result else []:
        lat = [x for x in r.measurement.latency if x.phase in ("forward", "prefill")]
        seq = lat[0].seq_len if lat else None
        rows = sorted((x for x in lat if x.seq_len == seq), key=lambda x: x.batch_size)
        dec = {x.batch_size: x.p50_ms for x in r.measurement.latency if x.phase == "decode"}
        if not rows:
            continue
        sizes = [x.batch_size for x in rows]
        out[(r.candidate, r.target)] = {
            "batch_sizes": sizes, "p50": [x.p50_ms for x in rows],
            "p95": [x.p95_ms for x in rows],
            "decode_p50": [dec[b] for b in sizes] if all(b in dec for b in sizes) else None,
            "label": r.label(),
            "memory_gb": (r.measurement.memory.cuda_peak_allocated_bytes or 0) / 1e9 or None}
    return out


def calibrate_on(target_name: str | None, address: str | None = None, catalog=None,
                 executor: str | None = "ray"):
    """Run the GPU calibration (hardware.calibrate_gpu) on a node of this GPU model; the
    result is that model's class. Refuses (CompressError) when the node's GPU is another."""
    from compress.hardware.catalog import load_catalog
    from compress.ray_executor import connect

    if not target_name or executor != "ray":
        raise InputError("--on TARGET and --executor ray go together: calibrate a GPU model "
                         "on a node of a Ray cluster")

    catalog = catalog or load_catalog()
    (target,) = check_targets([target_name], catalog, "--on")
    resource = ray_resource(target)
    ray = connect(address)
    nodes = _nodes_with(ray, resource)
    if not nodes:
        raise CompressError(f"no node of the Ray cluster has {resource}: cannot calibrate "
                            f"{target.name} there")
    gpus = 1 if any(n["Resources"].get("GPU") for n in nodes) else 0
    info = ray.get(ray.remote(_calibrate_task).options(
        num_cpus=0, num_gpus=gpus, resources={resource: 1}, max_retries=0,
        name=f"calibrate {target.name}").remote(target.name, target.compute_capability))
    if "refused" in info:
        raise CompressError(f"calibration on {target.name} refused: {info['refused']}")
    return info["calibration"]


def _calibrate_task(target_name: str, cc: float | None) -> dict:
    info = gpu_check(target_name, cc)
    if "refused" in info:
        return info
    from compress.hardware.calibrate_gpu import calibrate_cuda

    info["calibration"] = calibrate_cuda(target=target_name)
    return info
