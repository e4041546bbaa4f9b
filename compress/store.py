"""The content-addressed artifact store (the cache).

Layout under the cache dir:
  CACHEDIR.TAG            marks the directory as a compress cache (and as a cache to backup
                          tools); pruning and every other destructive command refuse a
                          directory without it
  artifacts/<key>/        a built model dir with compress-artifact.json (its metadata,
                          including the sha256 of every file)
  measurements/<key>.json one measurement of one artifact under one settings+machine key,
                          with the model outputs beside it (<key>.npz, digest in the JSON)
  runs/<id>.json          which keys a run directory refers to (pruning keeps those)
  tmp/<key>-<id>/         one builder's workspace: out/ becomes the artifact, anything else
                          is the stage's scratch space; removed when its builder is gone
  checkpoints/<key>/      training checkpoints of a build (compress.checkpoints): kept when
                          a build is killed, so its re-run resumes; removed when the key's
                          artifact commits or by `prune_checkpoints`, never by other cleanup
  trash/                  what prune or a --force rebuild removes, renamed here first
  corrupt/                entries that could not be read or failed their digests
  locks/                  flocks: <key>.lock (building), <key>.use.lock (reading),
                          m-<key>.lock (measuring); store.lock for the whole store

Writes are atomic (write in tmp/, fsync, then rename), so a run killed at any point leaves
no half-written artifact. Locks are `fcntl.flock`, released by the kernel when their holder
dies. A run or an export holds the store lock shared; `prune` takes it exclusive, and only
then deletes lock files. Every cache hit is verified against the digests recorded at
commit: an entry that is unreadable or does not match is moved to corrupt/ with a warning
and treated as a miss, so a cache restored by CI is checked when it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from platformdirs import user_cache_dir

from compress.artifacts import META_FILE, Artifact
from compress.checkpoints import CheckpointArea, list_areas
from compress.errors import CompressError, InputError
from compress.fsutil import (  # noqa: F401 - re-exported: compress.store is where callers look
    atomic_write_bytes,
    atomic_write_text,
    file_digests,
    flock,
    flock_dir,
    fsync_dir,
    fsync_file,
    fsync_tree,
    sha256_file,
    strict_json,
    verify_files,
    write_json,
)

CACHE_ENV = "COMPRESS_CACHE_DIR"
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# This directory is a compress artifact cache (https://bford.info/cachedir/).\n"
               "# `compress cache --prune` and `--verify` act only where this file is.\n")
LAYOUT = ("artifacts", "measurements", "runs", "tmp", "locks", "trash", "corrupt",
          "checkpoints")
_WORKSPACE = re.compile(r"^(?P<key>[0-9a-f]{20})-[0-9a-f]{8}$")


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("compress"))


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _is_cache_layout(root: Path) -> bool:
    """A directory that only holds what a compress cache holds (one made before the marker
    file existed)."""
    names = {p.name for p in root.iterdir()}
    return "artifacts" in names and names <= set(LAYOUT) | {"store.lock", MARKER}


class Store:
    def __init__(self, root: str | Path | None = None,
                 warn: Callable[[str], None] | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.warn = warn or _stderr_warning
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"cache dir {self.root}: exists and is not a directory")
        if not (self.root / MARKER).is_file():
            if self.root.is_dir() and any(self.root.iterdir()) \
                    and not _is_cache_layout(self.root):
                raise InputError(f"cache dir {self.root}: not empty and not a compress cache "
                                 f"(no {MARKER}); refusing to use it. Choose a new or empty "
                                 "directory")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.root / MARKER, MARKER_TEXT)
            except OSError as exc:
                raise InputError(f"cache dir {self.root}: cannot create it "
                                 f"({exc.strerror})") from None
        for sub in LAYOUT:
            (self.root / sub).mkdir(exist_ok=True)

    def _lock(self, name: str) -> Path:
        return self.root / "locks" / name

    def _aside(self, path: Path, where: str) -> Path:
        dest = self.root / where / f"{path.name}.{uuid.uuid4().hex[:8]}"
        os.rename(path, dest)
        return dest

    def quarantine(self, path: Path, reason: str) -> None:
        """Move an unreadable or corrupt entry to corrupt/ (a cache miss), with a warning."""
        try:
            dest = self._aside(path, "corrupt")
        except FileNotFoundError:
            return  # another process moved or replaced it meanwhile
        self.warn(f"cache entry {path.relative_to(self.root)} is unusable ({reason}); moved "
                  f"to {dest}, it will be rebuilt")

    # ------------------------------------------------------------ artifacts
    def artifact_dir(self, key: str) -> Path:
        return self.root / "artifacts" / key

    def get(self, key: str, verify: bool = True) -> Artifact | None:
        """The stored artifact, verified against its digests; None on a miss. An unreadable
        or corrupt entry is moved aside (with a warning) and is a miss."""
        path = self.artifact_dir(key)
        if not path.exists():
            return None
        try:
            art = Artifact.read(path)
            if art.key != key:
                raise ValueError(f"its metadata is for key {art.key}")
            problems = verify_files(path, art.meta.get("files")) if verify else []
            if problems:
                raise ValueError("; ".join(problems[:3]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.quarantine(path, str(exc) or type(exc).__name__)
            return None
        return art

    @contextlib.contextmanager
    def building(self, key: str) -> Iterator[Path]:
        """Hold the key's lock and give an empty dir to build into.

        The caller writes the model there and then calls `commit`. The dir is `out/` inside
        the builder's own workspace `tmp/<key>-<id>/`, so scratch space a stage makes beside
        its output (`out.parent`) belongs to this builder and goes with it. Leftovers of a
        killed builder of the same key are removed first (its lock died with it).
        """
        with flock(self._lock(f"{key}.lock")):
            for stale in (self.root / "tmp").glob(f"{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            work = self.root / "tmp" / f"{key}-{uuid.uuid4().hex[:8]}"
            work.mkdir()
            (work / "out").mkdir()
            try:
                yield work / "out"
            finally:
                shutil.rmtree(work, ignore_errors=True)

    @contextlib.contextmanager
    def reading(self, key: str) -> Iterator[None]:
        """Hold an artifact for reading: a --force rebuild waits to swap it out meanwhile."""
        with flock(self._lock(f"{key}.use.lock"), exclusive=False):
            yield

    def commit(self, out: Path, meta: dict) -> Artifact:
        """Record every file's sha256 in the metadata (written last), fsync, then move the
        whole dir into place in one rename. A --force rebuild swaps the new dir in once no
        reader holds the old one, and renames the old one to trash/ before deleting it."""
        key = meta["key"]
        meta = {**meta, "files": file_digests(out)}
        (out / META_FILE).write_text(strict_json(meta) + "\n", encoding="utf-8")
        fsync_tree(out)
        final = self.artifact_dir(key)
        if final.exists():
            with flock(self._lock(f"{key}.use.lock")):
                old = self._aside(final, "trash")
                os.rename(out, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(out, final)
        fsync_dir(final.parent)
        self._drop_checkpoints(key)
        return Artifact.read(final)

    # ------------------------------------------------------------ training checkpoints
    def checkpoints(self, key: str, label: str = "") -> CheckpointArea:
        """Where the build of `key` checkpoints its training (the builder holds its lock)."""
        return CheckpointArea(self.root / "checkpoints" / key, label)

    def _drop_checkpoints(self, key: str) -> None:
        area = self.root / "checkpoints" / key
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._aside(area, "trash"), ignore_errors=True)

    def checkpoint_areas(self) -> list[dict]:
        """Checkpoints left in the cache, per key (compress.checkpoints.list_areas), with
        `live`: its build is running now (holds the key's lock)."""
        areas = list_areas(self.root / "checkpoints")
        for a in areas:
            with flock(self._lock(f"{a['key']}.lock"), blocking=False) as free:
                a["live"] = not free
        return areas

    def prune_checkpoints(self, dry_run: bool = False) -> dict:
        """Remove the checkpoints of builds not running now (their re-runs then start
        training afresh); a live build's are left alone."""
        removed, freed = 0, 0
        for a in list_areas(self.root / "checkpoints"):
            with flock(self._lock(f"{a['key']}.lock"), blocking=False) as free:
                if free:
                    removed += 1
                    freed += a["bytes"]
                    if not dry_run:
                        self._drop_checkpoints(a["key"])
        return {"checkpoints_removed": removed, "bytes_freed": freed, "dry_run": dry_run}

    def clean_stale(self) -> int:
        """Remove builder workspaces whose builder is gone (its key lock is free), and the
        checkpoints of keys whose artifact committed (a kill between the two left them);
        returns how many workspaces went."""
        for area in (self.root / "checkpoints").iterdir():
            if self.artifact_dir(area.name).is_dir():
                with flock(self._lock(f"{area.name}.lock"), blocking=False) as free:
                    if free:  # not a --force rebuild of it in progress
                        self._drop_checkpoints(area.name)
        removed = 0
        for work in (self.root / "tmp").iterdir():
            m = _WORKSPACE.match(work.name)
            if not m:
                continue  # not a workspace of this store: leave it alone
            with flock(self._lock(f"{m['key']}.lock"), blocking=False) as free:
                if free:
                    shutil.rmtree(work, ignore_errors=True)
                    removed += 1
        return removed

    # ------------------------------------------------------------ measurements
    def _measurement_path(self, key: str) -> Path:
        return self.root / "measurements" / f"{key}.json"

    @contextlib.contextmanager
    def measuring(self, key: str) -> Iterator[None]:
        """One measurer per measurement key at a time."""
        with flock(self._lock(f"m-{key}.lock")):
            yield

    def get_measurement(self, key: str, with_outputs: bool = False) -> dict | None:
        """A stored measurement, or None. With `with_outputs`, its model outputs must be
        there and match their digest too. Anything unreadable is moved aside: a miss."""
        path = self._measurement_path(key)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("status") != "ok":
                raise ValueError("not a measurement record")
            if with_outputs:
                digest = data.get("outputs_sha256")
                outputs = self.outputs_path(key)
                if not outputs.is_file():
                    return None  # measured without keeping outputs: measure again
                if digest is None or sha256_file(outputs) != digest:
                    self.quarantine(outputs, "outputs do not match their sha256")
                    return None
        except (OSError, ValueError) as exc:
            self.quarantine(path, str(exc) or type(exc).__name__)
            return None
        return data

    def put_measurement(self, key: str, result: dict) -> None:
        outputs = self.outputs_path(key)
        if outputs.is_file():
            fsync_file(outputs)
            result = {**result, "outputs_sha256": sha256_file(outputs)}
        write_json(self._measurement_path(key), result)

    def outputs_path(self, key: str) -> Path:
        """Where a measurement keeps the model's outputs (the reference for fidelity)."""
        return self.root / "measurements" / f"{key}.npz"

    # ------------------------------------------------------------ runs, usage, pruning
    def shared_lock(self):
        return flock(self.root / "store.lock", exclusive=False)

    def register_run(self, run_dir: Path, keys: list[str], measurement_keys: list[str]) -> None:
        run_dir = run_dir.resolve()
        ref = self.root / "runs" / f"{_path_id(run_dir)}.json"
        write_json(ref, {"run_dir": str(run_dir), "artifacts": sorted(set(keys)),
                         "measurements": sorted(set(measurement_keys)), "time": time.time()})

    def runs(self) -> list[dict]:
        """Run references, newest first; a malformed one is skipped with a warning."""
        out = []
        for f in sorted((self.root / "runs").glob("*.json")):
            try:
                ref = json.loads(f.read_text(encoding="utf-8"))
                ok = (isinstance(ref, dict) and isinstance(ref.get("run_dir"), str)
                      and isinstance(ref.get("time"), (int, float))
                      and all(isinstance(ref.get(k, []), list)
                              for k in ("artifacts", "measurements")))
                if not ok:
                    raise ValueError("expected run_dir, time, artifacts and measurements")
            except (ValueError, OSError) as exc:
                self.warn(f"{f}: not a run reference ({exc}); ignored")
                continue
            ref["ref_file"] = str(f)
            ref["exists"] = Path(ref["run_dir"]).is_dir()
            out.append(ref)
        return sorted(out, key=lambda r: r["time"], reverse=True)

    def usage(self) -> dict:
        arts = [p for p in (self.root / "artifacts").iterdir() if p.is_dir()]
        meas = list((self.root / "measurements").glob("*.json"))
        return {"root": str(self.root), "artifacts": len(arts),
                "artifact_bytes": sum(_dir_bytes(p) for p in arts),
                "measurements": len(meas), "runs": len(self.runs()),
                "tmp_bytes": _dir_bytes(self.root / "tmp"),
                "corrupt": len(list((self.root / "corrupt").iterdir()))}

    def verify(self) -> dict:
        """Check every artifact against its digests and every measurement's readability;
        what fails is moved to corrupt/ (with a warning). Takes the store lock shared."""
        with self.shared_lock():
            keys = sorted(p.name for p in (self.root / "artifacts").iterdir())
            bad_art = [k for k in keys if self.get(k) is None]
            mkeys = sorted(p.stem for p in (self.root / "measurements").glob("*.json"))
            bad_meas = [k for k in mkeys
                        if self.get_measurement(k, with_outputs=self.outputs_path(k).exists())
                        is None]
        return {"artifacts": len(keys), "artifacts_corrupt": bad_art,
                "measurements": len(mkeys), "measurements_corrupt": bad_meas}

    def prune(self, keep_runs: int | None = None, dry_run: bool = False) -> dict:
        """Remove artifacts and measurements that no kept run refers to.

        A run is kept while its directory exists (and, with keep_runs, if it is among the
        newest N). Takes the store lock exclusively: no run or export is in progress
        meanwhile. Each entry is renamed to trash/ first and deleted from there, so a prune
        killed midway leaves whole entries or none; lock files go too (no one holds them).
        """
        with flock(self.root / "store.lock", exclusive=True, blocking=False) as got:
            if not got:
                raise CompressError("a run or an export is using the cache; prune when it "
                                    "has finished")
            refs = self.runs()
            kept = [r for r in refs if r["exists"]]
            if keep_runs is not None:
                kept = kept[:keep_runs]
            keep_art = {k for r in kept for k in r["artifacts"]}
            keep_meas = {k for r in kept for k in r["measurements"]}
            removed_art = [p for p in (self.root / "artifacts").iterdir()
                           if p.is_dir() and p.name not in keep_art]
            removed_meas = [p for p in (self.root / "measurements").iterdir()
                            if p.name.split(".")[0] not in keep_meas]
            leftovers = [p for sub in ("tmp", "trash", "corrupt")
                         for p in (self.root / sub).iterdir()]
            freed = sum(_dir_bytes(p) for p in removed_art + removed_meas + leftovers)
            if not dry_run:
                for p in removed_art + removed_meas + [p for p in leftovers
                                                        if p.parent.name != "trash"]:
                    with contextlib.suppress(FileNotFoundError):
                        self._aside(p, "trash")
                for r in refs:
                    if r not in kept:
                        Path(r["ref_file"]).unlink(missing_ok=True)
                for p in (self.root / "trash").iterdir():
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                for p in (self.root / "locks").iterdir():  # safe: no one holds them now
                    p.unlink(missing_ok=True)
            return {"artifacts_removed": len(removed_art),
                    "measurements_removed": sum(p.suffix == ".json" for p in removed_meas),
                    "bytes_freed": freed,
                    "runs_kept": len(kept), "dry_run": dry_run}


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _path_id(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]
