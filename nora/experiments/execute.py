"""Execute one notebook all or nothing: the book runner's worker (``python nora/experiments/execute.py '<job JSON>'``).

:mod:`nora.experiments.book` starts one worker process per chapter; the worker runs papermill on
a copy of the notebook and

- executes into a scratch folder (``<runs>/.work/<notebook>/``), with the kernel's results going
  to a scratch ``$NORA_RESULTS_DIR``; only a run that finishes replaces the destination notebook
  and ``results/<profile>/<notebook>.json`` (each written to a temporary file and renamed, the
  notebook first, with SIGINT / SIGTERM held off for those two renames);
- on a failing cell, a dead kernel, SIGINT or SIGTERM leaves both byte for byte as they were,
  keeps the partial notebook as ``<runs>/failed/<notebook>.ipynb`` and names the cell (its index
  in the source notebook and its first line); the kernel is shut down (``shutdown_kernel(now=True)``,
  then a kill of its process group if it is still there), so no kernel outlives the worker;
- records with the results, under ``_run``, what the run depended on (see :func:`inputs`): the
  code cells, the profile, the overridden parameters and the files under ``nora/`` the kernel
  imported or opened (a first hidden cell installs an audit hook on ``open``, a last one writes
  ``sys.modules`` and the opened paths out; the runner removes both cells), with their SHA-256
  as they were when the run started; the runner compares them before the next run
  (:mod:`nora.experiments.book`: up to date or not);
- measures the wall time and the kernel's CPU time (``RUSAGE_CHILDREN`` of the worker once the
  kernel is reaped: the kernel and whatever it started).

The kernel runs over IPC sockets (ipykernel warns, on stderr, about unencrypted TCP otherwise),
with ``TQDM_DISABLE=1`` (no progress-bar text in stored outputs; the runner shows its own bars),
``NORA_PROFILE``, ``NORA_THREADS`` and a ``python3`` kernelspec on this interpreter first on
JUPYTER_PATH.

The worker reports on a JSON-lines channel (its stdout; fd 1 is pointed at stderr for everything
else, the kernel included): ``kernel`` (pid), ``cell`` (started), ``cell_done`` and ``done`` (the
outcome). It runs as a script, not as ``-m nora.experiments.execute``, so that it never imports the
``nora`` package (and torch with it): keep this module free of ``nora`` imports. The runner imports
it for the same helpers (hashing, clean-up).
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: its own folder (chapter modules) must not shadow top-level modules
    import os as _os
    import sys as _sys

    _here = _os.path.dirname(_os.path.realpath(__file__))
    _sys.path[:] = [p for p in _sys.path if _os.path.realpath(p or ".") != _here]

import contextlib
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNER_TAG = "nora-runner"  # the runner's hidden trace cells carry it; they never reach a stored notebook
RUN_KEY = "_run"  # the results JSON's entry for the run's inputs, times and versions
CHECKPOINTS = Path("experiments") / "checkpoints"  # under the package: shipped checkpoints, hashed whole
# Progress-bar text (tqdm: "37%|███▋      | 11/30 [01:23<02:24,  7.61s/it]"): committed outputs carry none.
PROGRESS_RE = re.compile(r"\d+(\.\d+)?\s?(it/s|s/it)|\d+%\|")
_PROGRESS_PART = re.compile(r"\d+%\||it/s|s/it")


@dataclass
class Job:
    """One notebook's run, as the runner hands it to a worker (JSON)."""

    name: str
    source: str  # the notebook to execute
    dest: str  # where a finished run's notebook goes (the source itself for the book profile in place)
    results: str  # results/<profile>/<name>.json: replaced by a finished run
    failed_dir: str  # partial notebooks of failed / interrupted runs
    work_dir: str  # scratch folder of this run (removed at the end)
    package: str  # the nora package folder the kernel imports
    profile: str
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides (not None), injected after `profile`
    book_clean: bool = False  # the book profile's clean-up of the stored notebook
    threads: int | None = None  # NORA_THREADS for the kernel (None: leave the environment's)
    jobs: int = 1


# ------------------------------------------------------------------------------------ hashing


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def code_cells(nb) -> list[str]:
    """The sources of the code cells a run executes: not papermill's injected cell, not the runner's."""
    skip = {"injected-parameters", RUNNER_TAG}
    return [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            for c in nb["cells"] if c["cell_type"] == "code" and not skip & set(c.get("metadata", {}).get("tags", []))]


def code_digest(nb) -> str:
    """SHA-256 of the notebook's code (kernel name and code-cell sources; not markdown, not outputs)."""
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    return hashlib.sha256(json.dumps({"kernel": kernel, "code": code_cells(nb)}).encode()).hexdigest()


def package_files(package: Path) -> dict[str, str]:
    """SHA-256 of every file under the package (not __pycache__), keyed ``nora/...`` (relative to its parent)."""
    package = Path(os.path.realpath(package))
    out = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out[path.relative_to(package.parent).as_posix()] = sha256_file(path)
    return out


def inputs(code: str, profile: str, parameters: dict[str, Any], files: dict[str, str | None]) -> dict[str, Any]:
    """What a chapter's run depends on: its code, the profile, the overridden parameters and the files it used."""
    return {"notebook": code, "profile": profile, "parameters": json.loads(json.dumps(parameters, sort_keys=True)),
            "files": dict(sorted(files.items()))}


def digest(run_inputs: dict[str, Any]) -> str:
    """One SHA-256 over :func:`inputs`."""
    return hashlib.sha256(json.dumps(run_inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# Presentation modules: the claims registry, its criteria and the ledger that renders them. A chapter's
# "What we found" table is re-rendered from them by ``python -m nora.book build``
# (:func:`nora.experiments.ledger.refresh_chapter_tables`), so no run depends on them: editing a claim's
# wording or criterion re-renders every table that shows it instead of making every chapter out of date.
BUILD_TIME = frozenset({"nora/experiments/claims.py", "nora/experiments/ledger.py", "nora/experiments/verdicts.py"})


def run_files(files: dict[str, str | None]) -> dict[str, str | None]:
    """``files`` without the presentation modules the build re-renders (:data:`BUILD_TIME`)."""
    return {rel: sha for rel, sha in files.items() if rel not in BUILD_TIME}


def checkpoint_unit(rel: Path) -> str | None:
    """The shipped checkpoint a path under checkpoints/ belongs to: its folder, or its files' common stem."""
    parts = rel.parts
    if len(parts) == 1:
        return parts[0].split(".", 1)[0] + "."  # vit-book.safetensors and vit-book.json: one unit
    return parts[0] + "/"


def used_files(package: Path, paths: list[str], cwd: Path | None = None) -> list[str]:
    """The package files a run depended on, from the modules it imported and the files it opened.

    Kept: every file under the package that was imported or opened (not __pycache__); the other
    files (not ``.py``) in the folders of the imported modules (``inits.json``, the C++ kernel's
    source); and every file of a shipped checkpoint any of whose files was opened (a checkpoint's
    weights are read by safetensors outside Python's ``open``; its manifest and hash check are not).
    Not the presentation modules of :data:`BUILD_TIME`.
    """
    package = Path(os.path.realpath(package))
    hits: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        path = Path(os.path.realpath(path))
        if path.is_file() and path.is_relative_to(package) and "__pycache__" not in path.parts:
            hits.add(path)
    for folder in {p.parent for p in hits if p.suffix == ".py"}:
        hits.update(f for f in folder.iterdir() if f.is_file() and f.suffix not in (".py", ".pyc"))
    shipped = package / CHECKPOINTS
    units = {checkpoint_unit(p.relative_to(shipped)) for p in hits if p.is_relative_to(shipped)}
    if units and shipped.is_dir():
        for path in shipped.rglob("*"):
            if path.is_file() and checkpoint_unit(path.relative_to(shipped)) in units:
                hits.add(path)
    return sorted(rel for rel in (p.relative_to(package.parent).as_posix() for p in hits) if rel not in BUILD_TIME)


# ----------------------------------------------------------------------------------- clean-up


def _only_progress(text: str | list[str]) -> bool:
    """True when every non-blank line (or carriage-return segment) of ``text`` is progress-bar text."""
    text = "".join(text) if isinstance(text, list) else text
    return all(_PROGRESS_PART.search(part) for part in re.split(r"[\r\n]", text) if part.strip())


def strip_progress_outputs(nb) -> int:
    """Drop, in place, the stderr stream outputs that hold nothing but progress-bar text; return how many went.

    Works on an nbformat notebook or the plain dict of its JSON. The runner's kernels have tqdm
    switched off (``TQDM_DISABLE=1``); this is the book profile's safety net for bars that bypass it.
    A stderr output with anything else in it (a warning) is kept whole.
    """
    removed = 0
    for cell in nb["cells"]:
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = [o for o in outputs
                if not (o.get("output_type") == "stream" and o.get("name") == "stderr" and _only_progress(o.get("text", "")))]
        if len(kept) != len(outputs):
            removed += len(outputs) - len(kept)
            cell["outputs"] = kept
    return removed


def finish_notebook(nb, original, *, book: bool, input_path: str, output_path: str) -> None:
    """Clean an executed (or partial) notebook in place before it is stored.

    Always: the runner's trace cells go, execution counts are renumbered from 1, papermill's
    ``input_path`` / ``output_path`` name the real notebooks (not the scratch copies). With
    ``book`` (the committed notebooks) also: papermill's injected cell goes, the original
    ``parameters`` cell comes back (tagged ``parameters`` and ``hide-cell``), per-cell timing
    metadata goes, the paths are bare file names and progress-bar-only stderr outputs go.
    """
    nb.cells = [c for c in nb.cells if RUNNER_TAG not in c.metadata.get("tags", [])]
    if book:
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        original_params = next((c for c in original.cells if "parameters" in c.metadata.get("tags", [])), None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            tags = cell.metadata.get("tags", [])
            if "parameters" in tags:
                if original_params is not None:
                    cell.source = original_params.source
                cell.metadata["tags"] = tags + [t for t in ("hide-cell",) if t not in tags]
        strip_progress_outputs(nb)
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
    meta = nb.metadata.get("papermill")
    if meta is not None:
        meta["input_path"] = Path(input_path).name if book else input_path
        meta["output_path"] = Path(output_path).name if book else output_path


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def notebook_text(nb) -> str:
    """The notebook as nbformat writes it (with the trailing newline ``nbformat.write`` adds)."""
    import nbformat

    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


# ------------------------------------------------------------------------------ the worker


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the worker while the notebook was executing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_KERNELS: list[Any] = []  # kernel managers this worker started
_STATE: dict[str, Any] = {"signum": None, "phase": "setup"}


def _on_signal(signum: int, _frame) -> None:
    if _STATE["signum"] is not None:
        return  # already stopping
    _STATE["signum"] = signum
    if _STATE["phase"] == "executing":
        raise Interrupted(signum)


def _kernel_manager_class():
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class BookKernelManager(AsyncKernelManager):
        """The runner's kernels: IPC transport (no TCP ports, no unencrypted-TCP warning), remembered for shutdown."""

        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:  # jupyter_client's is a relative "kernel-ipc": shared by parallel workers
            folder = os.environ.get("JUPYTER_RUNTIME_DIR") or tempfile.gettempdir()
            return os.path.join(folder, f"kernel-{os.getpid()}-{len(_KERNELS)}-ipc")

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            _KERNELS.append(self)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            """After SIGINT / SIGTERM: now (interrupt, then kill), not the graceful request nbclient makes."""
            if _STATE["signum"] is not None:
                now = True
                _quiet_after_interrupt()
            await super().shutdown_kernel(now=now, restart=restart)

    return BookKernelManager


def _quiet_after_interrupt() -> None:
    """Once the runner stops a kernel on purpose, nbclient's "kernel died" error and asyncio's note about the
    abandoned cell task are expected: the outcome reports the interruption instead."""
    import logging

    for name in ("papermill", "nbclient", "traitlets", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _kernel_pid(km) -> int | None:
    process = getattr(getattr(km, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
    except OSError:
        return True


def stop_kernels(pids: set[int]) -> None:
    """Shut down every kernel this worker started (now), then kill the process group of any still alive."""
    from jupyter_core.utils import run_sync

    for km in _KERNELS:
        pid = _kernel_pid(km)
        if pid:
            pids.add(pid)
        try:
            if km.has_kernel:
                run_sync(km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - the kill below is the fallback
            pass
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # the kernel leads its own session (jupyter_client)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


@contextlib.contextmanager
def kernel_environment(job: Job, work: Path) -> Iterator[None]:
    """The kernel's environment: kernelspec on this interpreter, IPC runtime dir, profile, results dir, threads, no tqdm."""
    from ipykernel.kernelspec import get_kernel_dict

    with tempfile.TemporaryDirectory(prefix="nora-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / "python3"
        spec.mkdir(parents=True)
        kernel = get_kernel_dict(python_arguments=["-Xfrozen_modules=off"])
        kernel["argv"][0] = sys.executable  # absolute: not whatever `python` is on PATH
        (spec / "kernel.json").write_text(json.dumps(kernel))
        runtime = Path(tmp) / "rt"  # short: IPC socket paths must stay under ~100 bytes
        runtime.mkdir()
        env = {
            "JUPYTER_PATH": os.pathsep.join(p for p in (tmp, os.environ.get("JUPYTER_PATH")) if p),
            "JUPYTER_RUNTIME_DIR": str(runtime),
            "NORA_PROFILE": job.profile,
            "NORA_RESULTS_DIR": str(work / "results"),
            "TQDM_DISABLE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        if job.threads is not None:
            env["NORA_THREADS"] = str(job.threads)
        os.environ.update(env)
        yield


TRACE_START = """\
# nora-runner: note the files this run opens (the runner removes this cell)
import sys as _nora_sys
_nora_opened = set()
_nora_sys.addaudithook(lambda event, args, _seen=_nora_opened: _seen.add(str(args[0]))
                       if event == "open" and args and not isinstance(args[0], int) else None)
del _nora_sys
"""

TRACE_END = """\
# nora-runner: which files under the package this run imported and opened (the runner removes this cell)
def _nora_trace(path, package, opened):
    import json, os, sys
    imported = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    # a .py file acts on a run only by being imported: one merely read (the run store hashing all of the
    # package's code, inspect reading a source) is not an input
    seen = imported | {s for s in opened if not str(s).endswith(".py")}
    keep = sorted(p for p in (os.path.realpath(s) for s in seen if isinstance(s, str)) if p.startswith(package + os.sep))
    with open(path, "w") as f:
        json.dump({"paths": keep, "cwd": os.getcwd()}, f)
_nora_trace(TRACE_PATH, PACKAGE_DIR, _nora_opened)
del _nora_trace, _nora_opened
"""


def prepare(original, trace: Path, package: Path):
    """A copy of the notebook with the runner's two hidden trace cells, first and last."""
    import copy

    import nbformat

    nb = copy.deepcopy(original)
    cells = [nbformat.v4.new_code_cell(TRACE_START),
             nbformat.v4.new_code_cell(TRACE_END.replace("TRACE_PATH", repr(str(trace)))
                                       .replace("PACKAGE_DIR", repr(os.path.realpath(package))))]
    for cell in cells:
        cell.metadata["tags"] = [RUNNER_TAG]
    nb.cells = [cells[0], *nb.cells, cells[1]]
    return nb


def describe_cell(original, cell) -> str:
    """``cell N: 'first line'`` with N the cell's index in the source notebook."""
    tags = cell.get("metadata", {}).get("tags", [])
    if RUNNER_TAG in tags:
        return "the runner's trace cell"
    if "injected-parameters" in tags:
        return "papermill's injected parameters cell"
    index = next((i for i, c in enumerate(original.cells) if cell.get("id") and c.get("id") == cell.get("id")), None)
    if index is None:
        index = next((i for i, c in enumerate(original.cells) if c.cell_type == "code" and c.source == cell.source), None)
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {index if index is not None else '?'}: {first!r}"


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in ("nora", "torch", "papermill"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(job: Job, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run one notebook all or nothing (see the module docstring); return the outcome that ``done`` reports."""
    import nbformat
    import papermill as pm

    source, dest, results = Path(job.source), Path(job.dest), Path(job.results)
    work = Path(job.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "results").mkdir(parents=True)
    package = Path(job.package)
    started = package_files(package)  # hashes as the run starts (a file edited meanwhile is not this run's)
    original = nbformat.read(source, as_version=4)
    code = code_digest(original)
    trace = work / "trace.json"
    scratch_in, scratch_out = work / "in" / source.name, work / "out" / source.name
    scratch_in.parent.mkdir()
    scratch_out.parent.mkdir()
    nbformat.write(prepare(original, trace, package), scratch_in)
    parameters = {"profile": job.profile, **job.parameters}

    current: dict[str, Any] = {}
    pids: set[int] = set()

    def on_cell_start(cell, cell_index, **_kw) -> None:
        if not pids:
            pid = next((p for p in map(_kernel_pid, _KERNELS) if p), None)
            if pid:
                pids.add(pid)
                emit({"event": "kernel", "pid": pid})
        current["cell"] = cell
        if RUNNER_TAG not in cell.metadata.get("tags", []) and "injected-parameters" not in cell.metadata.get("tags", []):
            emit({"event": "cell", "cell": describe_cell(original, cell)})

    def on_cell_executed(cell, cell_index, **_kw) -> None:
        if RUNNER_TAG not in cell.metadata.get("tags", []) and "injected-parameters" not in cell.metadata.get("tags", []):
            emit({"event": "cell_done"})

    failed = None
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    with kernel_environment(job, work):
        try:
            _STATE["phase"] = "executing"
            if _STATE["signum"] is not None:
                raise Interrupted(_STATE["signum"])
            pm.execute_notebook(
                str(scratch_in), str(scratch_out), parameters=parameters, kernel_name="python3", progress_bar=False,
                cwd=str(source.parent), log_output=False, kernel_manager_class=_kernel_manager_class(),
                on_cell_start=on_cell_start, on_cell_executed=on_cell_executed,
            )
        except Interrupted as exc:
            where = describe_cell(original, current["cell"]) if current.get("cell") else "before the first cell"
            failed = f"{where} (interrupted by {signal.Signals(exc.signum).name})"
        except pm.PapermillExecutionError as exc:
            where = describe_cell(original, current["cell"]) if current.get("cell") else f"cell {exc.cell_index}"
            detail = f"{exc.ename}: {exc.evalue}".strip(": ")
            failed = where + (f" ({detail})" if detail else "")
        except Exception as exc:  # noqa: BLE001 - a dead kernel, an unreadable notebook: report, keep what is there
            detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            failed = f"{describe_cell(original, current['cell'])} ({detail})" if current.get("cell") else detail
        finally:
            _STATE["phase"] = "finishing"
            stop_kernels(pids)
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    if failed is None and _STATE["signum"] is not None and not trace.is_file():
        failed = f"interrupted by {signal.Signals(_STATE['signum']).name}"
    threads = int(os.environ["NORA_THREADS"]) if os.environ.get("NORA_THREADS", "").isdigit() else None
    outcome: dict[str, Any] = {"name": job.name, "wall_seconds": wall, "cpu_seconds": cpu, "threads": threads,
                               "failed_cell": failed, "status": "ok" if failed is None else "FAILED"}
    if failed is not None and _STATE["signum"] is not None:
        outcome["status"] = "interrupted"
    try:
        if failed is None:
            _commit(job, original, scratch_out, trace, work, code, started, wall, cpu)
            outcome["output"] = str(dest)
        elif scratch_out.is_file():
            partial = nbformat.read(scratch_out, as_version=4)
            kept = Path(job.failed_dir) / source.name
            finish_notebook(partial, original, book=job.book_clean, input_path=str(source), output_path=str(kept))
            atomic_write(kept, notebook_text(partial))
            outcome["output"] = str(kept)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcome


def _commit(job: Job, original, scratch_out: Path, trace: Path, work: Path, code: str, started: dict[str, str],
            wall: float, cpu: float) -> None:
    """A finished run: clean the notebook, add ``_run`` to the results, then rename both into place."""
    import nbformat

    source, dest, results = Path(job.source), Path(job.dest), Path(job.results)
    nb = nbformat.read(scratch_out, as_version=4)
    finish_notebook(nb, original, book=job.book_clean, input_path=str(source), output_path=str(dest))
    traced = json.loads(trace.read_text())
    package = Path(job.package)
    files = {rel: started.get(rel) or sha256_file(package.parent / rel)
             for rel in used_files(package, traced["paths"], Path(traced["cwd"]))}
    run_inputs = inputs(code, job.profile, job.parameters, files)
    recorded = work / "results" / job.profile / f"{job.name}.json"
    data = json.loads(recorded.read_text()) if recorded.is_file() else {
        "notebook": job.name, "profile": job.profile, "values": {}, "paper": {}}
    data[RUN_KEY] = {
        "how": "run", "digest": digest(run_inputs), "inputs": run_inputs,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "jobs": job.jobs,
        "threads": int(os.environ["NORA_THREADS"]) if os.environ.get("NORA_THREADS", "").isdigit() else None,
        "versions": _versions(),
    }
    notebook, record = notebook_text(nb), json.dumps(data, sort_keys=True, indent=1) + "\n"
    blocked = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # the two renames go together
    try:
        atomic_write(dest, notebook)
        atomic_write(results, record)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``execute.py '<Job as JSON>'``; JSON-lines events on stdout, everything else on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    job = Job(**json.loads(argv[0]))
    channel = os.fdopen(os.dup(1), "w", buffering=1)  # the runner's channel; not inherited by the kernel
    os.dup2(2, 1)  # anything else written to fd 1 (the kernel's own stdout included) goes to stderr
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)

    def emit(event: dict[str, Any]) -> None:
        channel.write(json.dumps(event) + "\n")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        outcome = execute(job, emit)
    except Interrupted as exc:  # before or after the execution proper: nothing was replaced
        outcome = {"name": job.name, "status": "interrupted", "failed_cell": f"interrupted by {exc}"}
    except Exception as exc:  # noqa: BLE001 - the runner's own failure: nothing was replaced either
        import traceback

        traceback.print_exc()
        outcome = {"name": job.name, "status": "FAILED", "failed_cell": f"the runner failed ({type(exc).__name__}: {exc})"}
    with contextlib.suppress(OSError):  # the runner may be gone
        emit({"event": "done", **outcome})
        channel.close()
    if outcome["status"] == "interrupted":
        return 128 + (_STATE["signum"] or signal.SIGINT)
    return 0 if outcome["status"] == "ok" else 1


__all__ = ["BUILD_TIME", "CHECKPOINTS", "Job", "PROGRESS_RE", "RUNNER_TAG", "RUN_KEY", "atomic_write", "code_cells",
           "code_digest", "digest", "execute", "finish_notebook", "inputs", "notebook_text", "package_files",
           "run_files", "sha256_file", "strip_progress_outputs", "used_files"]

if __name__ == "__main__":
    sys.exit(main())
