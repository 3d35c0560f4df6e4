"""Exceptions raised by the engine. Every message names the problem and the fix."""


class MatryoshkaError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(MatryoshkaError, ValueError):
    """The vectors, ids, texts or options given to a build or a search are invalid."""


class IndexFormatError(MatryoshkaError):
    """An index folder is missing, incomplete, damaged or of an unknown format."""


class StoreDamaged(IndexFormatError):
    """A store file of an open index no longer holds the bytes it held when it was opened (truncated or
    rewritten under the process): the search that needed it is refused, never answered from zeros."""


class ModelMismatchError(MatryoshkaError):
    """The query model is not the model the index was built with."""


class BuildRefused(MatryoshkaError):
    """A build would overwrite something it must not (a foreign index, a locked folder, a full disk)."""


class RerankerUnavailable(MatryoshkaError):
    """The cross-encoder could not be loaded."""


class UnknownOption(InputError, TypeError):
    """An option name that does not exist (a TypeError too, as Python raises for an unexpected keyword)."""


class ShardsUnavailable(MatryoshkaError):
    """Shard workers died or timed out and partial results were not allowed."""
