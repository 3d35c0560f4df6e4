"""Build side: turn embeddings (or texts) into a sharded, self-describing index folder."""
from matryoshka.core.errors import BuildRefused, InputError, MatryoshkaError

from .api import build
from .build import build_index
from .inputs import open_source
from .options import BuildOptions

__all__ = ["build", "build_index", "BuildOptions", "open_source", "MatryoshkaError", "InputError", "BuildRefused"]
