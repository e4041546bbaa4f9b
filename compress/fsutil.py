"""Durable file writes, digests and file locks: what the store (compress.store) builds on,
and what the run writer and exporters use to write a file whole or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from compress.artifacts import META_FILE

# ---------------------------------------------------------------- durable writes

def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (before it is renamed into place)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the whole new one: a
    uniquely named temp file beside it, fsynced, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(data, indent: int | None = 2) -> str:
    """JSON that strict parsers accept: NaN and infinities become null."""
    return json.dumps(_finite(data), indent=indent, default=str, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            return _finite(value.item())
    return value


def write_json(path: Path, data) -> None:
    atomic_write_text(path, strict_json(data) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root (metadata excluded), by relative path."""
    return {str(f.relative_to(root)): sha256_file(f) for f in sorted(root.rglob("*"))
            if f.is_file() and f.name != META_FILE}


def verify_files(root: Path, digests: dict[str, str] | None) -> list[str]:
    """What differs between the files under root and their recorded digests (empty: all
    match). Missing digests are a problem too: nothing can vouch for the files."""
    if not isinstance(digests, dict) or not digests:
        return ["no file digests recorded"]
    problems = []
    present = {str(f.relative_to(root)) for f in root.rglob("*")
               if f.is_file() and f.name != META_FILE}
    for name, digest in sorted(digests.items()):
        if name not in present:
            problems.append(f"{name} is missing")
        elif sha256_file(root / name) != digest:
            problems.append(f"{name} does not match its sha256")
    problems += [f"{name} is not in the recorded files" for name in sorted(present - set(digests))]
    return problems


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


@contextlib.contextmanager
def flock_dir(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on a directory itself (no lock file to clean up): held by the
    process that fills a temp dir, so others can tell a live one from a killed one's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
