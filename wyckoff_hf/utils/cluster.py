"""Structure work on a Dask cluster: the engine behind ``--scheduler ADDRESS`` (or ``DASK_SCHEDULER_ADDRESS``).

``parallel.parallel_map`` and ``parallel.parallel_as_completed`` run their tasks here while a client is active
(``connect``), and on the local process pool otherwise, so the structure work of ``evaluate``, ``realise`` and
``generate --structures`` goes to the cluster without its call sites knowing. One client per job, held in a
context variable rather than passed down, because the work is spread over a dozen functions that already take
``num_workers``; with a client the cluster's size decides and ``num_workers`` is ignored.

What the local pool does, the cluster does too: results arrive as they complete (a caller that saves them,
like the relaxation cache, loses nothing to an interrupt), Ctrl-C cancels what is left, per-task time limits
hold (``tokenization.time_limit`` works in a worker's task thread). What the pool cannot do: a task whose
worker dies is run again on another (Dask's scheduler does it, up to ``distributed.scheduler.allowed-failures``
deaths), and a task that raises is retried ``RETRIES`` times, for the transient errors of a shared cluster (a
file system hiccup); realisation and relaxation return their failures (pyxtal, CHGNet, a time limit) rather
than raise, so their retries never repeat a deterministic failure. A task that still fails is counted on the
progress bar; the others run to the end and ``ClusterTaskError`` is raised after them, so one bad task never
discards the rest.

``distributed`` is imported only when a client is made: the local path needs none of it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from distributed import Client
    from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

SCHEDULER_ENVIRONMENT = "DASK_SCHEDULER_ADDRESS"  # Dask's own convention for the scheduler's address
RETRIES = 2
CONNECT_TIMEOUT = 30.0  # seconds: an unreachable scheduler fails the job before any work
RUNNING_REFRESH = 1.0  # seconds between the bar's queries of the scheduler for running tasks

_client: ContextVar[Client | None] = ContextVar("wyckoff_hf_dask_client", default=None)


class ClusterTaskError(RuntimeError):
    """Tasks that failed on the cluster after their retries; every other task's result was delivered first."""


def add_scheduler_option(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` for the commands that do structure work."""
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help=f"Dask scheduler (tcp://host:8786) whose workers do the structure work instead of local "
                             f"processes (default: ${SCHEDULER_ENVIRONMENT} if set; see docs/cluster.md)")


def scheduler_address(option: str | None) -> str | None:
    """The scheduler to use: ``--scheduler``'s value, else ``DASK_SCHEDULER_ADDRESS``, else none (local pool)."""
    return option or os.environ.get(SCHEDULER_ENVIRONMENT) or None


@contextmanager
def connect(scheduler: str | Client | None) -> Iterator[Client | None]:
    """Run the structure work of the block on a Dask cluster: ``scheduler`` is an address (``tcp://host:8786``;
    a client is made and closed here) or a ``distributed.Client`` of the caller's (a ``LocalCluster``'s, say;
    left open). ``None`` keeps the local pool."""
    if scheduler is None:
        yield None
        return
    own = isinstance(scheduler, str)
    if own:
        from distributed import Client

        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    else:
        client = scheduler
    token = _client.set(client)
    try:
        yield client
    finally:
        _client.reset(token)
        if own:
            client.close()


def current_client() -> Client | None:
    """The client of the enclosing ``connect``, or ``None`` for the local pool."""
    return _client.get()


def cluster_threads(client: Client) -> int:
    """Task slots of the cluster: the sum of its workers' threads (at least 1, so a chunk size can use it)."""
    return max(1, sum(client.nthreads().values()))


def cluster_as_completed(client: Client, function: Callable[[T], R], jobs: Sequence[tuple[int, T]], bar: tqdm,
                         weights: Sequence[int] | None = None) -> Iterator[tuple[int, R]]:
    """``(index, function(item))`` for each ``(index, item)`` of ``jobs``, in order of completion, computed on the
    cluster; ``bar`` advances by ``weights[k]`` (default 1) per job and shows failed and running counts.

    Leaving early (Ctrl-C in the caller, a closed generator) cancels the tasks not yet done. Raises
    ``ClusterTaskError`` at the end if any task failed.
    """
    from distributed import as_completed

    futures = {client.submit(function, item, pure=False, retries=RETRIES): k for k, (_, item) in enumerate(jobs)}
    keys = {future.key for future in futures}
    failures: list[str] = []
    refreshed = 0.0
    try:
        for future in as_completed(futures, loop=client.loop):  # loop: the client need not be the default
            k = futures[future]
            if future.status == "finished":
                yield jobs[k][0], future.result()
            else:  # "error" after the retries (a worker's death too often is a KilledWorker), or "cancelled"
                reason = repr(future.exception()) if future.status == "error" else future.status
                failures.append(f"job {jobs[k][0]}: {reason}")
            bar.update(1 if weights is None else weights[k])
            if time.monotonic() - refreshed > RUNNING_REFRESH:
                refreshed = time.monotonic()
                running = sum(key in keys for processing in client.processing().values() for key in processing)
                bar.set_postfix(failed=len(failures), running=running, refresh=False)
        bar.set_postfix(failed=len(failures), running=0)
    finally:
        client.cancel(list(futures))  # what is left after an interrupt; finished results are only released
    if failures:
        raise ClusterTaskError(f"{len(failures)} of {len(jobs)} task(s) failed on the cluster: " + "; ".join(
            failures[:3]))


def _apply_to_chunk(function: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [function(item) for item in chunk]


def cluster_map(client: Client, function: Callable[[T], R], items: Sequence[T], bar: tqdm,
                chunksize: int | None = None) -> list[R]:
    """``[function(item) for item in items]`` on the cluster, in order. Items travel in chunks of ``chunksize``
    (default: about eight chunks per task slot) so that cheap items (reading a CIF) do not pay the scheduler's
    per-task cost each."""
    if chunksize is None:
        chunksize = max(1, len(items) // (cluster_threads(client) * 8))
    chunks = [items[start:start + chunksize] for start in range(0, len(items), chunksize)]
    done = dict(cluster_as_completed(client, partial(_apply_to_chunk, function), list(enumerate(chunks)), bar,
                                     [len(chunk) for chunk in chunks]))
    return [result for k in range(len(chunks)) for result in done[k]]
