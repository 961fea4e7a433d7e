"""Whether a chapter's last successful run is still up to date, and stamping runs made before the record existed.

A finished run of ``python -m nora.book run`` stores, under ``_run`` in its
``results/<profile>/<notebook>.json``, the SHA-256 of everything it depended on
(:func:`nora.experiments.execute.inputs`): the notebook's code cells (not its markdown, not its
outputs), the profile, the parameters overridden with ``-p`` and every file under ``nora/`` the
kernel imported or opened, with the other files beside those modules (``inits.json``, the C++
kernel's source) and the shipped checkpoints it read, whole. The chapter is up to date while all
of these hash the same; a change anywhere else in ``nora/`` (the LLM code, for a vision chapter)
leaves it alone, and so does one in the presentation modules (the claims registry and the ledger,
``execute.BUILD_TIME``), whose tables the build re-renders. The way jupyter-cache keys cached
notebooks (code cells, not outputs), with the chapter's actual imports added.

``stamp`` writes such a record, without running anything, for results that were produced before
the record existed: it cannot know what the run imported, so it takes every ``nora`` module the
notebook's imports could reach (a static closure over ``import`` statements, inside functions
too, plus the chapter's module) and every shipped checkpoint; the chapter's first real run
narrows the set to what it used.
"""

from __future__ import annotations

import ast
import datetime
import json
from pathlib import Path
from typing import Any

from nora.experiments.execute import (BUILD_TIME, CHECKPOINTS, RUN_KEY, atomic_write, code_cells, code_digest, digest,
                                      inputs, run_files, sha256_file)

PACKAGE = Path(__file__).resolve().parents[1]  # the nora package these modules belong to


def _hash(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def stale_reason(record: dict[str, Any] | None, nb, profile: str, parameters: dict[str, Any],
                 package: Path = PACKAGE) -> str | None:
    """None when ``record`` (a results file's ``_run``) still matches; else what changed, in a few words."""
    if not record or "digest" not in record or "inputs" not in record:
        return "no record of a finished run"
    recorded = record["inputs"]
    old = {**recorded, "files": run_files(recorded.get("files", {}))}  # records made before BUILD_TIME list them
    files = {rel: _hash(package.parent / rel) for rel in old["files"]}
    new = inputs(code_digest(nb), profile, parameters, files)
    if digest(new) == digest(old):
        return None
    if new["notebook"] != old.get("notebook"):
        return "its code changed"
    if new["profile"] != old.get("profile"):
        return "another profile"
    if new["parameters"] != old.get("parameters"):
        return "other parameters"
    changed = [rel for rel, sha in new["files"].items() if sha != old.get("files", {}).get(rel)]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"{changed[0]} {'is gone' if new['files'][changed[0]] is None else 'changed'}{more}"
    return "its record does not match"


def read_record(results: Path) -> dict[str, Any] | None:
    """The ``_run`` entry of a results file (None when there is none or the file is unreadable)."""
    try:
        return json.loads(results.read_text()).get(RUN_KEY)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------- stamp


def _module_file(name: str, package: Path) -> Path | None:
    parts = name.split(".")
    if parts[0] != package.name:
        return None
    base = package.parent.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Module names an AST imports (anywhere in it), relative imports resolved against ``module``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names.add(stem)
            names.update(f"{stem}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return names


def _parse(source: str) -> ast.AST:
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return ast.parse("")


def static_closure(nb, chapter_module: str | None = None, package: Path = PACKAGE) -> set[Path]:
    """Every module file of the package the notebook's code could import (its ancestors' ``__init__`` included)."""
    todo = set()
    for source in code_cells(nb):
        todo |= _imports(_parse(source), "__main__", False)
    if chapter_module:
        todo.add(f"{package.name}.experiments.{chapter_module}")
    todo.add(package.name)
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith(package.name):
            continue
        seen.add(name)
        parts = name.split(".")
        todo.update(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
        path = _module_file(name, package)
        if path is None:
            continue
        files.add(path)
        todo |= _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
    return files


def stamp_files(nb, chapter_module: str | None = None, package: Path = PACKAGE) -> list[str]:
    """The files a stamp records: the static closure, the files beside those modules, every shipped checkpoint."""
    hits = static_closure(nb, chapter_module, package)
    for folder in {p.parent for p in hits}:
        hits.update(f for f in folder.iterdir() if f.is_file() and f.suffix not in (".py", ".pyc"))
    shipped = package / CHECKPOINTS
    if shipped.is_dir():
        hits.update(p for p in shipped.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(rel for rel in (p.relative_to(package.parent).as_posix() for p in hits) if rel not in BUILD_TIME)


RUN_FACTS = ("finished", "wall_seconds", "cpu_seconds", "threads", "jobs", "versions")  # what a stamp keeps of a run


def stamp_record(nb, profile: str, chapter_module: str | None = None, package: Path = PACKAGE,
                 previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``_run`` entry for results made by an earlier run of this very code (no times of its own: nothing ran).

    When ``previous`` (the record being replaced) is a run's, or a stamp that kept one, its times and
    versions stay under ``last_run``: restamping after an unrelated change keeps what the run cost.
    """
    from nora.experiments.execute import _versions

    files = {rel: _hash(package.parent / rel) for rel in stamp_files(nb, chapter_module, package)}
    run_inputs = inputs(code_digest(nb), profile, {}, files)
    record = {"how": "stamp", "digest": digest(run_inputs), "inputs": run_inputs,
              "stamped": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": _versions()}
    if previous and previous.get("how") == "run":
        record["last_run"] = {k: previous[k] for k in RUN_FACTS if k in previous}
    elif previous and previous.get("last_run"):
        record["last_run"] = previous["last_run"]
    return record


def write_record(results: Path, record: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Put ``record`` under ``_run`` (and ``extra``'s keys) in an existing results file, atomically."""
    data = json.loads(results.read_text())
    data[RUN_KEY] = record
    data.update(extra or {})
    atomic_write(results, json.dumps(data, sort_keys=True, indent=1) + "\n")


__all__ = ["PACKAGE", "read_record", "stale_reason", "stamp_files", "stamp_record", "static_closure", "write_record"]
