"""A store of finished runs, so that a long chapter re-executed after an interruption redoes nothing it had done.

With ``$NORA_RUN_CACHE`` set to a folder, :func:`nora.experiments.parallel.run_parallel` looks every job
up there before running it and writes each result there the moment it finishes (a temporary file,
then a rename: a killed run leaves whole entries only). A chapter stopped after 90 of its 170 runs
starts again at run 91; one whose code changed starts again from nothing.

A job's key is the SHA-256 of

- the function (module and qualified name) and its arguments, canonically: datasets by the bytes
  of their images and labels, dataclasses (``TrainConfig``) field by field, floats by ``repr``
  (less a ``TrainConfig``'s ``device`` and ``num_workers``, which decide where and how a run is
  computed, not what it computes);
- every ``.py`` file of the ``nora`` package (less the presentation modules the build re-renders,
  ``execute.BUILD_TIME``), ``inits.json`` and the shipped checkpoints: any change to the code a run
  could have used makes a new key (coarse on purpose: a stale result is worse than a re-run).

The machine is not in the key: a result made on another computer (or device) with the same code is
used as is; it agrees with a local run up to floating-point rounding, as runs on different thread
counts do (``nora.experiments.train``). Each entry records where it was made (host, torch version, threads), and :func:`provenance`
says which machines made a chapter's runs, so the chapter can state it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import pickle
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nora.experiments.execute import BUILD_TIME

__all__ = ["RUN_CACHE_ENV", "Failed", "RunStore", "job_key", "provenance", "store_from_env"]

RUN_CACHE_ENV = "NORA_RUN_CACHE"
PACKAGE = Path(__file__).resolve().parents[1]  # the nora package
_NOT_IN_KEY = {"TrainConfig": frozenset({"device", "num_workers"})}  # where a run is computed, not what


@lru_cache(maxsize=4)
def code_digest(package: Path = PACKAGE) -> str:
    """SHA-256 over the package's run-time files (their paths and bytes), computed once per process."""
    h = hashlib.sha256()
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and (p.suffix == ".py" or p.name == "inits.json" or "checkpoints" in p.parts))
    for path in files:
        rel = path.relative_to(package.parent).as_posix()
        if rel in BUILD_TIME:
            continue
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


_DATASETS: dict[int, tuple[Dataset, str]] = {}


def _dataset_digest(data: Dataset) -> str:
    """SHA-256 of a dataset's items (image bytes and label, in order); remembered per object."""
    hit = _DATASETS.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    h = hashlib.sha256()
    for i in range(len(data)):
        for part in data[i]:
            t = torch.as_tensor(part).detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    _DATASETS[id(data)] = (data, h.hexdigest())
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    """A JSON-like, order-stable description of ``value`` for hashing; fails loudly on what it cannot describe."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {"__map__": sorted((str(k), _canonical(v)) for k, v in value.items())}
    if isinstance(value, list | tuple):
        return [type(value).__name__, [_canonical(v) for v in value]]
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        return ["tensor", str(t.dtype), list(t.shape), hashlib.sha256(t.numpy().tobytes()).hexdigest()]
    if isinstance(value, np.ndarray | np.generic):
        a = np.ascontiguousarray(value)
        if a.dtype == object:
            return ["ndarray", "object", list(a.shape), [_canonical(v) for v in a.ravel().tolist()]]
        return ["ndarray", str(a.dtype), list(a.shape), hashlib.sha256(a.tobytes()).hexdigest()]
    if isinstance(value, Dataset):
        return ["dataset", len(value), _dataset_digest(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = _NOT_IN_KEY.get(type(value).__name__, frozenset())
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in skip}
        return [type(value).__qualname__, _canonical(fields)]
    if callable(value) and hasattr(value, "__qualname__"):
        return ["callable", value.__module__, value.__qualname__]
    if hasattr(value, "__dict__"):  # e.g. a Task: its name, data and classes
        return [type(value).__qualname__, _canonical(vars(value))]
    raise TypeError(f"run store: cannot key an argument of type {type(value).__name__}")


class Failed:
    """What a guarded job returns instead of raising (``nora.experiments.prefill``): never stored."""

    def __init__(self, error: str):
        self.error = error

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


def job_key(fn: Callable[..., Any], job: Mapping[str, Any]) -> str:
    """The store's key of ``fn(**job)`` with today's code (a wrapper's key is that of the function it wraps)."""
    fn = inspect.unwrap(fn)
    described = repr(["v1", fn.__module__, fn.__qualname__, _canonical(dict(job)), code_digest()])
    return hashlib.sha256(described.encode()).hexdigest()


class RunStore:
    """Results of finished runs under ``root``, one pickle per key (``<key[:2]>/<key>.pkl``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"${RUN_CACHE_ENV} must name a folder, {self.root} is a file")

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pkl"

    def get(self, key: str) -> tuple[bool, Any]:
        """(True, result) when ``key`` is stored, else (False, None)."""
        path = self._path(key)
        if not path.is_file():
            return False, None
        with open(path, "rb") as f:
            return True, pickle.load(f)["result"]

    def put(self, key: str, result: Any, seconds: float) -> None:
        """Store ``result`` atomically, with where and how fast it was made."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"result": result, "host": platform.node(), "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "seconds": seconds, "made": time.time()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(entry, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def entries(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The stored entries (less their results) of those ``keys`` that are stored."""
        out = []
        for key in keys:
            path = self._path(key)
            if path.is_file():
                with open(path, "rb") as f:
                    entry = pickle.load(f)
                out.append({k: v for k, v in entry.items() if k != "result"})
        return out


def store_from_env() -> RunStore | None:
    """The store ``$NORA_RUN_CACHE`` names, or None when it is unset or empty."""
    root = os.environ.get(RUN_CACHE_ENV, "")
    return RunStore(root) if root else None


_USED: list[str] = []  # keys this process ran or found, in order (provenance's default)


def note_used(keys: Iterable[str]) -> None:
    _USED.extend(keys)


def provenance(keys: Iterable[str] | None = None) -> dict[str, int]:
    """How many of ``keys`` (default: every job this process's run_parallel calls looked up) each machine made.

    Machines are named ``host (torch X)``; an empty dict when no store is set.
    """
    store = store_from_env()
    if store is None:
        return {}
    counts: dict[str, int] = {}
    for e in store.entries(dict.fromkeys(_USED if keys is None else keys)):
        name = f"{e['host']} (torch {e['torch']})"
        counts[name] = counts.get(name, 0) + 1
    return counts
