"""A wall-time limit for a block of library code that has none of its own (pyxtal placement, SMACT enumeration).

A sibling of the tokenization modules, so that it travels with them into a checkpoint for ``trust_remote_code``.

The limit strikes again every ``RESTRIKE`` seconds until the block has ended: pyxtal's lattice code has bare
``except:`` clauses, which swallow a strike that lands inside them, and a single strike swallowed so left one
generated crystal placing atoms for hours.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

RESTRIKE = 1.0  # seconds between strikes once the limit has passed, until the block ends


class TimeLimitExceeded(BaseException):
    """Raised inside the block; a ``BaseException`` so that a library's ``except Exception`` cannot swallow it."""


def _raise(signum: int, frame: object) -> None:
    raise TimeLimitExceeded


def _set_async_exception(thread_id: int, exception: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception) if exception else None)


@contextmanager
def _thread_time_limit(seconds: float) -> Iterator[None]:
    """The limit off the main thread (a Dask worker runs its tasks in threads, where SIGALRM cannot reach): a
    timer thread raises ``TimeLimitExceeded`` in this thread through ``PyThreadState_SetAsyncExc``. It strikes at
    the next Python bytecode, as a signal handler does, but does not cut a blocking call (a sleep) short."""
    target = threading.get_ident()
    lock = threading.Lock()
    done = threading.Event()
    fired = False

    def strike() -> None:
        nonlocal fired
        wait = seconds
        while not done.wait(wait):
            with lock:
                if done.is_set():
                    return
                fired = True
                _set_async_exception(target, TimeLimitExceeded)
            wait = RESTRIKE

    timer = threading.Thread(target=strike, daemon=True, name="time-limit")
    try:
        timer.start()
        yield
    finally:
        with lock:
            done.set()
            if fired:  # a strike may be pending as the block ends: withdraw it, lest it land in the caller's code
                _set_async_exception(target, None)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the block after ``seconds`` with ``TimeLimitExceeded``, and again every ``RESTRIKE`` seconds until
    it ends (``None``: unbounded). In a process's main thread SIGALRM does it; in any other thread, a timer thread
    (``_thread_time_limit``)."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        with _thread_time_limit(seconds):
            yield
        return
    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds, RESTRIKE)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
