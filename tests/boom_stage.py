"""A stage plugin that always fails, loaded through $COMPRESS_PLUGINS by the tests."""

from compress.artifacts import Kind
from compress.stages.base import Stage, StageConfig, register


class BoomConfig(StageConfig):
    pass


@register
class Boom(Stage):
    name = "boom"
    description = "always fails after writing part of its output (test only)"
    Config = BoomConfig

    def accepts(self, config):
        return {Kind.PYTORCH}

    def produces(self, config, input_kind):
        return Kind.PYTORCH

    def run(self, ctx, source, config, out_dir):
        (out_dir / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("exploded on purpose")
