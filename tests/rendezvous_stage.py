"""A stage plugin (loaded through $COMPRESS_PLUGINS by the tests) that succeeds only when
`parties` builds of it run at the same time: each writes its name into `dir` and waits for
the others. Builds that run one after another fail it, so a test that passes with it has
shown parallel builds without timing anything."""

import shutil
import time
from pathlib import Path

from compress.artifacts import META_FILE, Kind
from compress.errors import StageError
from compress.stages.base import Stage, StageConfig, register


class RendezvousConfig(StageConfig):
    dir: str
    name: str
    parties: int = 2
    timeout_s: float = 60.0


@register
class Rendezvous(Stage):
    name = "rendezvous"
    description = "copies its input once `parties` builds of it meet (test only)"
    Config = RendezvousConfig

    def accepts(self, config):
        return {Kind.PYTORCH}

    def produces(self, config, input_kind):
        return Kind.PYTORCH

    def run(self, ctx, source, config, out_dir):
        meet = Path(config.dir)
        meet.mkdir(parents=True, exist_ok=True)
        (meet / config.name).write_text("here")
        deadline = time.monotonic() + config.timeout_s
        while len(list(meet.iterdir())) < config.parties:
            if time.monotonic() > deadline:
                raise StageError(f"only {len(list(meet.iterdir()))} of {config.parties} "
                                 "builds met: they did not run at the same time")
            time.sleep(0.02)
        shutil.copytree(source.path, out_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(META_FILE))
        return {"met": config.parties}
