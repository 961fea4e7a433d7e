"""Independent training runs side by side, one torch thread each: ``run_parallel(fn, jobs, workers=2)``.

A chapter's runs (method x task x seed) do not depend on each other, and on a small CPU two
one-thread processes get through them almost twice as fast as one process with two threads (small
matrices parallelise badly inside one op).  Every run is seeded by its own arguments, and every
run is computed on **one thread** whichever way it is scheduled, so the numbers do not depend on
``workers`` (floating-point sums do depend on the thread count; see ``nora.experiments.train``).

Workers are fresh ``spawn`` processes (no forked OpenMP state); ``fn`` must be a module-level
function and its arguments picklable (a ``Task``, a ``TrainConfig``, dicts of overrides).
Workers start with this process's logger levels and warning filters (a notebook that silences a
library's notice silences it in its workers too).  ``workers`` defaults to ``$NORA_WORKERS``, else torch's thread count in this process (what the
book runner's ``NORA_THREADS`` gives each notebook); 1 runs in this process, one job at a time.
With ``$NORA_RUN_CACHE`` set, finished jobs are kept there and not run again
(``nora.experiments.run_store``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

__all__ = ["WORKERS_ENV", "default_workers", "run_parallel"]

WORKERS_ENV = "NORA_WORKERS"


def default_workers() -> int:
    """``$NORA_WORKERS`` if set, else this process's torch thread count (at least 1)."""
    raw = os.environ.get(WORKERS_ENV)
    if raw is None:
        return max(1, torch.get_num_threads())
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${WORKERS_ENV} must be a positive int, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"${WORKERS_ENV} must be a positive int, got {raw!r}")
    return value


def _logger_levels() -> dict[str, int]:
    loggers = logging.root.manager.loggerDict.items()
    return {name: lg.level for name, lg in loggers if isinstance(lg, logging.Logger) and lg.level != logging.NOTSET}


def _start_worker(levels: dict[str, int], filters: list) -> None:
    torch.set_num_threads(1)
    os.environ["NORA_THREADS"] = "1"
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    warnings.filters[:] = filters


def _timed(fn: Callable[..., Any], job: Mapping[str, Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(**job), time.perf_counter() - start


def _call_on_one_thread(fn: Callable[..., Any], job: Mapping[str, Any]) -> tuple[Any, float]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _timed(fn, job)
    finally:
        torch.set_num_threads(saved)


def run_parallel(fn: Callable[..., Any], jobs: Iterable[Mapping[str, Any]], *, workers: int | None = None,
                 desc: str = "runs") -> list[Any]:
    """``[fn(**job) for job in jobs]``, each on one torch thread, ``workers`` at a time; results in job order.

    The first exception raised by a job is raised here (the other jobs are cancelled); a job that
    should not stop the others catches its own errors (see ``nora.experiments.vit_transfer.lr_search``).
    A terminal shows a tqdm bar over the finished jobs.
    """
    from tqdm.auto import tqdm

    from nora.experiments import run_store

    jobs = [dict(job) for job in jobs]
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    results: list[Any] = [None] * len(jobs)
    store = run_store.store_from_env()
    keys = [run_store.job_key(fn, job) for job in jobs] if store is not None else [None] * len(jobs)
    todo = []
    for i, key in enumerate(keys):
        found, value = store.get(key) if store is not None else (False, None)
        if found:
            results[i] = value
        else:
            todo.append(i)
    if store is not None:
        run_store.note_used(keys)

    def finish(i: int, value: Any, seconds: float) -> None:
        results[i] = value
        if store is not None and not isinstance(value, run_store.Failed):
            store.put(keys[i], value, seconds)

    if workers == 1 or len(todo) <= 1:
        for i in tqdm(todo, desc=desc, mininterval=10):
            finish(i, *_call_on_one_thread(fn, jobs[i]))
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context, initializer=_start_worker,
                             initargs=(_logger_levels(), list(warnings.filters))) as pool:
        futures = {pool.submit(_timed, fn, jobs[i]): i for i in todo}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc=desc, mininterval=10):
                finish(futures[future], *future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results
