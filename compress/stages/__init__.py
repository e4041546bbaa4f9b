"""Built-in stages; importing this package registers them."""

from compress.stages import export, finetune, quantize  # noqa: F401
from compress.stages.base import STAGES, Stage, StageConfig, StageContext, register

__all__ = ["STAGES", "Stage", "StageConfig", "StageContext", "register"]
