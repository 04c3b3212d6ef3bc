"""Worker processes for the long offline checks the CLI runs (proof bundles).

The core stays free of processes: it verifies a list of chunks through whatever runner
it is handed, in order. This module supplies the one that fans out to worker processes,
and the count of cores this process may use.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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

# The function and chunks of the run in progress. Workers are forked after this is set,
# so they inherit it in their copy of memory and only a chunk's index crosses the pipe:
# pickling each chunk to the workers cost more than verifying it.
_JOB: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def _run_inherited(index: int) -> Any:
    if _JOB is None:
        raise RuntimeError("worker started without a job")
    fn, chunks = _JOB
    return fn(chunks[index])


def chunk_runner(jobs: int | None, total: int) -> Runner[T, R] | None:
    """A runner mapping a function over chunks in ``jobs`` forked worker processes,
    results in order; None (run in this process) for one job, small inputs or where
    ``fork`` is missing (spawn would re-import the caller's ``__main__``). The function
    and chunks reach the workers through the fork, not a pipe; a result must pickle."""
    if jobs is None:
        jobs = usable_cores() if total >= PARALLEL_THRESHOLD else 1
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    workers = jobs

    def run(fn: Callable[[T], R], chunks: Sequence[T]) -> Iterator[R]:
        global _JOB  # noqa: PLW0603 - handed to the forked workers, cleared after
        if _JOB is not None:
            raise RuntimeError("one parallel run at a time")
        context = multiprocessing.get_context("fork")
        _JOB = (fn, chunks)
        # Objects alive now are never collected in the workers: a collection there would
        # touch, and so copy, every page the fork shares.
        gc.freeze()
        try:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_run_inherited, i) for i in range(len(chunks))]
                gc.unfreeze()
                for future in futures:
                    yield future.result()
        finally:
            gc.unfreeze()
            _JOB = None

    return run
