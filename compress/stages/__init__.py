"""Built-in stages; importing this package registers them."""

from compress.stages import distill, export, finetune, prune, quantize  # noqa: F401
from compress.stages.base import STAGES, Stage, StageConfig, StageContext, register

__all__ = ["STAGES", "Stage", "StageConfig", "StageContext", "register"]
