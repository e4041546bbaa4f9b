"""A run killed with SIGKILL in the middle of a stage leaves no half-written artifact, its
locks die with it, and the next run resumes from what was finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from compress.artifacts import META_FILE
from compress.engine import prepare, run_recipe
from tests.conftest import ROOT


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    """Poll a condition on the filesystem (no fixed sleep stands in for it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (exit {proc.returncode}) before the condition held:"
                                 f" {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run to reach the stage")
        time.sleep(0.05)


def test_kill_9_mid_stage_then_resume(write_recipe, tmp_path):
    path = write_recipe()
    cache = tmp_path / "cache"
    keys = {n.step: n.key for n in prepare(path).nodes}
    proc = subprocess.Popen([sys.executable, "-m", "compress", "run", str(path), "--out",
                             str(tmp_path / "run1")], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COMPRESS_CACHE_DIR": str(cache)})
    try:
        # kill once the export (second stage) has started writing its temp dir
        wait_for(lambda: any((cache / "tmp").glob(f"{keys['onnx']}-*")), 300, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    artifacts = {a.name for a in (cache / "artifacts").iterdir()}
    assert artifacts == {keys["teacher"]}  # the finished stage, and nothing half-written
    assert (cache / "artifacts" / keys["teacher"] / META_FILE).is_file()
    assert any((cache / "tmp").glob(f"{keys['onnx']}-*"))  # partial output stays outside
    assert not (tmp_path / "run1" / "results.json").exists()

    # resume: the teacher is reused; the export's lock died with its holder (or this would
    # block) and its partial output is cleaned up
    run = run_recipe(path, out_dir=tmp_path / "run2", cache_dir=cache)
    assert run.ok
    assert run.stats["stage_cache_hits"] == 1 and run.stats["stage_executions"] == 2
    assert not list((cache / "tmp").iterdir())
    assert all((cache / "artifacts" / k / META_FILE).is_file() for k in keys.values())


def test_stale_temp_dirs_of_dead_builders_are_cleaned(tmp_path):
    from compress.store import Store, flock

    store = Store(tmp_path / "c")
    dead, live = "d" * 20, "e" * 20  # artifact keys are 20 hex digits
    (store.root / "tmp" / f"{dead}-00001234").mkdir()
    (store.root / "tmp" / f"{live}-00005678").mkdir()
    with flock(store.root / "locks" / f"{live}.lock"):
        assert store.clean_stale() == 1
        assert [p.name for p in (store.root / "tmp").iterdir()] == [f"{live}-00005678"]
