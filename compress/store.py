"""The content-addressed artifact store (the cache).

Layout under the cache dir:
  artifacts/<key>/        a built model dir with compress-artifact.json (its metadata)
  measurements/<key>.json one measurement of one artifact under one settings+machine key
  runs/<id>.json          which keys a run directory refers to (pruning keeps those)
  tmp/                    stage output being written; renamed into artifacts/ when complete
  locks/                  one flock per key being built; `store.lock` for the whole store

Writes are atomic (write in tmp/, then rename), so a run killed at any point leaves no
half-written artifact. Locks are `fcntl.flock`, released by the kernel when their holder
dies. A run holds the store lock shared; `prune` takes it exclusive.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from platformdirs import user_cache_dir

from compress.artifacts import META_FILE, Artifact

CACHE_ENV = "COMPRESS_CACHE_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("compress"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old content or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def flock(path: Path, exclusive: bool = True, blocking: bool = True) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fh, flags | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        for sub in ("artifacts", "measurements", "runs", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ artifacts
    def artifact_dir(self, key: str) -> Path:
        return self.root / "artifacts" / key

    def get(self, key: str) -> Artifact | None:
        path = self.artifact_dir(key)
        return Artifact.read(path) if (path / META_FILE).is_file() else None

    @contextlib.contextmanager
    def building(self, key: str) -> Iterator[Path]:
        """Hold the key's lock and give an empty temp dir to build into.

        The caller writes the model there and then calls `commit`. Leftovers of a killed
        builder of the same key are removed first (its lock died with it).
        """
        with flock(self.root / "locks" / f"{key}.lock"):
            for stale in (self.root / "tmp").glob(f"{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = self.root / "tmp" / f"{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                yield tmp
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def commit(self, tmp: Path, meta: dict) -> Artifact:
        """Write the metadata last, then move the whole dir into place in one rename."""
        key = meta["key"]
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        final = self.artifact_dir(key)
        if final.exists():  # --force rebuild: swap the old one out first
            trash = self.root / "tmp" / f"old-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
        return Artifact.read(final)

    def clean_stale(self) -> int:
        """Remove temp dirs whose builder is gone (its key lock is free); returns how many."""
        removed = 0
        for tmp in (self.root / "tmp").iterdir():
            key = tmp.name.removeprefix("old-").rsplit("-", 1)[0]
            with flock(self.root / "locks" / f"{key}.lock", blocking=False) as free:
                if free:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed += 1
        return removed

    # ------------------------------------------------------------ measurements
    def get_measurement(self, key: str) -> dict | None:
        path = self.root / "measurements" / f"{key}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def put_measurement(self, key: str, result: dict) -> None:
        write_json(self.root / "measurements" / f"{key}.json", result)

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
        out = []
        for f in sorted((self.root / "runs").glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                ref = json.loads(f.read_text())
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
                "tmp_bytes": _dir_bytes(self.root / "tmp")}

    def prune(self, keep_runs: int | None = None, dry_run: bool = False) -> dict:
        """Remove artifacts and measurements that no kept run refers to.

        A run is kept while its directory exists (and, with keep_runs, if it is among the
        newest N). Takes the store lock exclusively: no run is in progress meanwhile.
        """
        with flock(self.root / "store.lock", exclusive=True, blocking=False) as got:
            if not got:
                from compress.errors import CompressError

                raise CompressError("a run is using the cache; prune when it has finished")
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
            freed = sum(_dir_bytes(p) for p in removed_art) + _dir_bytes(self.root / "tmp")
            if not dry_run:
                for p in removed_art:
                    shutil.rmtree(p, ignore_errors=True)
                for p in removed_meas:
                    p.unlink(missing_ok=True)
                for r in refs:
                    if r not in kept:
                        Path(r["ref_file"]).unlink(missing_ok=True)
                shutil.rmtree(self.root / "tmp", ignore_errors=True)
                (self.root / "tmp").mkdir()
            return {"artifacts_removed": len(removed_art),
                    "measurements_removed": sum(p.suffix == ".json" for p in removed_meas),
                    "bytes_freed": freed,
                    "runs_kept": len(kept), "dry_run": dry_run}


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _path_id(path: Path) -> str:
    import hashlib

    return hashlib.sha256(str(path).encode()).hexdigest()[:16]
