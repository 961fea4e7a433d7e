"""`python -m nora.book run|stamp|build|vendor`: execute the book's notebooks with papermill and build the site.

``run`` executes ``notebooks/NN_*.ipynb``, each in a fresh kernel on *this* interpreter (a
throwaway ``python3`` kernelspec pointing at ``sys.executable`` is put first on JUPYTER_PATH, so
neither a user-level kernelspec nor the ``python`` on PATH can swap the environment), with the
papermill parameter ``profile=<p>`` (plus any ``-p NAME VALUE``) and ``NORA_PROFILE=<p>`` in the
kernel's environment. Each notebook runs in a worker process of its own
(:mod:`nora.experiments.execute`), all or nothing:

- it executes into a scratch copy; only a finished run replaces the notebook (in place for the
  ``book`` profile, ``runs/<profile>/`` or ``--out`` otherwise) and
  ``results/<profile>/<notebook>.json``, each written to a temporary file and renamed. A failing
  cell, a dead kernel, Ctrl-C (SIGINT) or SIGTERM leaves both byte for byte as they were, keeps
  the partial notebook under ``runs/<profile>/failed/`` (``<out>/failed/``), names the cell (its
  index in the source notebook and its first line) and shuts the kernel down; the other
  notebooks go on after a failure, and a signal stops the run (exit 130 / 143) once the running
  kernels are down. The closing table (notebook, profile, status, wall and CPU time) is printed
  either way.
- a notebook is skipped ("up to date") when its code cells, the profile, the ``-p`` parameters and
  the files under ``nora/`` its last finished run imported or opened (the shipped checkpoints it
  read included) all hash as they did then (:mod:`nora.experiments.runcache`); ``--force`` runs it
  anyway. ``stamp`` records those hashes, without running, for results made before the record
  existed.
- ``--jobs N`` runs N notebooks side by side, each kernel with ``NORA_THREADS`` = max(1, cores // N)
  (an explicit ``NORA_THREADS`` wins); a chapter module with ``RUN_ALONE = True`` (08, which times
  things) runs with nothing beside it. On a terminal, tqdm bars show the notebooks done and, per
  running notebook, its cells, the cell running and the elapsed time; elsewhere (CI logs), one
  line per start and end.
- the kernel runs with ``TQDM_DISABLE=1`` (stored outputs carry no progress-bar text) over IPC
  sockets (so ipykernel has no unencrypted-TCP warning to print); the kernel's own stderr is
  passed through, each line prefixed with its notebook.

The ``book`` profile's stored notebooks are cleaned (:func:`nora.experiments.execute.finish_notebook`):
papermill's ``injected-parameters`` cell removed, the original ``parameters`` cell restored
(tagged ``parameters`` and ``hide-cell``), per-cell timing metadata dropped, execution counts
renumbered and progress-bar-only stderr outputs dropped, so the committed notebooks differ only
where outputs do. With ``-p`` overrides a ``book`` run never writes in place: its notebooks go to
``runs/book/`` (or ``--out``) and, for every profile, the results of an overridden run go to
``<that folder>/results/<profile>/``, never to ``results/``.

``build`` vendors MathJax (npm ``mathjax`` at ``MATHJAX_VERSION`` into the git-ignored
``book/_vendor/``; served from the site root through ``html_extra_path``), regenerates the results
page ``book/results.md`` (the claims ledger, :mod:`nora.experiments.ledger`) and runs
``jupyter-book build . -W -n --keep-going --all``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nora.experiments import CHAPTERS, execute
from nora.experiments.execute import PROGRESS_RE, RUN_KEY, Job, strip_progress_outputs  # noqa: F401 (re-exported)
from nora.experiments.profiles import PROFILE_NAMES, resolve_profile

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
MATHJAX_VERSION = "3.2.2"
MATHJAX_SITE_DIR = Path("book/_vendor/site/mathjax")  # html_extra_path = book/_vendor/site
MATHJAX_NPM_DIR = Path("book/_vendor/npm")
STOP_GRACE_SECONDS = 60.0  # after a signal, how long the workers get to shut their kernels down


@dataclass
class NotebookRun:
    """Outcome of one notebook: where it went, whether it passed, which cell failed, how long it took."""

    name: str
    profile: str
    status: str  # "ok", "up to date", "FAILED", "interrupted" or "not run"
    seconds: float | None
    output: Path | None
    failed_cell: str | None = None
    cpu_seconds: float | None = None
    threads: int | None = None
    note: str | None = None  # why it ran, or since when it is up to date


@dataclass
class BookRun:
    """Every notebook's outcome, the run's elapsed time and the signal that stopped it, if any."""

    runs: list[NotebookRun]
    elapsed: float
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal that stopped the run; else 0 when every notebook is ok or up to date, 1 otherwise."""
        if self.signum is not None:
            return 128 + self.signum
        return 0 if all(r.status in ("ok", "up to date") for r in self.runs) else 1


# --------------------------------------------------------------------------------------------- run


def find_notebooks(root: Path, only: str | None = None) -> list[Path]:
    """The book's notebooks (notebooks/NN_*.ipynb) in order; ``only`` keeps names containing it, or a glob's matches.

    A glob matches the whole name, with or without ``.ipynb``, or its start: ``0[1-3]`` is 01, 02 and 03.
    """
    found = sorted((root / "notebooks").glob(NOTEBOOK_GLOB))
    if only and any(c in only for c in "*?["):
        found = [p for p in found if any(fnmatch.fnmatch(n, only) for n in (p.name, p.stem))
                 or fnmatch.fnmatch(p.stem, only + "*")]
    elif only:
        found = [p for p in found if only in p.name]
    return found


def parse_value(raw: str) -> Any:
    """A ``-p`` value: a Python literal (``50``, ``1e-3``, ``[0, 1]``, ``None``), else YAML (``{nora: [0.01]}``), else the string."""
    import yaml

    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        pass
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, list | dict) else raw


def notebook_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The notebook's papermill parameters (name -> default, type, help), as ``papermill --help-notebook`` reads them."""
    import papermill as pm

    return pm.inspect_notebook(str(path))


def runs_alone(name: str) -> bool:
    """Whether the chapter's module says ``RUN_ALONE = True`` (read from its source: nothing is imported)."""
    module = CHAPTERS.get(name)
    path = Path(__file__).with_name(f"{module}.py") if module else None
    if path is None or not path.is_file():
        return False
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "RUN_ALONE" for t in targets) and node.value is not None:
                return bool(ast.literal_eval(node.value))
    return False


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _where(path: Path | None) -> str:
    return os.path.relpath(path, Path.cwd()) if path else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 60:.1f} min" if value >= 600 else f"{value:.1f} s"


def plan_jobs(root: Path, profile: str, notebooks: list[Path], out: Path | None, overrides: dict[str, Any],
              threads: int | None, jobs: int) -> list[Job]:
    """One job per notebook: where its notebook, results, partial copy and scratch files go, and what it is given."""
    declared = {src: notebook_parameters(src) for src in notebooks} if overrides else {}
    in_place = out is None and profile == "book" and not overrides
    base = out if out is not None else root / "runs" / profile
    results_root = Path(os.environ["NORA_RESULTS_DIR"]) if os.environ.get("NORA_RESULTS_DIR") else root / "results"
    if overrides:
        results_root = base / "results"  # an overridden run is never the profile's record
    out_jobs = []
    for src in notebooks:
        given = {k: v for k, v in overrides.items() if k in declared.get(src, {}) and v is not None}
        out_jobs.append(Job(
            name=src.stem, source=str(src), dest=str(src if in_place else base / src.name),
            results=str(results_root / profile / f"{src.stem}.json"), failed_dir=str(base / "failed"),
            work_dir=str(base / ".work" / src.stem), package=str(Path(execute.__file__).resolve().parents[1]),
            profile=profile, parameters=given, book_clean=profile == "book", threads=threads, jobs=jobs,
        ))
    return out_jobs


def _check_overrides(notebooks: list[Path], overrides: dict[str, Any]) -> None:
    if "profile" in overrides:
        raise ValueError("the profile is chosen with --profile, not -p profile")
    if not overrides:
        return
    declared = {src.stem: notebook_parameters(src) for src in notebooks}
    for name in overrides:
        if not any(name in d for d in declared.values()):
            known = sorted({k for d in declared.values() for k in d} - {"profile"})
            raise ValueError(f"parameter {name!r} is in no selected notebook's parameters cell; they have {known}")


class _Display:
    """What the terminal shows: tqdm bars on a terminal (notebooks done; per running notebook its cells), else lines."""

    def __init__(self, total: int, jobs: int, bars: bool | None = None) -> None:
        self.bars_on = sys.stderr.isatty() if bars is None else bars
        self.bars: dict[str, Any] = {}
        self.free = list(range(1, jobs + 1))
        self.overall = None
        if self.bars_on and total:
            from tqdm import tqdm

            self.tqdm = tqdm
            self.overall = tqdm(total=total, desc="notebooks", unit="nb", position=0, dynamic_ncols=True,
                                bar_format="{desc}: {n_fmt}/{total_fmt} {bar} [{elapsed}]")

    def line(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        if self.bars_on and self.overall is not None:
            self.tqdm.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def start(self, name: str, cells: int) -> None:
        if self.overall is None:
            return
        position = self.free.pop(0) if self.free else len(self.bars) + 1
        self.bars[name] = (self.tqdm(total=cells, desc=name, unit="cell", position=position, leave=False,
                                     dynamic_ncols=True,
                                     bar_format="{desc} {bar} {n_fmt}/{total_fmt} cells [{elapsed}]{postfix}"), position)

    def cell(self, name: str, text: str) -> None:
        if name in self.bars:
            self.bars[name][0].set_postfix_str(text if len(text) <= 60 else text[:57] + "...")

    def cell_done(self, name: str) -> None:
        if name in self.bars:
            self.bars[name][0].update(1)

    def finish(self, name: str) -> None:
        if name in self.bars:
            bar, position = self.bars.pop(name)
            bar.close()
            self.free = sorted(self.free + [position])
        if self.overall is not None:
            self.overall.update(1)

    def tick(self) -> None:
        for bar, _ in self.bars.values():
            bar.refresh()
        if self.overall is not None:
            self.overall.refresh()

    def close(self) -> None:
        for name in list(self.bars):
            self.bars.pop(name)[0].close()
        if self.overall is not None:
            self.overall.close()
            self.overall = None


class _Worker:
    """A worker process running one job; its events, stderr lines and exit arrive on the run's queue."""

    def __init__(self, job: Job, root: Path, events: queue.Queue) -> None:
        self.job = job
        self.kernel: int | None = None
        self.outcome: dict[str, Any] | None = None
        env = dict(os.environ)
        parent = str(Path(job.package).parent)
        if not any(parent == p for p in env.get("PYTHONPATH", "").split(os.pathsep)) and "site-packages" not in parent:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)  # the kernel imports this nora
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, execute.__file__, json.dumps(asdict(job))], cwd=root, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )

        def read(stream, kind: str) -> None:
            for line in stream:
                if kind == "event":
                    try:
                        events.put((job.name, "event", json.loads(line)))
                        continue
                    except ValueError:
                        pass
                events.put((job.name, "stderr", line.rstrip("\n")))

        readers = [threading.Thread(target=read, args=(self.proc.stdout, "event"), daemon=True),
                   threading.Thread(target=read, args=(self.proc.stderr, "stderr"), daemon=True)]
        for t in readers:
            t.start()

        def reap() -> None:
            for t in readers:
                t.join()
            events.put((job.name, "exit", self.proc.wait()))

        threading.Thread(target=reap, daemon=True).start()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except OSError:
                pass

    def kill(self) -> None:
        """Last resort: kill the worker and its kernel (each leads its own process group)."""
        for pid in (self.proc.pid, self.kernel):
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass


def _salvage(job: Job) -> Path | None:
    """A worker that died without reporting: keep its partial notebook, drop its scratch folder."""
    partial = Path(job.work_dir) / "out" / Path(job.source).name
    kept = None
    if partial.is_file():
        kept = Path(job.failed_dir) / partial.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(partial, kept)
    shutil.rmtree(job.work_dir, ignore_errors=True)
    return kept


def run(root: Path, profile: str | None, only: str | None = None, out: Path | None = None, *, jobs: int = 1,
        force: bool = False, parameters: dict[str, Any] | None = None, bars: bool | None = None) -> BookRun:
    """Run the selected notebooks, ``jobs`` at a time, skipping those up to date unless ``force`` (see the module docstring)."""
    import nbformat

    from nora.experiments.runcache import read_record, stale_reason

    profile = resolve_profile(profile)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive int; got {jobs!r}")
    notebooks = find_notebooks(root, only)
    if not notebooks:
        raise ValueError(f"only={only!r} matches no notebook in {root / 'notebooks'}")
    overrides = dict(parameters or {})
    _check_overrides(notebooks, overrides)
    raw_threads = os.environ.get("NORA_THREADS")
    threads = int(raw_threads) if raw_threads and raw_threads.isdigit() else max(1, available_cores() // jobs)
    t0 = time.perf_counter()
    planned = plan_jobs(root, profile, notebooks, out, overrides, None if raw_threads else threads, jobs)

    outcomes: dict[str, NotebookRun] = {}
    todo: list[tuple[Job, str, float]] = []
    for job in planned:
        nb = nbformat.read(job.source, as_version=4)
        record = read_record(Path(job.results))
        reason = "--force" if force else (stale_reason(record, nb, profile, job.parameters)
                                          if Path(job.dest).is_file() else "no executed notebook yet")
        if reason is None:
            when = (record.get("finished") or record.get("stamped") or "?").replace("T", " ")[:16]
            how = "stamped" if record.get("how") == "stamp" else "last run"
            outcomes[job.name] = NotebookRun(job.name, profile, "up to date", None, Path(job.dest),
                                             note=f"{how} {when} UTC")
        else:
            todo.append((job, reason, float((record or {}).get("wall_seconds") or 0.0)))
    alone = {job.name for job, _, _ in todo if jobs > 1 and runs_alone(job.name)}
    if jobs > 1:  # what must run alone first, then the longest first (by the last run's wall time)
        todo.sort(key=lambda t: (t[0].name not in alone, -t[2]))

    display = _Display(len(todo), jobs, bars)
    n = len(planned)
    index = {job.name: i for i, job in enumerate(planned, 1)}
    fresh = [r for r in outcomes.values()]
    head = f"run: {n} notebook(s), profile {profile}: {len(fresh)} up to date, {len(todo)} to run"
    if todo:
        head += f", {min(jobs, len(todo))} at a time, NORA_THREADS={raw_threads or threads}"
    display.line(head)
    for r in fresh:
        display.line(f"[{index[r.name]}/{n}] {r.name}: up to date ({r.note}; --force runs it again)")

    signals: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda s, _f: signals.append(s))
    scratch = {Path(job.work_dir).parent for job in planned}
    made = sorted({d for w in scratch for d in (w, w.parent, w.parent.parent) if not d.exists()}, key=lambda d: -len(d.parts))
    events: queue.Queue = queue.Queue()
    running: dict[str, _Worker] = {}
    pending = [job for job, _, _ in todo]
    reasons = {job.name: reason for job, reason, _ in todo}
    stop_at = None
    try:
        while pending or running:
            if signals and stop_at is None:
                stop_at = time.perf_counter() + STOP_GRACE_SECONDS
                name = signal.Signals(signals[0]).name
                display.line(f"{name}: stopping; {len(running)} running notebook(s) shut their kernels down, their "
                             "notebooks and results stay as they were", err=True)
                for job in pending:
                    outcomes[job.name] = NotebookRun(job.name, profile, "not run", None, None)
                pending = []
                for worker in running.values():
                    worker.signal(signals[0])
            if stop_at is not None and (len(signals) > 1 or time.perf_counter() > stop_at):
                for worker in running.values():
                    worker.kill()
            while pending and len(running) < jobs and not (running.keys() & alone):
                if pending[0].name in alone and running:
                    break
                job = pending.pop(0)
                display.line(f"[{index[job.name]}/{n}] {job.name} (profile {profile}) started: {reasons[job.name]}"
                             + (" (runs alone)" if job.name in alone else ""))
                running[job.name] = _Worker(job, root, events)
                display.start(job.name, sum(bool(c.strip()) for c in execute.code_cells(nbformat.read(job.source, as_version=4))))
            try:
                name, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                display.tick()
                continue
            worker = running.get(name)
            if worker is None:
                continue
            if kind == "stderr":
                if payload.strip():
                    display.line(f"[{name}] {payload}", err=True)
            elif kind == "event":
                event = payload.get("event")
                if event == "kernel":
                    worker.kernel = payload["pid"]
                elif event == "cell":
                    display.cell(name, payload["cell"])
                elif event == "cell_done":
                    display.cell_done(name)
                elif event == "done":
                    worker.outcome = payload
            elif kind == "exit":
                running.pop(name)
                outcomes[name] = _report(worker, payload, profile, display, f"[{index[name]}/{n}]")
                display.finish(name)
    finally:
        if running:  # left by an error of the runner's own: stop the workers (and so their kernels) too
            for worker in running.values():
                worker.signal(signal.SIGTERM)
            deadline = time.perf_counter() + STOP_GRACE_SECONDS
            for worker in running.values():
                try:
                    worker.proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    worker.kill()
        display.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for folder in made:  # scratch folders (and runs/<profile>/ when nothing else went there)
            with contextlib.suppress(OSError):
                folder.rmdir()
    runs = [outcomes[job.name] for job in planned]
    return BookRun(runs, time.perf_counter() - t0, signals[0] if signals else None)


def _report(worker: _Worker, code: int, profile: str, display: _Display, tag: str) -> NotebookRun:
    """The outcome of a finished worker, printed on one line."""
    job, got = worker.job, worker.outcome
    if got is None:  # died without reporting (killed, crashed)
        if worker.kernel:
            try:
                os.killpg(worker.kernel, signal.SIGKILL)
            except OSError:
                pass
        kept = _salvage(job)
        status = "interrupted" if code in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, 130, 143) else "FAILED"
        got = {"status": status, "failed_cell": f"the worker ended (exit {code}) before reporting",
               "wall_seconds": time.perf_counter() - worker.started, "output": str(kept) if kept else None}
    result = NotebookRun(job.name, profile, got["status"], got.get("wall_seconds"),
                         Path(got["output"]) if got.get("output") else None, got.get("failed_cell"),
                         got.get("cpu_seconds"), got.get("threads"))
    times = f"{_seconds(result.seconds)} (CPU {_seconds(result.cpu_seconds)})"
    if result.status == "ok":
        display.line(f"{tag} {job.name}: ok in {times} -> {_where(result.output)}")
    else:
        kept = f"partial notebook: {_where(result.output)}" if result.output else "no partial notebook"
        at = " at " if (result.failed_cell or "").startswith(("cell ", "the runner's", "papermill's")) else ": "
        display.line(f"{tag} {job.name}: {result.status} after {times}{at}{result.failed_cell}; {kept}; "
                     f"{_where(Path(job.dest))} and its results are as they were")
    return result


def summary_table(runs: list[NotebookRun] | BookRun, elapsed: float | None = None) -> str:
    """The closing table: notebook, profile, status, wall time, CPU time (the kernel's); failures listed below."""
    if isinstance(runs, BookRun):
        runs, elapsed = runs.runs, runs.elapsed
    rows = [("notebook", "profile", "status", "wall time", "CPU time")]
    rows += [(r.name, r.profile, r.status, _seconds(r.seconds), _seconds(r.cpu_seconds)) for r in runs]
    ok = sum(r.status in ("ok", "up to date") for r in runs)
    fresh = sum(r.status == "up to date" for r in runs)
    cpu = [r.cpu_seconds for r in runs if r.cpu_seconds is not None]
    wall = elapsed if elapsed is not None else sum(r.seconds or 0.0 for r in runs)
    rows.append(("total" if elapsed is None else "total (elapsed)", "",
                 f"{ok}/{len(runs)} ok" + (f" ({fresh} up to date)" if fresh else ""),
                 _seconds(wall), _seconds(sum(cpu)) if cpu else "—"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    failed = [f"{r.name}: {r.failed_cell}" for r in runs if r.failed_cell]
    return "\n".join(lines + (["", "failed:"] + [f"  {f}" for f in failed] if failed else []))


def stamp(root: Path, profile: str | None, only: str | None = None) -> list[str]:
    """Record the current inputs as the last run's for notebooks whose stored outputs and results are known good.

    For results made before runs recorded their inputs (see :mod:`nora.experiments.runcache`):
    only stamp a notebook whose stored outputs came from its current code. Refuses a notebook
    without results, without its executed copy, or (book profile) with unexecuted cells or stored
    errors. Also writes ``_parameters``, the profile's values of the notebook's parameters, as a
    run records them. Returns the notebooks stamped.
    """
    import nbformat

    from nora.experiments.profiles import settings
    from nora.experiments.results import PARAMETERS_KEY
    from nora.experiments.runcache import read_record, stamp_record, write_record

    profile = resolve_profile(profile)
    notebooks = find_notebooks(root, only)
    if not notebooks:
        raise ValueError(f"only={only!r} matches no notebook in {root / 'notebooks'}")
    done = []
    for job in plan_jobs(root, profile, notebooks, None, {}, None, 1):
        results, dest = Path(job.results), Path(job.dest)
        if not results.is_file():
            raise ValueError(f"{job.name}: no {results} to stamp (run it instead)")
        if not dest.is_file():
            raise ValueError(f"{job.name}: no executed notebook at {dest} (run it instead)")
        nb = nbformat.read(job.source, as_version=4)
        stored = nbformat.read(dest, as_version=4)
        code = [c for c in stored.cells if c.cell_type == "code" and c.source.strip()]
        if any(c.execution_count is None for c in code) or any(o.output_type == "error" for c in code for o in c.outputs):
            raise ValueError(f"{job.name}: {dest} has unexecuted cells or stored errors; run it instead")
        extra = {}
        if job.name in CHAPTERS:
            names = [k for k in notebook_parameters(Path(job.source)) if k != "profile"]
            cfg = settings(job.name, profile)
            extra[PARAMETERS_KEY] = json.loads(json.dumps({"profile": profile, **{k: cfg[k] for k in names if k in cfg}}))
        write_record(results, stamp_record(nb, profile, CHAPTERS.get(job.name), previous=read_record(results)), extra)
        done.append(job.name)
    return done


# ------------------------------------------------------------------------------------------ build


def ensure_mathjax(root: Path) -> Path:
    """Vendor MathJax ``MATHJAX_VERSION`` (its es5 build) under book/_vendor/site/mathjax; a no-op when already there."""
    target = root / MATHJAX_SITE_DIR
    stamp = target / "NORA_VENDORED_VERSION"
    if stamp.is_file() and stamp.read_text().strip() == MATHJAX_VERSION and (target / "tex-chtml.js").is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to vendor MathJax for offline reading (apt-get install npm)")
    prefix = root / MATHJAX_NPM_DIR
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-save", "--no-package-lock", "--no-audit", "--no-fund",
         "--loglevel=error", f"mathjax@{MATHJAX_VERSION}"],
        check=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(prefix / "node_modules" / "mathjax" / "es5", target)
    stamp.write_text(MATHJAX_VERSION + "\n")
    return target


def build(root: Path) -> int:
    """Vendor MathJax, regenerate the results page and the chapters' claim tables, build the site strictly (-W -n).

    Returns jupyter-book's exit code."""
    from nora.experiments.ledger import refresh_chapter_tables, write_results_page

    ensure_mathjax(root)
    write_results_page(root)
    refreshed = refresh_chapter_tables(root)
    if refreshed:
        print(f"claim tables re-rendered from the registry in: {', '.join(refreshed)}", flush=True)
    shutil.rmtree(root / "_build" / "html", ignore_errors=True)  # no stale pages from earlier builds
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(root), "-W", "-n", "--keep-going", "--all"]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.run(cmd, cwd=root).returncode
    index = root / "_build" / "html" / "index.html"
    if code == 0:
        print(f"The book is at {index.resolve()} (open it in a browser; it works offline).")
    else:
        print(f"jupyter-book build failed (exit {code}); warnings count as errors.", file=sys.stderr)
    return code


# -------------------------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m nora.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="project root (holds notebooks/, _toc.yml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks/NN_*.ipynb with papermill (those not up to date)")
    p_run.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="default: $NORA_PROFILE, else book")
    p_run.add_argument("--only", default=None, metavar="PATTERN", help="run only notebooks whose name contains PATTERN, or starts with a match of it as a glob (0[1-3])")
    p_run.add_argument("--out", type=Path, default=None, help="output folder (default: in place for book, runs/<profile>/ otherwise)")
    p_run.add_argument("--jobs", "-j", type=int, default=1, help="notebooks run side by side, each with NORA_THREADS = cores // JOBS")
    p_run.add_argument("--force", action="store_true", help="run notebooks that are up to date too")
    p_run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="papermill parameter for the notebooks that have it (a Python literal or YAML: 50, 1e-3, "
                            "'[0, 1]', '{nora: [0.01]}'); the notebooks go to runs/<profile>/, the results beside them")
    p_stamp = sub.add_parser("stamp", help="record the current inputs for results known to come from the current code")
    p_stamp.add_argument("--profile", choices=PROFILE_NAMES, default=None, help="default: $NORA_PROFILE, else book")
    p_stamp.add_argument("--only", default=None, metavar="PATTERN", help="stamp only notebooks whose name contains PATTERN, or starts with a match of it as a glob")
    sub.add_parser("build", help="build the jupyter-book site strictly into _build/html")
    sub.add_parser("vendor", help="vendor MathJax for offline reading (build does this too)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.command == "run":
        try:
            result = run(root, args.profile, args.only, args.out, jobs=args.jobs, force=args.force,
                         parameters={name: parse_value(value) for name, value in args.parameter})
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print()
        print(summary_table(result))
        if result.signum is not None:
            print(f"\nstopped by {signal.Signals(result.signum).name}")
        return result.exit_code
    if args.command == "stamp":
        try:
            names = stamp(root, args.profile, args.only)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"stamped {len(names)} notebook(s): {', '.join(names)}")
        return 0
    if args.command == "vendor":
        print(ensure_mathjax(root))
        return 0
    return build(root)


if __name__ == "__main__":
    sys.exit(main())
