"""Chapter 03, the method (``notebooks/03_method``): its sizes per profile.

The chapter calls the library itself (``nora.fit_rational``, ``nora.apply_nora``, ``nora.merge``,
``nora.count_parameters``); it needs no experiment code of its own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROFILES"]

# The chapter's sizes per profile: nora.experiments.profiles.settings("03_method", profile) merges
# PROFILES[profile] over the defaults.
# grid: points of the error curves; perturbations: random NoRA deltas drawn per seed and
# size; vit_batch: images pushed through ViT-Tiny; pretrained: timm hub weights (paper only).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"grid": 2001, "perturbations": 2, "vit_batch": 2, "pretrained": False},
    "book": {"grid": 20001, "perturbations": 8, "vit_batch": 8, "pretrained": False},
    "paper": {"grid": 20001, "perturbations": 8, "vit_batch": 32, "pretrained": True},
}
