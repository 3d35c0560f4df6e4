"""Query side: open an index and search it through the cascade."""
from .index import Index, open_index
from .results import Hit, SearchResult

__all__ = ["Index", "open_index", "Hit", "SearchResult"]
