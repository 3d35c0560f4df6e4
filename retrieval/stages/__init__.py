"""The cascade's stages, one class each, registered here in the order they run. A new stage is one module with
one `Stage` subclass (`stages.base`) and one line below; `plan.plan` asks each for its step, `runner.run`
runs the steps."""
from .base import Planning, Running, Stage, Step
from .exhaustive import Exhaustive
from .first_pass import FirstPass
from .full import Full
from .fuse import Fuse
from .int8 import Int8
from .lexical import Lexical
from .rerank import Rerank

STAGES: tuple[Stage, ...] = (
    Exhaustive(),
    FirstPass(),
    Lexical(),
    Int8(),
    Full(),
    Fuse(),
    Rerank(),
)
__all__ = ["STAGES", "Planning", "Running", "Stage", "Step"]
