"""A process that trains along (another node's, or a copy Lightning started per device) reads what the leading
process writes instead of asking the teacher itself: one generator for every rank and node."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from capdistill.errors import CapdistillError

log = logging.getLogger(__name__)
T = TypeVar("T")
FOLLOW_TIMEOUT_S = 24 * 3600.0  # a round of a large teacher can take hours to write
POLL_S = 2.0


def wait_for(read: Callable[[], T | None], what: str, timeout_s: float = FOLLOW_TIMEOUT_S) -> T:
    """`read()`'s first value that is not None, polled until `timeout_s` has passed (then a one-line error)."""
    start, said = time.monotonic(), 0.0
    while (value := read()) is None:
        waited = time.monotonic() - start
        if waited > timeout_s:
            raise CapdistillError(
                f"waited {waited:.0f} s for the leading process to write {what}: is node 0's process running?"
            )
        if waited - said >= 300:
            log.info("still waiting for the leading process to write %s (%.0f s)", what, waited)
            said = waited
        time.sleep(POLL_S)
    return value
