"""Silence library noise the user cannot act on (load reports, deprecations, torchao's
missing-kernel lines). `-v` sets COMPRESS_VERBOSE=1 and keeps it all."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

VERBOSE_ENV = "COMPRESS_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    if on:  # undo the venv's scripts/quiet-torchao.pth, read at interpreter start
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    configure()


def configure() -> None:
    """Call before importing the heavy libraries (and again after: it is idempotent)."""
    if verbose():
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("torch", "torch.utils._pytree", "torchao", "optimum", "transformers",
                 "datasets", "onnxruntime", "torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_fds():
    """Mute stdout/stderr at the file-descriptor level (C extensions print there directly),
    e.g. torchao's 'Failed to load _C_mxfp8' lines on import. A no-op with -v."""
    if verbose():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def import_transformers():
    """Import transformers (which imports torchao when installed) without its noise."""
    configure()
    with quiet_fds():
        import transformers

        with contextlib.suppress(ImportError):
            import torchao  # noqa: F401
    if not verbose():
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    return transformers


def _terminated(signum, frame):
    """SIGTERM unwinds like Ctrl-C does, so temp dirs and locks are cleaned up on the way."""
    raise KeyboardInterrupt


def configure_process() -> None:
    """For the console entry point: SIGTERM unwinds like Ctrl-C, and an ASCII locale does
    not crash on "→" or "Δ"."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    for stream in (sys.stdout, sys.stderr):
        if "utf" not in (getattr(stream, "encoding", "") or "").lower() \
                and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
