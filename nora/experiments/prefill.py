"""Fill the run store with a chapter's runs on another machine, without Jupyter: its code cells run as a script.

    NORA_RUN_CACHE=store NORA_WORKERS=16 python -m nora.experiments.prefill notebooks/04_vit_transfer.ipynb \\
        --device cuda --skip-method qlora

A chapter's long part is its ``run_parallel`` jobs (``nora.experiments.parallel``), and with
``$NORA_RUN_CACHE`` set each finished job is kept in the store (``nora.experiments.run_store``). This
command executes the notebook's code cells in one namespace on a machine that may lack Jupyter
(``myst_nb.glue`` and ``display`` become no-ops), so that a bigger machine makes the runs; the book's
runner then executes the real notebook where the book is built, and finds them there. Nothing it
prints or records is kept: the notebook's outputs and results come from that later run.

``--device`` runs the training on another device than the profile's (a run's device is not in its
store key, as its machine is not: the chapter records where its runs were made). ``--skip-method``
leaves a method's jobs to the later run (e.g. QLoRA where bitsandbytes is missing): they get
stand-ins here (a search trial scoring 0, a run of accuracy 0), which are never stored; so does a
job that fails (its error is printed; the other jobs go on). A failing cell is reported and the
next one runs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Guarded", "code_cells", "main", "skipping"]


def code_cells(path: Path) -> list[str]:
    """The notebook's code cells' sources, in order (read as JSON: no nbformat needed)."""
    nb = json.loads(Path(path).read_text())
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


def _stand_in(fn: Callable[..., Any], job: Mapping[str, Any]) -> Any:
    from nora.experiments.train import TrainResult

    config = job.get("config")
    if getattr(inspect.unwrap(fn), "__name__", "") == "search_trial":
        return {"method": job.get("method"), "lr": config.lr, "head_lr": config.head_lr, "val_accuracy": 0.0,
                "val_curve": [0.0], "train_seconds": 0.0, "diverged": False}
    epochs = getattr(config, "epochs", 1)
    return TrainResult(accuracy=0.0, train_curve=[0.0] * epochs, test_curve=[0.0] * epochs, loss_curve=[0.0] * epochs,
                       lr=getattr(config, "lr", 0.0), extra={"method": job.get("method"), "stand_in": True})


class Guarded:
    """``fn`` returning ``run_store.Failed`` instead of raising, so one failing job does not cancel the rest.

    Picklable (for spawned workers); its store key is ``fn``'s (``__wrapped__``).
    """

    def __init__(self, fn: Callable[..., Any]):
        self.__wrapped__ = fn

    def __call__(self, **job: Any) -> Any:
        from nora.experiments.run_store import Failed

        try:
            return self.__wrapped__(**job)
        except Exception as error:  # reported by the caller, never stored
            return Failed(f"{type(error).__name__}: {error}")


def skipping(run_parallel: Callable[..., list[Any]], methods: Iterable[str]) -> Callable[..., list[Any]]:
    """``run_parallel`` that gives the jobs of ``methods`` stand-ins (not run, not stored), runs the rest guarded,
    and gives a failed job a stand-in too (its error printed)."""
    from nora.experiments.run_store import Failed

    skip = frozenset(methods)

    def wrapped(fn: Callable[..., Any], jobs: Iterable[Mapping[str, Any]], **kwargs: Any) -> list[Any]:
        jobs = [dict(j) for j in jobs]
        keep = [i for i, j in enumerate(jobs) if j.get("method") not in skip]
        done = run_parallel(Guarded(fn), [jobs[i] for i in keep], **kwargs) if keep else []
        out = [_stand_in(fn, j) for j in jobs]
        for i, r in zip(keep, done):
            if isinstance(r, Failed):
                print(f"job {jobs[i].get('desc', i)} failed: {r.error}", flush=True)
            else:
                out[i] = r
        return out

    return wrapped


def _install_stubs() -> None:
    try:
        import myst_nb  # noqa: F401
    except ImportError:
        stub = types.ModuleType("myst_nb")
        stub.glue = lambda *args, **kwargs: None
        sys.modules["myst_nb"] = stub


def run(notebook: Path, *, profile: str, device: str | None = None, skip: Sequence[str] = ()) -> list[int]:
    """Execute ``notebook``'s code cells as a script; returns the indices of the cells that failed."""
    os.environ["NORA_PROFILE"] = profile
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    _install_stubs()
    import nora  # noqa: F401  (first: it makes the registry's torchvision importable)
    from nora.experiments import parallel, profiles

    if device is not None:
        profiles.DEFAULTS[profile] = {**profiles.DEFAULTS[profile], "device": device}
    parallel.run_parallel = skipping(parallel.run_parallel, skip)
    namespace: dict[str, Any] = {"__name__": "__main__", "display": lambda *a, **k: None}
    failed = []
    for i, source in enumerate(code_cells(notebook)):
        start = time.time()
        try:
            exec(compile(source, f"{notebook.name}[cell {i}]", "exec"), namespace)  # noqa: S102
        except Exception:  # a failing cell is reported; the next ones may still make runs
            failed.append(i)
            print(f"cell {i} failed after {time.time() - start:.0f} s:\n{traceback.format_exc(limit=3)}", flush=True)
        else:
            print(f"cell {i} done in {time.time() - start:.0f} s", flush=True)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    from nora.experiments.run_store import RUN_CACHE_ENV, provenance

    ap = argparse.ArgumentParser(prog="python -m nora.experiments.prefill", description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--profile", default="book")
    ap.add_argument("--device", default=None, help="train on this device instead of the profile's (e.g. cuda)")
    ap.add_argument("--skip-method", action="append", default=[], help="leave this method's jobs to the later run")
    args = ap.parse_args(argv)
    if not os.environ.get(RUN_CACHE_ENV):
        ap.error(f"${RUN_CACHE_ENV} must name the store to fill")
    if not args.notebook.is_file():
        ap.error(f"notebook {args.notebook} does not exist")
    failed = run(args.notebook, profile=args.profile, device=args.device, skip=args.skip_method)
    print(f"cells failed: {failed or 'none'}; runs in the store by machine: {provenance()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
