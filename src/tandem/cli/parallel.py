"""Worker processes for the long offline checks the CLI runs (proof bundles).

The core stays free of processes: it verifies a list of chunks through whatever runner
it is handed, in order. This module supplies the one that fans out to worker processes,
and the count of cores this process may use.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many items the start-up of workers costs more than it saves.
PARALLEL_THRESHOLD = 1000


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one (Linux), else
    all of the machine's (macOS and Windows have no ``sched_getaffinity``)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


Runner = Callable[[Callable[[T], R], Sequence[T]], Iterator[R]]


def chunk_runner(jobs: int | None, total: int) -> Runner[T, R] | None:
    """A runner mapping a picklable function over chunks in ``jobs`` worker processes,
    results in order; None (run in this process) for one job, small inputs or where
    ``fork`` is missing (spawn would re-import the caller's ``__main__``)."""
    if jobs is None:
        jobs = usable_cores() if total >= PARALLEL_THRESHOLD else 1
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    workers = jobs

    def run(fn: Callable[[T], R], chunks: Sequence[T]) -> Iterator[R]:
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(fn, chunk) for chunk in chunks]
            for future in futures:
                yield future.result()

    return run
