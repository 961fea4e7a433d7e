"""Chapter 01, Padé density (``notebooks/01_pade_density``): its sizes per profile.

The chapter's computations (approximation rates, AAA, minimax LPs, rate fits) are in
:mod:`nora.experiments.theory`, shared with chapter 02.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROFILES"]

# The chapter's sizes per profile: nora.experiments.profiles.settings("01_pade_density", profile) merges
# PROFILES[profile] over the defaults.
# rational_degrees: AAA types (k, k), k = 1..this; poly_degree: highest polynomial degree;
# abs_degree: highest type (n, n) for |x|; abs_poly_degrees: degrees of the minimax LP for |x|;
# lp_points / aaa_points: sample grids; minimax_types: the types of GELU's unconstrained best
# fits set against form A (the other activations: (5, 4)); vit_images: downstream images per
# task and seed pushed through the pre-trained backbone; wide_fit_lawson: Lawson steps of the
# GELU refit on a wider interval.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"rational_degrees": 6, "poly_degree": 24, "abs_degree": 12, "abs_poly_degrees": (2, 4, 8),
              "lp_points": 801, "aaa_points": 400, "minimax_types": ((5, 4),), "vit_images": 8, "wide_fit_lawson": 3},
    "book": {"rational_degrees": 24, "poly_degree": 120, "abs_degree": 48,
             "abs_poly_degrees": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128),
             "lp_points": 4001, "aaa_points": 2000, "minimax_types": ((3, 2), (4, 3), (5, 4), (6, 5), (7, 6)),
             "vit_images": 256, "wide_fit_lawson": 60},
    "paper": {"rational_degrees": 24, "poly_degree": 120, "abs_degree": 48,
              "abs_poly_degrees": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128),
              "lp_points": 4001, "aaa_points": 2000, "minimax_types": ((3, 2), (4, 3), (5, 4), (6, 5), (7, 6)),
              "vit_images": 1024, "wide_fit_lawson": 60},
}
