"""Chapter 02, NTK complementarity (``notebooks/02_ntk_complementarity``): its sizes per profile.

The chapter's computations (empirical NTKs, Jacobian ranks, the Theorem A.1 bound) are in
:mod:`nora.experiments.theory`, shared with chapter 01.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROFILES"]

# The chapter's sizes per profile: nora.experiments.profiles.settings("02_ntk_complementarity", profile) merges
# PROFILES[profile] over the defaults.
# widths: the MLP of Appendix A, Eq. (9); pretrain_steps / tune_steps: source pre-training and
# NoRA tuning (minibatches of 128); ntk_examples: inputs of the empirical NTKs and of the cross
# term; init_draws: random initialisations averaged for Proposition A.1; rank_examples: inputs for the Jacobian ranks;
# vit: the small timm ViT of the rank check; deviation_examples: inputs for Theorem A.1.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"widths": (64, 32, 32, 10), "pretrain_steps": 40, "tune_steps": 20, "ntk_examples": 8,
              "init_draws": 3, "rank_examples": 30, "vit": {"depth": 2, "embed_dim": 32, "num_heads": 2},
              "vit_examples": 12, "deviation_examples": 64},
    "book": {"widths": (64, 128, 128, 128, 10), "pretrain_steps": 400, "tune_steps": 300, "ntk_examples": 32,
             "init_draws": 16, "rank_examples": 40, "vit": {"depth": 4, "embed_dim": 64, "num_heads": 2},
             "vit_examples": 40, "deviation_examples": 512},
    "paper": {"widths": (64, 128, 128, 128, 10), "pretrain_steps": 400, "tune_steps": 300, "ntk_examples": 32,
              "init_draws": 16, "rank_examples": 40, "vit": {"depth": 4, "embed_dim": 64, "num_heads": 2},
              "vit_examples": 40, "deviation_examples": 512},
}
