"""Progress bars, and one-line messages on the `matryoshka` logger, which a --quiet run (quiet=True) silences.

Messages go through `logging` (logger "matryoshka", level INFO; notes that something was skipped are
WARNING). So that a build run from Python says what it does without any set-up, the logger has one handler of
its own until the application configures logging: it writes through tqdm, so lines never cut a progress bar.
`logging.getLogger("matryoshka").setLevel(logging.WARNING)` quiets it; a handler the application adds to the
root logger replaces it (see `docs/operations.md`, process-wide settings)."""
from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

log = logging.getLogger("matryoshka")


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own contract: a handler never raises
            self.handleError(record)


class _UnlessConfigured(logging.Filter):
    """Let the default handler write only while the root logger has no handler (the application's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


_default = _TqdmHandler(logging.INFO)
_default.addFilter(_UnlessConfigured())
log.addHandler(_default)
log.setLevel(logging.INFO)


def bar(total: int | None, desc: str, quiet: bool, unit: str = "vec", initial: int = 0) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, initial=initial, disable=quiet,
                dynamic_ncols=True, file=sys.stderr)


def say(message: str, quiet: bool, level: int = logging.INFO) -> None:
    """Log a message for the person running a build or a change, unless `quiet`."""
    if not quiet:
        log.log(level, message)
