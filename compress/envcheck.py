"""Start-up check: onnxruntime and onnxruntime-gpu share one import folder and break each
other, so an environment holding both is refused with the fix."""

from __future__ import annotations

from importlib import metadata

from compress.errors import InputError


def check_onnxruntime() -> None:
    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    if len(installed) > 1:
        raise InputError(
            "both onnxruntime and onnxruntime-gpu are installed (" + ", ".join(installed)
            + "); they overwrite each other's files. Fix: pip uninstall -y onnxruntime "
            "onnxruntime-gpu, then pip install -e '.[cpu]' (or '.[gpu]' on a CUDA machine)")
