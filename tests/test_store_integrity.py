"""Issue 15: the cache keeps nothing stale or corrupt, and destructive commands touch only
what is theirs. Store-level tests: no model is trained here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from compress.artifacts import META_FILE
from compress.errors import InputError
from compress.store import MARKER, Store, flock
from tests.conftest import ROOT, run_cli

KEY = "0123456789abcdef0123"
KEY2 = "fedcba9876543210fedc"


def put(store: Store, key: str = KEY, payload: bytes = b"weights", **meta):
    with store.building(key) as out:
        (out / "model.bin").write_bytes(payload)
        (out / "sub").mkdir()
        (out / "sub" / "tokenizer.json").write_text("{}")
        return store.commit(out, {"key": key, "kind": "pytorch", **meta})


def warnings_of(store: Store) -> list[str]:
    seen: list[str] = []
    store.warn = seen.append
    return seen


def test_commit_records_a_sha256_of_every_file_and_get_verifies_it(tmp_path):
    store = Store(tmp_path / "c")
    art = put(store)
    assert set(art.meta["files"]) == {"model.bin", "sub/tokenizer.json"}
    assert len(art.meta["files"]["model.bin"]) == 64
    assert store.get(KEY) is not None
    (art.path / "model.bin").write_bytes(b"weightz")  # same size, other bytes
    seen = warnings_of(store)
    assert store.get(KEY) is None  # a miss, not a crash
    assert not store.artifact_dir(KEY).exists()
    assert len(list((store.root / "corrupt").iterdir())) == 1
    assert "model.bin does not match its sha256" in seen[0]


@pytest.mark.parametrize("meta_text", ["", "[1, 2]", "{\"key\": 1}", "\xff\xfe garbage",
                                       "{\"key\": \"" + KEY + "\", \"kind\": \"nope\"}"])
def test_an_unreadable_artifact_is_a_miss_moved_aside(tmp_path, meta_text):
    store = Store(tmp_path / "c")
    art = put(store)
    (art.path / META_FILE).write_bytes(meta_text.encode("latin-1"))
    seen = warnings_of(store)
    assert store.get(KEY) is None
    assert seen and "unusable" in seen[0] and "rebuilt" in seen[0]
    assert store.get(KEY) is None and len(seen) == 1  # moved: the second look is a plain miss


def test_metadata_without_its_weights_is_not_trusted(tmp_path):
    store = Store(tmp_path / "c")
    art = put(store)
    (art.path / "model.bin").unlink()  # what an in-place prune killed midway could leave
    assert store.get(KEY) is None


@pytest.mark.parametrize("text", ["", "nan", "[]", "{\"status\": \"ok\"", "\xff"])
def test_a_corrupt_measurement_is_a_miss(tmp_path, text):
    store = Store(tmp_path / "c")
    (store.root / "measurements" / f"{KEY}.json").write_bytes(text.encode("latin-1"))
    seen = warnings_of(store)
    assert store.get_measurement(KEY) is None
    assert seen and not (store.root / "measurements" / f"{KEY}.json").exists()


def test_measurement_outputs_are_verified(tmp_path):
    store = Store(tmp_path / "c")
    store.outputs_path(KEY).write_bytes(b"outputs")
    store.put_measurement(KEY, {"status": "ok", "quality": {"accuracy": float("nan")}})
    text = (store.root / "measurements" / f"{KEY}.json").read_text()
    assert "NaN" not in text and json.loads(text)["quality"]["accuracy"] is None
    assert store.get_measurement(KEY, with_outputs=True)["outputs_sha256"]
    store.outputs_path(KEY).write_bytes(b"0utputs")
    warnings_of(store)
    assert store.get_measurement(KEY, with_outputs=True) is None


def test_writes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    from compress import store as S

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(S.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    S.write_json(tmp_path / "x.json", {"a": 1})
    assert synced
    synced.clear()
    put(Store(tmp_path / "c"))
    assert len(synced) >= 3  # both files and the meta (and directories)


def test_prune_refuses_a_directory_that_is_not_a_cache(tmp_path):
    victim = tmp_path / "home"
    (victim / "tmp").mkdir(parents=True)
    (victim / "tmp" / "precious.txt").write_text("keep me")
    (victim / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a compress cache"):
        Store(victim)
    proc = run_cli("cache", "--prune", "--cache-dir", str(victim))
    assert proc.returncode == 2 and "not a compress cache" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (victim / "tmp" / "precious.txt").read_text() == "keep me"
    assert not (victim / MARKER).exists() and not (victim / "artifacts").exists()


def test_a_new_or_empty_dir_becomes_a_marked_cache(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "new"):
        Store(root)
        assert (root / MARKER).read_text().startswith("Signature: 8a477f597d28d172789f")
    legacy = tmp_path / "legacy"  # a cache made before the marker existed
    for sub in ("artifacts", "tmp", "locks"):
        (legacy / sub).mkdir(parents=True)
    Store(legacy)
    assert (legacy / MARKER).is_file()


def test_prune_renames_to_trash_then_deletes_and_removes_lock_files(tmp_path):
    store = Store(tmp_path / "c")
    put(store)
    with store.measuring(KEY):
        pass
    renamed = []
    real = os.rename

    def spy(a, b):
        renamed.append((str(a), str(b)))
        return real(a, b)

    from compress import store as S

    S.os.rename = spy
    try:
        result = store.prune()
    finally:
        S.os.rename = real
    assert result["artifacts_removed"] == 1
    assert any(a.endswith(f"artifacts/{KEY}") and "/trash/" in b for a, b in renamed)
    assert not list((store.root / "trash").iterdir())
    assert not list((store.root / "locks").iterdir())
    assert not list((store.root / "artifacts").iterdir())


def test_a_run_reference_without_time_does_not_crash(tmp_path):
    store = Store(tmp_path / "c")
    (store.root / "runs" / "x.json").write_text(json.dumps({"run_dir": str(tmp_path)}))
    (store.root / "runs" / "y.json").write_text("[]")
    seen = warnings_of(store)
    assert store.runs() == [] and len(seen) == 2
    assert store.usage()["runs"] == 0
    assert store.prune()["runs_kept"] == 0


def test_clean_stale_leaves_other_names_and_live_workspaces(tmp_path):
    store = Store(tmp_path / "c")
    (store.root / "tmp" / f"{KEY}-0000aaaa").mkdir()  # its builder died
    (store.root / "tmp" / f"{KEY2}-0000bbbb").mkdir()  # its builder is alive
    (store.root / "tmp" / "tmpxyz").mkdir()  # not ours to judge
    with flock(store.root / "locks" / f"{KEY2}.lock"):
        assert store.clean_stale() == 1
    assert sorted(p.name for p in (store.root / "tmp").iterdir()) == [
        f"{KEY2}-0000bbbb", "tmpxyz"]


def test_scratch_beside_the_output_lives_in_the_builders_own_workspace(tmp_path):
    store = Store(tmp_path / "c")
    with store.building(KEY) as out:
        scratch = out.parent / "ort-optimize-x"
        scratch.mkdir()
        assert out.parent.parent == store.root / "tmp"
        assert out.parent.name.startswith(KEY + "-")
        # another run's cleanup sees a live workspace and leaves the scratch alone
        assert Store(store.root).clean_stale() == 0
        assert scratch.is_dir()


def test_force_rebuild_waits_for_a_reader_of_the_old_artifact(tmp_path):
    store = Store(tmp_path / "c")
    old = put(store, payload=b"old")
    done = threading.Event()

    def rebuild():
        put(Store(store.root), payload=b"new")
        done.set()

    with store.reading(KEY):
        t = threading.Thread(target=rebuild)
        t.start()
        t.join(1.0)  # a negative check: the swap must not happen while the reader holds it
        assert not done.is_set()
        assert (old.path / "model.bin").read_bytes() == b"old"
    t.join(60)
    assert done.is_set()
    assert store.get(KEY) is not None
    assert (store.artifact_dir(KEY) / "model.bin").read_bytes() == b"new"
    assert not list((store.root / "trash").iterdir())


def test_verify_command_reports_and_moves_corrupt_entries(tmp_path):
    store = Store(tmp_path / "c")
    art = put(store)
    put(store, KEY2)
    (art.path / "sub" / "tokenizer.json").write_text("{\"x\": 1}")
    proc = run_cli("cache", "--verify", "--cache-dir", str(store.root))
    assert proc.returncode == 1, proc.stderr
    assert "1 artifact(s) and 0 measurement(s) corrupt" in proc.stdout
    assert "Traceback" not in proc.stderr
    proc = run_cli("cache", "--verify", "--cache-dir", str(store.root))
    assert proc.returncode == 0 and "0 artifact(s)" in proc.stdout


def test_workers_die_with_their_parent(tmp_path):
    """A killed parent takes its measurement worker with it (PR_SET_PDEATHSIG)."""
    code = (
        "import subprocess, sys\n"
        "from compress.measure.runner import die_with_parent\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " preexec_fn=die_with_parent)\n"
        "print(p.pid, flush=True)\n"
        "p.wait()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait(30)
    # the kernel delivers SIGKILL to the child; wait for it to be gone (reaped by init)
    import time

    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
