"""Notebook results: one JSON file per notebook and profile, plus myst-nb glue for the prose.

``results/<profile>/<notebook>.json`` holds ``{"notebook", "profile", "values", "paper"}``:
``values`` are this run's headline numbers, ``paper`` the paper's reported numbers for the same
keys (so the results page can set them side by side). Recording again merges keys.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from nora.experiments.profiles import resolve_profile

RESULTS_ENV = "NORA_RESULTS_DIR"
_ROOT_MARKERS = ("_toc.yml", "pyproject.toml")


def results_dir(out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where results go: ``out_dir`` if given, else $NORA_RESULTS_DIR, else ``results/`` at the project root above the cwd."""
    if out_dir is not None:
        path = Path(out_dir)
        if path.is_absolute():
            return path
        return _project_root() / path
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    return _project_root() / "results"


def _project_root() -> Path:
    """The nearest ancestor of the cwd holding _toc.yml or pyproject.toml (notebooks run from notebooks/)."""
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if any((folder / marker).is_file() for marker in _ROOT_MARKERS):
            return folder
    return cwd


def _plain(value: Any, field: str) -> Any:
    """Convert numpy / torch scalars and containers to JSON types; reject anything else."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _plain(value.item(), field)
    if hasattr(value, "tolist"):
        return _plain(value.tolist(), field)
    if isinstance(value, list | tuple):
        return [_plain(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{field}.{k}") for k, v in value.items()}
    raise ValueError(f"{field}: cannot store a {type(value).__name__} in results JSON")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str) and not (isinstance(value, float) and math.isnan(value))


def _in_kernel() -> bool:
    """True when called from a running Jupyter kernel (papermill, nbval, a notebook server)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def record(
    notebook: str,
    profile: str | None,
    values: dict[str, Any],
    out_dir: str | os.PathLike[str] | None = None,
    paper: dict[str, Any] | None = None,
) -> None:
    """Merge ``values`` (and the paper's reported ``paper`` numbers) into results/<profile>/<notebook>.json; glue scalars in a kernel."""
    if not isinstance(notebook, str) or not notebook or "/" in notebook:
        raise ValueError(f"notebook must be a notebook name like '03_method'; got {notebook!r}")
    name = resolve_profile(profile)
    if not isinstance(values, dict):
        raise ValueError(f"values must be a dict of results; got {type(values).__name__}")
    plain = {str(k): _plain(v, f"values[{k!r}]") for k, v in values.items()}
    reported = {str(k): _plain(v, f"paper[{k!r}]") for k, v in (paper or {}).items()}
    path = results_dir(out_dir) / name / f"{notebook.removesuffix('.ipynb')}.json"
    data: dict[str, Any] = {"notebook": path.stem, "profile": name, "values": {}, "paper": {}}
    if path.is_file():
        old = json.loads(path.read_text())
        data["values"].update(old.get("values", {}))
        data["paper"].update(old.get("paper", {}))
    data["values"].update(plain)
    data["paper"].update(reported)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")
    if _in_kernel():
        from myst_nb import glue

        for key, value in plain.items():
            if _is_scalar(value):
                glue(key, value, display=False)


def load_all(profile: str, out_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every notebook's record for a profile: ``{notebook: {"values": ..., "paper": ...}}``, sorted by notebook."""
    name = resolve_profile(profile)
    folder = results_dir(out_dir) / name
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        out[path.stem] = {"values": data.get("values", {}), "paper": data.get("paper", {})}
    return out
