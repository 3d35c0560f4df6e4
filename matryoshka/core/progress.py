"""Progress bars and one-line log messages that a --quiet run silences."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def bar(total: int | None, desc: str, quiet: bool, unit: str = "vec", initial: int = 0) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, initial=initial, disable=quiet,
                dynamic_ncols=True, file=sys.stderr)


def say(message: str, quiet: bool) -> None:
    if not quiet:
        tqdm.write(message, file=sys.stderr)
