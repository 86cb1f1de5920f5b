"""Process pools for the per-structure jobs: ordered and as-completed maps with a progress bar, and workers
that die with their parent. Inside ``cluster.connect`` the same maps run on a Dask cluster instead (``cluster``).

Workers ignore SIGINT, so Ctrl-C reaches only the parent, which stops the pool and keeps what is done (a
worker killed by the terminal's SIGINT would print a traceback each and leave its task half-done). Workers
also ask the kernel to kill them when the parent dies, so ``kill -9`` of a job leaves no orphan burning a
core: ``prctl(PR_SET_PDEATHSIG)`` on Linux, a thread watching the parent pid elsewhere.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from multiprocessing.pool import Pool
from typing import TypeVar

from tqdm.auto import tqdm

from .cluster import cluster_as_completed, cluster_map, current_client

T = TypeVar("T")
R = TypeVar("R")

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def resolve_workers(num_workers: int | None) -> int:
    """``None`` means every core the process may use; anything below 1 is an error, not a silent 1."""
    if num_workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    return num_workers


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Make this process exit as soon as ``parent_pid`` (its parent) is gone, however the parent died: on Linux
    the kernel sends it ``sig`` (SIGTERM lets a trainer's atexit handlers run)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _init_worker(parent_pid: int) -> None:
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def worker_pool(num_workers: int, start_method: str | None = None) -> Iterator[Pool]:
    """A process pool whose workers die with this process; terminated (not drained) on any exception,
    Ctrl-C included, so an interrupted job stops at once. ``start_method`` is multiprocessing's (default: the
    platform's); ``"spawn"`` gives workers a fresh interpreter, which CUDA needs once the parent has touched it."""
    pool = multiprocessing.get_context(start_method).Pool(num_workers, initializer=_init_worker,
                                                          initargs=(os.getpid(),))
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _progress(total: int, desc: str, initial: int = 0) -> tqdm:
    # smoothing=0: the rate is the average since the start, so a few slow first items do not set the ETA
    return tqdm(total=total, initial=initial, desc=desc, disable=not desc, leave=False, smoothing=0,
                dynamic_ncols=True)


def parallel_map(function: Callable[[T], R], items: Sequence[T], num_workers: int | None = 1,
                 desc: str = "", chunksize: int | None = None, start_method: str | None = None) -> list[R]:
    """``[function(item) for item in items]`` over a process pool, in order, with a tqdm bar.

    With one worker (or one item) it runs in this process: no pool start-up cost, which keeps small
    evaluations and the tests fast. ``function`` must be a picklable module-level callable; ``start_method``
    goes to ``worker_pool``. Inside ``cluster.connect`` the cluster does the work and ``num_workers`` is ignored.
    """
    client = current_client()
    workers = min(resolve_workers(num_workers), max(1, len(items)))
    if chunksize is None and client is None:
        chunksize = max(1, len(items) // (workers * 8))
    results = []
    with _progress(len(items), desc) as bar:
        if client is not None:
            return cluster_map(client, function, items, bar, chunksize)
        if workers == 1:
            for item in items:
                results.append(function(item))
                bar.update()
            return results
        with worker_pool(workers, start_method) as pool:
            for result in pool.imap(function, items, chunksize=chunksize):
                results.append(result)
                bar.update()
    return results


def _indexed(function: Callable[[T], R], job: tuple[int, T]) -> tuple[int, R]:
    index, item = job
    return index, function(item)


def parallel_as_completed(function: Callable[[T], R], items: Sequence[tuple[int, T]], num_workers: int | None = 1,
                          desc: str = "", total: int | None = None,
                          start_method: str | None = None) -> Iterator[tuple[int, R]]:
    """``(index, function(item))`` for each ``(index, item)``, in order of completion, with a tqdm bar.

    For jobs that save each result as it arrives, so an interrupted run keeps everything finished so far.
    ``total`` (default ``len(items)``) lets a resumed job show its bar against the whole job. Inside
    ``cluster.connect`` the cluster does the work; ``start_method`` goes to ``worker_pool``.
    """
    client = current_client()
    total = len(items) if total is None else total
    workers = min(resolve_workers(num_workers), max(1, len(items)))
    with _progress(total, desc, initial=total - len(items)) as bar:
        if client is not None:
            yield from cluster_as_completed(client, function, items, bar)
            return
        if workers == 1:
            for job in items:
                yield _indexed(function, job)
                bar.update()
            return
        with worker_pool(workers, start_method) as pool:
            for result in pool.imap_unordered(partial(_indexed, function), items):
                yield result
                bar.update()
