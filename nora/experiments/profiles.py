"""Run profiles (smoke / book / paper): which one is active, and how big each notebook runs in it.

A notebook's parameters cell holds ``profile = None``, ``seeds = None`` and its chapter's main
settings, each ``None`` (the profile's value) with a one-line comment, so that papermill documents
them (``papermill --help-notebook``) and takes them (``-p epochs 50``). The notebook then calls
``resolve_profile(profile)`` and ``settings("NN_topic", profile, seeds=seeds, epochs=epochs, ...)``,
which applies the values that are not None over the profile's (a dict merges key by key) and
remembers what was used: :func:`nora.experiments.results.record` stores it as ``_parameters``.
What "smoke", "book" and "paper" mean for a chapter is written next to its code: the chapter module
that ``nora.experiments.CHAPTERS`` names (e.g. ``04_vit_transfer`` -> ``vit_transfer.py``) holds
``PROFILES = {"smoke": {...}, "book": {...}, "paper": {...}}`` (a plain dict literal, reviewed like
code), merged over :data:`DEFAULTS`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from typing import Any

from nora.experiments import CHAPTERS

__all__ = ["DEFAULTS", "DEFAULT_SEEDS", "ENV_VAR", "PROFILE_NAMES", "all_profiles", "chapter_profiles",
           "parameters_used", "resolve_profile", "resolve_seeds", "settings"]

PROFILE_NAMES = ("smoke", "book", "paper")
ENV_VAR = "NORA_PROFILE"

DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0,), "book": (0, 1, 2), "paper": (0, 1, 2)}

# Settings every notebook gets, under its chapter's own.
DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": {"device": "cpu", "download": False},
    "book": {"device": "cpu", "download": False},
    "paper": {"device": "cuda", "download": True},
}


def resolve_profile(profile: str | None = None) -> str:
    """Return the active profile: ``profile`` if given, else $NORA_PROFILE, else "book"."""
    source = "profile"
    if profile is None:
        profile = os.environ.get(ENV_VAR) or "book"
        source = f"profile (from ${ENV_VAR})"
    if not isinstance(profile, str) or profile not in PROFILE_NAMES:
        raise ValueError(f"{source} must be one of {PROFILE_NAMES}; got {profile!r}")
    return profile


def resolve_seeds(profile: str | None = None, override: Iterable[int] | None = None) -> tuple[int, ...]:
    """Return the seeds to run: ``override`` if given (the notebook's ``seeds`` parameter), else the profile's default."""
    name = resolve_profile(profile)
    if override is None:
        return DEFAULT_SEEDS[name]
    if isinstance(override, int | str):
        override = [override]  # type: ignore[list-item]
    out = tuple(override)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
        raise ValueError(f"seeds must be a non-empty list of non-negative ints; got {override!r}")
    return out


def chapter_profiles(notebook: str) -> dict[str, dict[str, Any]]:
    """The ``PROFILES`` of the notebook's chapter module (``nora.experiments.CHAPTERS``); {} for a notebook without one."""
    key = notebook.removesuffix(".ipynb").rsplit("/", 1)[-1]
    module = CHAPTERS.get(key)
    if module is None:
        return {}
    return importlib.import_module(f"nora.experiments.{module}").PROFILES


# What the last settings(...) call with parameters used, by notebook: results.record stores it.
_USED: dict[str, dict[str, Any]] = {}


def _tupled(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tupled(v) for v in value)
    if isinstance(value, dict):
        return {k: _tupled(v) for k, v in value.items()}
    return value


def _override(field: str, value: Any, default: Any) -> Any:
    """``value`` in place of ``default``, checked against its type (lists become tuples; a dict merges key by key)."""
    def wrong(kind: str) -> ValueError:
        return ValueError(f"{field} must be {kind} (the profile has {default!r}); got {value!r}")

    if default is None:
        return _tupled(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise wrong("True or False")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an int")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise wrong("a list")
        if not default:
            return _tupled(value)
        return tuple(_override(f"{field}[{i}]", v, default[min(i, len(default) - 1)] if len(set(map(type, default))) > 1
                               else default[0]) for i, v in enumerate(value))
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise wrong("a dict")
        merged = dict(default)
        for key, item in value.items():
            if key not in default:
                raise ValueError(f"{field}[{key!r}] is not a setting; {field} has {sorted(default)}")
            merged[key] = _override(f"{field}[{key!r}]", item, default[key])
        return merged
    return value


def settings(notebook: str, profile: str | None = None, **parameters: Any) -> dict[str, Any]:
    """Return the notebook's settings for the profile (its chapter's entry merged over the defaults), plus ``profile`` and ``seeds``.

    ``parameters`` are the notebook's papermill parameters: each that is not None replaces the
    profile's value (``seeds`` through :func:`resolve_seeds`; a dict is merged key by key; lists
    become tuples), and a name that is not one of the settings is a ValueError naming it. The
    values used for every name passed (None: the profile's) are kept for
    :func:`parameters_used`, which :func:`nora.experiments.results.record` stores.
    """
    if not isinstance(notebook, str) or not notebook:
        raise ValueError(f"notebook must be a notebook name like '03_method'; got {notebook!r}")
    name = resolve_profile(profile)
    merged: dict[str, Any] = {"profile": name, "seeds": DEFAULT_SEEDS[name]}
    merged.update(DEFAULTS[name])
    key = notebook.removesuffix(".ipynb").rsplit("/", 1)[-1]
    merged.update(chapter_profiles(key).get(name, {}))
    if not parameters:
        return merged
    for field, value in parameters.items():
        if field not in merged:
            raise ValueError(f"{field!r} is not a setting of {key} in the {name} profile; its settings are {sorted(merged)}")
        if value is None or field == "profile":
            continue
        merged[field] = resolve_seeds(name, value) if field == "seeds" else _override(field, value, merged[field])
    _USED[key] = {"profile": name, **{field: merged[field] for field in parameters}}
    return merged


def parameters_used(notebook: str) -> dict[str, Any] | None:
    """The parameter values the notebook's last ``settings(..., **parameters)`` call used (None: no such call)."""
    return _USED.get(notebook.removesuffix(".ipynb").rsplit("/", 1)[-1])


def all_profiles() -> dict[str, dict[str, dict[str, Any]]]:
    """Every chapter's ``PROFILES`` by notebook name, with the defaults under "default" (imports every chapter module)."""
    return {"default": DEFAULTS, **{notebook: chapter_profiles(notebook) for notebook in CHAPTERS}}

