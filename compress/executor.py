"""Executors: where stage builds run.

The engine (`compress.engine.build_all`) schedules the plan as a DAG: a node is submitted
once its input is built, so independent branches and sweep variants may run at once. An
executor runs the submitted builds (`compress.build.build_node`) and hands back results as
they finish:

- `LocalExecutor` (the default) builds each job in this process as it is submitted, one
  at a time, with the stages' own progress bars;
- `compress.ray_executor.RayExecutor` (`--executor ray`) runs each build as a Ray task
  with the stage's resources, many at once across a cluster.

Both run the same `build_node`, so a stage behaves the same, and a failed build is a
result with a reason, whichever ran it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from compress.build import BuildJob, BuildResult, build_node

if TYPE_CHECKING:
    from compress.stages.base import Resources
    from compress.store import Store

class Executor(ABC):
    """Runs build jobs; `wait` returns those that finished (at least one)."""

    name = "executor"

    def start(self, store: Store, reporter) -> None:
        """Connect and check (called once before the first submit)."""
        self.reporter = reporter

    @abstractmethod
    def submit(self, job: BuildJob, resources: Resources) -> None: ...

    @abstractmethod
    def wait(self) -> list[BuildResult]:
        """Block until at least one submitted build finished; return the finished ones."""

    @property
    @abstractmethod
    def busy(self) -> bool:
        """Whether any submitted build has not been returned by `wait` yet."""

    def cancel(self) -> None:  # noqa: B027 - nothing to stop by default
        """Stop what is still running (the driver was interrupted)."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what `start` took."""

    def describe(self) -> str:
        return self.name


class LocalExecutor(Executor):
    """Builds in this process, one at a time, as each job is submitted."""

    name = "local"

    def __init__(self):
        self._done: list[BuildResult] = []

    def submit(self, job, resources):
        rep = getattr(self, "reporter", None)
        self._done.append(build_node(job, progress=rep.progress if rep else None,
                                     log=rep.step if rep else None))

    def wait(self):
        done, self._done = self._done, []
        return done

    @property
    def busy(self):
        return bool(self._done)
