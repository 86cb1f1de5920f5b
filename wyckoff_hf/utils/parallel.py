"""One process-pool map with a progress bar, shared by every metric that does per-structure work."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(num_workers: int | None) -> int:
    """``None`` means every core the process may use; anything below 1 is an error, not a silent 1."""
    if num_workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    return num_workers


def parallel_map(function: Callable[[T], R], items: Sequence[T], num_workers: int | None = 1,
                 desc: str = "", chunksize: int | None = None) -> list[R]:
    """``[function(item) for item in items]`` over a process pool, in order, with a tqdm bar.

    With one worker (or one item) it runs in this process: no pool start-up cost, which keeps small
    evaluations and the tests fast. ``function`` must be a picklable module-level callable.
    """
    workers = min(resolve_workers(num_workers), max(1, len(items)))
    if workers == 1:
        return [function(item) for item in tqdm(items, desc=desc, disable=not desc, leave=False)]
    if chunksize is None:
        chunksize = max(1, len(items) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(function, items, chunksize=chunksize), total=len(items), desc=desc,
                         disable=not desc, leave=False))
