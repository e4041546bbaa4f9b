"""A run killed with SIGKILL in the middle of a stage leaves no half-written artifact, its
locks die with it, and the next run resumes from what was finished."""

from __future__ import annotations

import signal

from compress.artifacts import META_FILE
from compress.engine import prepare, run_recipe
from tests.conftest import kill_run_mid_stage


def test_kill_9_mid_stage_then_resume(write_recipe, tmp_path):
    path = write_recipe()
    cache = tmp_path / "cache"
    keys = {n.step: n.key for n in prepare(path).nodes}
    # killed once the export (second stage) has started writing its temp dir
    proc = kill_run_mid_stage(path, tmp_path / "run1", cache, keys["onnx"])
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
