"""Where a figure came from: package versions, git revision, machine."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("compress", "torch", "transformers", "optimum", "optimum-onnx", "onnx",
            "onnxruntime", "onnxruntime-gpu", "onnxscript", "torchao", "bitsandbytes",
            "safetensors", "openvino", "nncf", "datasets", "tokenizers", "numpy")


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for name in PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(out)


def package_versions() -> dict[str, str]:
    """Versions of the packages that produce and measure artifacts (part of every cache
    key: after an upgrade, artifacts and measurements are made again)."""
    return dict(_versions())


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_revision(path: Path) -> str | None:
    """`<sha>` or `<sha>-dirty` of the repository holding `path`, if any."""
    try:
        sha = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def describe_git(revision: str | None) -> str:
    """The git revision a run recorded, for people: a missing one says why, not 'None'."""
    if not revision:
        return "not recorded (the recipe's folder is not in a git repository)"
    return f"`{revision}`"
