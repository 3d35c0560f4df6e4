"""Query side: open an index and search it through the cascade."""
from matryoshka.core.errors import (IndexFormatError, InputError, MatryoshkaError, ModelMismatchError,
                                    RerankerUnavailable, ShardsUnavailable)
from matryoshka.core.params import SearchParams

from .api import open_index
from .index import Index
from .results import Hit, Record, SearchResult

__all__ = ["Index", "open_index", "Hit", "Record", "SearchResult", "SearchParams", "MatryoshkaError", "InputError",
           "IndexFormatError", "ModelMismatchError", "RerankerUnavailable", "ShardsUnavailable"]
