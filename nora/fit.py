"""Fitting safe (form A) rational coefficients to an activation, and the shipped inits.

The fit minimises the maximum error on the interval: a linearised least-squares start, a
nonlinear least-squares refinement in the exact form the kernel evaluates
(P / (1 + sum |b_j| |x|^j)), then Lawson's iteratively reweighted least squares, which drives
the weighted L2 solution towards the minimax one.  Everything is deterministic, so the shipped
coefficients in ``inits.json`` are reproducible: ``python -m nora.fit`` rewrites them and the
tests re-fit and compare.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares, lsq_linear
from scipy.special import erf

__all__ = [
    "ACTIVATIONS",
    "RationalFit",
    "evaluate",
    "fit_rational",
    "shipped_init",
    "shipped_inits",
    "validate_degrees",
]

INITS_PATH = Path(__file__).with_name("inits.json")
SHIPPED_DEGREES = (5, 4)
SHIPPED_INTERVAL = (-3.0, 3.0)

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "identity": lambda x: np.asarray(x, dtype=float).copy(),
}


@dataclass(frozen=True)
class RationalFit:
    """Coefficients of P/(1 + sum |b_j||x|^j) fitted to ``name`` on ``interval``, with their errors."""

    name: str
    degrees: tuple[int, int]
    interval: tuple[float, float]
    numerator: tuple[float, ...]
    denominator: tuple[float, ...]
    max_error: float
    rms_error: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return evaluate(np.asarray(self.numerator), np.asarray(self.denominator), x)


def validate_degrees(degrees) -> tuple[int, int]:
    """(m, n) with m >= 1 and n >= 1 integers; anything else raises a ValueError naming ``degrees``."""
    ok = (
        isinstance(degrees, (tuple, list))
        and len(degrees) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) for d in degrees)
        and degrees[0] >= 1
        and degrees[1] >= 1
    )
    if not ok:
        raise ValueError(f"degrees must be a pair of ints (m >= 1, n >= 1), got {degrees!r}")
    return int(degrees[0]), int(degrees[1])


def evaluate(num: np.ndarray, den: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Form-A rational in float64 numpy (the fitting counterpart of ``nora.rational``)."""
    x = np.asarray(x, dtype=float)
    p = np.polyval(np.asarray(num)[::-1], x)
    ax = np.abs(x)
    q = 1.0 + ax * np.polyval(np.abs(np.asarray(den))[::-1], ax)
    return p / q


def _resolve(fn_or_name) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    if isinstance(fn_or_name, str):
        if fn_or_name not in ACTIVATIONS:
            raise ValueError(f"unknown activation name {fn_or_name!r}; known: {sorted(ACTIVATIONS)}")
        return fn_or_name, ACTIVATIONS[fn_or_name]
    if callable(fn_or_name):
        return getattr(fn_or_name, "__name__", "custom"), fn_or_name
    raise TypeError(f"fn_or_name must be an activation name or a callable, got {type(fn_or_name).__name__}")


def _target_values(fn, x: np.ndarray) -> np.ndarray:
    """Evaluate a numpy or torch callable in float64."""
    try:
        y = fn(x)
    except TypeError:
        import torch

        y = fn(torch.from_numpy(x)).detach().double().numpy()
    if hasattr(y, "detach"):
        y = y.detach().double().numpy()
    y = np.asarray(y, dtype=float)
    if y.shape != x.shape or not np.all(np.isfinite(y)):
        raise ValueError("the activation must map a float64 array to finite values of the same shape")
    return y


def fit_rational(
    fn_or_name,
    degrees: tuple[int, int] = SHIPPED_DEGREES,
    interval: tuple[float, float] = SHIPPED_INTERVAL,
    *,
    n_points: int = 2000,
    lawson_steps: int = 60,
    weight: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RationalFit:
    """Fit form-A coefficients of type ``degrees`` to an activation on ``interval`` (near-minimax).

    ``weight`` optionally gives a non-negative importance per point (e.g. a pre-activation
    density); the reported errors are then weighted the same way.
    """
    m, n = validate_degrees(degrees)
    lo, hi = (float(v) for v in interval)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"interval must be (lo, hi) with lo < hi, got {interval!r}")
    name, fn = _resolve(fn_or_name)
    # Chebyshev points cluster at the ends, where minimax errors peak.
    x = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.linspace(math.pi, 0.0, n_points))
    y = _target_values(fn, x)
    w0 = np.ones_like(x) if weight is None else np.asarray(weight(x), dtype=float)
    if w0.shape != x.shape or np.any(w0 < 0) or not np.any(w0 > 0):
        raise ValueError("weight must return non-negative values, not all zero, one per point")

    ax = np.abs(x)
    # Only |b| enters the form, so b >= 0 loses nothing and removes the kink of |b| at 0.
    lower = np.r_[np.full(m + 1, -np.inf), np.zeros(n)]
    # Linearised start: P(x) - f(x) * sum b_j |x|^j ~= f(x).
    design = np.column_stack([x**k for k in range(m + 1)] + [-y * ax**j for j in range(1, n + 1)])
    theta = lsq_linear(design * w0[:, None], y * w0, bounds=(lower, np.inf)).x

    def residual(t, w):
        return w * (evaluate(t[: m + 1], t[m + 1 :], x) - y)

    def refine(t, w):
        return least_squares(
            residual, t, args=(w,), bounds=(lower, np.inf), method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15
        ).x

    theta = refine(theta, w0)
    best, best_err = theta, np.max(np.abs(residual(theta, w0)))
    lawson = np.full_like(x, 1.0 / x.size)
    for _ in range(lawson_steps):
        lawson = lawson * np.abs(residual(theta, w0))
        total = lawson.sum()
        if not np.isfinite(total) or total == 0:
            break
        lawson /= total
        theta = refine(theta, w0 * np.sqrt(lawson))
        cur = np.max(np.abs(residual(theta, w0)))
        if cur < best_err:
            best, best_err = theta, cur

    dense = np.linspace(lo, hi, 20001)
    dense_w = np.ones_like(dense) if weight is None else np.asarray(weight(dense), dtype=float)
    dense_err = dense_w * np.abs(evaluate(best[: m + 1], best[m + 1 :], dense) - _target_values(fn, dense))
    return RationalFit(
        name=name,
        degrees=(m, n),
        interval=(lo, hi),
        numerator=tuple(float(v) for v in best[: m + 1]),
        denominator=tuple(float(v) for v in best[m + 1 :]),
        max_error=float(dense_err.max()),
        rms_error=float(np.sqrt(np.mean(dense_err**2))),
    )


@lru_cache(maxsize=1)
def shipped_inits() -> dict[str, RationalFit]:
    """The (5, 4) fits on [-3, 3] that ship with the package, keyed by activation name."""
    raw = json.loads(INITS_PATH.read_text())
    return {
        name: RationalFit(
            name=name,
            degrees=tuple(entry["degrees"]),
            interval=tuple(entry["interval"]),
            numerator=tuple(entry["numerator"]),
            denominator=tuple(entry["denominator"]),
            max_error=entry["max_error"],
            rms_error=entry["rms_error"],
        )
        for name, entry in raw["inits"].items()
    }


def shipped_init(name: str, degrees=SHIPPED_DEGREES, interval=SHIPPED_INTERVAL) -> RationalFit | None:
    """The shipped fit for ``name`` if it matches ``degrees`` and ``interval``, else None."""
    fit = shipped_inits().get(name)
    if fit is None or tuple(degrees) != fit.degrees or tuple(float(v) for v in interval) != fit.interval:
        return None
    return fit


def _outside(fit: RationalFit) -> dict[str, float]:
    """Max error on wider intervals than the fitted one: every (m, m-1) fit degrades out there."""
    fn = ACTIVATIONS[fit.name]
    out = {}
    for half in (5.0, 8.0):
        x = np.linspace(-half, half, 20001)
        out[f"[-{half:g},{half:g}]"] = float(np.abs(fit(x) - fn(x)).max())
    return out


def write_shipped_inits(path: Path = INITS_PATH) -> dict[str, RationalFit]:
    """Re-fit every shipped activation and write ``inits.json`` (run as ``python -m nora.fit``)."""
    fits = {name: fit_rational(name) for name in ACTIVATIONS}
    payload = {
        "form": "A: P(x) / (1 + sum_j |b_j| |x|^j); numerator a_0..a_m, denominator |b_1|..|b_n|",
        "generated_by": "python -m nora.fit",
        "inits": {
            name: {k: v for k, v in asdict(f).items() if k != "name"} | {"max_error_outside": _outside(f)}
            for name, f in fits.items()
        },
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    shipped_inits.cache_clear()
    return fits


if __name__ == "__main__":
    for key, fit in write_shipped_inits().items():
        print(f"{key:10s} max error {fit.max_error:.3e}  rms {fit.rms_error:.3e}  on {fit.interval}")
