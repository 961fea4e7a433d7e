"""Run profiles (smoke / book / paper): which one is active, and how big each notebook runs in it.

A notebook's parameters cell holds ``profile = None`` and ``seeds = None``; the notebook then calls
``resolve_profile(profile)``, ``resolve_seeds(profile, seeds)`` and ``settings("NN_topic", profile)``.
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
           "resolve_profile", "resolve_seeds", "settings"]

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


def settings(notebook: str, profile: str | None = None) -> dict[str, Any]:
    """Return the notebook's settings for the profile (its chapter's entry merged over the defaults), plus ``profile`` and ``seeds``."""
    if not isinstance(notebook, str) or not notebook:
        raise ValueError(f"notebook must be a notebook name like '03_method'; got {notebook!r}")
    name = resolve_profile(profile)
    merged: dict[str, Any] = {"profile": name, "seeds": DEFAULT_SEEDS[name]}
    merged.update(DEFAULTS[name])
    merged.update(chapter_profiles(notebook).get(name, {}))
    return merged


def all_profiles() -> dict[str, dict[str, dict[str, Any]]]:
    """Every chapter's ``PROFILES`` by notebook name, with the defaults under "default" (imports every chapter module)."""
    return {"default": DEFAULTS, **{notebook: chapter_profiles(notebook) for notebook in CHAPTERS}}

