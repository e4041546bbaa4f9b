"""Build one node: what runs where the stage runs (this process, or a Ray worker).

`build_node` takes a `BuildJob` (everything the stage needs, picklable: the node, its
input artifact, the data it reads) and returns a `BuildResult`. It holds the key's lock in
the store, takes the artifact from the cache if another builder made it meanwhile, runs
the stage into the builder's own temp dir and commits the output atomically into the store.
So the worker that built an artifact commits it, on the filesystem every node shares
(`docs/ARCHITECTURE.md`, "Running on a cluster"), and a killed builder leaves nothing
half-written.

A build that fails returns its reason (it does not raise): the engine fails the node's
descendants with it and goes on with its siblings, whichever executor ran it.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compress.artifacts import Artifact
from compress.errors import CompressError, StageError
from compress.plan import Node
from compress.provenance import package_versions
from compress.quiet import verbose
from compress.stages.base import PLUGINS_ENV, StageContext, get_stage


@dataclass
class BuildJob:
    """One node to build, with all it needs (sent to a Ray worker as is)."""

    node: Node
    source: Artifact
    store_root: str
    task: str
    seed: int
    data: dict[str, Any]  # role -> DataFrame, only the roles the stage reads
    columns: dict[str, tuple[str, str | None]]
    trust_remote_code: bool = False
    force: bool = False
    plugins: str = ""  # $COMPRESS_PLUGINS of the driver: the worker loads the same stages
    versions: dict[str, str] = field(default_factory=dict)  # the driver's (part of the key)


@dataclass
class BuildResult:
    key: str
    artifact: Artifact | None = None
    error: str | None = None  # why the build failed (None: built or cached)
    cached: bool = False  # another builder committed it meanwhile
    host: str = ""
    started: float = 0.0  # unix time
    finished: float = 0.0
    log: list[str] = field(default_factory=list)


def version_mismatch(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """'package: driver X, worker Y' for each package whose version differs."""
    return [f"{name}: driver {expected.get(name, 'absent')}, worker {actual.get(name, 'absent')}"
            for name in sorted(set(expected) | set(actual))
            if expected.get(name) != actual.get(name)]


def build_node(job: BuildJob, progress=None, log=None) -> BuildResult:
    """Build (or find) one node's artifact in the store at `job.store_root`."""
    from compress.store import Store

    node = job.node
    res = BuildResult(key=node.key, host=socket.gethostname(), started=time.time())
    lines = res.log
    say = log or lines.append
    try:
        if job.plugins:
            os.environ[PLUGINS_ENV] = job.plugins
        here = package_versions()
        if job.versions and here != job.versions:
            raise CompressError(f"this worker ({res.host}) has other package versions than "
                                "the driver, and versions are part of the cache keys: "
                                + "; ".join(version_mismatch(job.versions, here)))
        store = Store(job.store_root)
        stage = get_stage(node.stage)
        ctx = StageContext(task=job.task, seed=job.seed, data=job.data, columns=job.columns,
                           trust_remote_code=job.trust_remote_code, progress=progress,
                           log=say, checkpoints=store.checkpoints(
                               node.key, f"{node.step} ({node.stage})"))
        with store.building(node.key) as tmp:
            cached = store.get(node.key)  # another builder may have made it meanwhile
            if cached is not None and not job.force:
                res.artifact, res.cached = cached, True
                return res
            t0 = time.perf_counter()
            with store.reading(node.parent.key):  # a --force rebuild of the input waits
                checks = stage.run(ctx, job.source, node.config, tmp)
            meta = {
                "key": node.key, "kind": node.kind.value, "stage": node.stage,
                "step": node.step, "config": node.config_dict(), "parent": node.parent.key,
                "format": stage.produces_format(node.config),
                "data": node.data_fingerprints, "properties": node.properties,
                "task": job.task, "seed": job.seed if stage.uses_seed else None,
                "stage_version": stage.version, "versions": here,
                "wall_time_s": round(time.perf_counter() - t0, 3), "checks": checks,
                "built_on": res.host,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            res.artifact = store.commit(tmp, meta)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed stage must not stop the others
        what = (str(exc) if isinstance(exc, (StageError, CompressError))
                else f"{type(exc).__name__}: {exc}")
        res.error = f"stage {node.stage} failed: {what}"
        if not isinstance(exc, CompressError) and verbose():
            say(traceback.format_exc())
    finally:
        res.finished = time.time()
    return res


def job_for(node: Node, source: Artifact, plan, store_root: Path, force: bool) -> BuildJob:
    """The job that builds `node` from `source` under `plan`'s recipe and data."""
    recipe = plan.recipe
    roles = get_stage(node.stage).data_roles(node.config)
    return BuildJob(
        node=node, source=source, store_root=str(store_root), task=recipe.task,
        seed=recipe.seed, data={r: plan.data[r] for r in roles if r in plan.data},
        columns={r: (recipe.data[r].text_column, recipe.data[r].label_column)
                 for r in roles if r in plan.data},
        trust_remote_code=recipe.model.trust_remote_code, force=force,
        plugins=os.environ.get(PLUGINS_ENV, ""), versions=package_versions())
