"""A wall-time limit for a block of library code that has none of its own (pyxtal placement, SMACT enumeration).

A sibling of the tokenization modules, so that it travels with them into a checkpoint for ``trust_remote_code``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TimeLimitExceeded(BaseException):
    """Raised inside the block; a ``BaseException`` so that a library's ``except Exception`` cannot swallow it."""


def _raise(signum: int, frame: object) -> None:
    raise TimeLimitExceeded


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with ``TimeLimitExceeded`` (SIGALRM, so only in a process's main
    thread; elsewhere, or with ``None``, the block runs unbounded)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
