"""Run profiles (smoke / book / paper): which one is active, and how big each notebook runs in it.

A notebook's parameters cell holds ``profile = None`` and ``seeds = None``; the notebook then calls
``resolve_profile(profile)``, ``seeds(profile, seeds)`` and ``settings("NN_topic", profile)``, so
one table here, not the notebooks, says what "smoke", "book" and "paper" mean for each of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

PROFILE_NAMES = ("smoke", "book", "paper")
ENV_VAR = "NORA_PROFILE"

DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0,), "book": (0, 1, 2), "paper": (0, 1, 2)}

# Per-notebook settings: PROFILES[notebook][profile] is merged over PROFILES["default"][profile].
# Notebooks add their own entry here (a plain dict literal, reviewed like code).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "smoke": {"device": "cpu", "download": False},
        "book": {"device": "cpu", "download": False},
        "paper": {"device": "cuda", "download": True},
    },
    "03_method": {
        # grid: points of the error curves; perturbations: random NoRA deltas drawn per seed and
        # size; vit_batch: images pushed through ViT-Tiny; pretrained: timm hub weights (paper only).
        "smoke": {"grid": 2001, "perturbations": 2, "vit_batch": 2, "pretrained": False},
        "book": {"grid": 20001, "perturbations": 8, "vit_batch": 8, "pretrained": False},
        "paper": {"grid": 20001, "perturbations": 8, "vit_batch": 32, "pretrained": True},
    },
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


def seeds(profile: str | None = None, override: Iterable[int] | None = None) -> tuple[int, ...]:
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


def settings(notebook: str, profile: str | None = None) -> dict[str, Any]:
    """Return the notebook's settings for the profile (its entry merged over "default"), plus ``profile`` and ``seeds``."""
    if not isinstance(notebook, str) or not notebook:
        raise ValueError(f"notebook must be a notebook name like '03_method'; got {notebook!r}")
    name = resolve_profile(profile)
    key = notebook.removesuffix(".ipynb").rsplit("/", 1)[-1]
    merged: dict[str, Any] = {"profile": name, "seeds": DEFAULT_SEEDS[name]}
    merged.update(PROFILES["default"][name])
    merged.update(PROFILES.get(key, {}).get(name, {}))
    return merged
