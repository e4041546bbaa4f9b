"""A plugin (loaded through $COMPRESS_PLUGINS) that stops a training build at an exact
optimizer step, so tests and benchmarks/chaos.py can interrupt it deterministically.

$COMPRESS_TEST_KILL = "<label prefix>:<step>:<KILL|TERM>": when the training loop of the
build whose checkpoint label starts with the prefix (e.g. "teacher") has finished that
step (and written its checkpoint, if one was due), the process sends itself SIGKILL or
SIGTERM. Registers no stage.
"""

import os
import signal

from compress import checkpoints

_spec = os.environ.get("COMPRESS_TEST_KILL", "")
if _spec:
    _prefix, _step, _sig = _spec.split(":")
    _original = checkpoints.Checkpointer.after_step

    def after_step(self, step, total, fill, epoch_end=False):
        _original(self, step, total, fill, epoch_end)
        if not epoch_end and step == int(_step) and self.area is not None \
                and self.area.label.startswith(_prefix):
            os.kill(os.getpid(), getattr(signal, f"SIG{_sig}"))

    checkpoints.Checkpointer.after_step = after_step
