"""Build side: turn embeddings (or texts) into a sharded, self-describing index folder."""
from matryoshka.core.errors import BuildRefused, InputError, MatryoshkaError

from .add import add
from .api import build
from .build import build_index
from .compact import compact
from .delete import delete
from .inputs import open_source
from .options import BuildOptions

__all__ = ["build", "add", "delete", "compact", "build_index", "BuildOptions", "open_source", "MatryoshkaError",
           "InputError", "BuildRefused"]
