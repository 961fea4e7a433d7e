"""nora.experiments.theory: approximation-rate measurements, empirical NTK blocks and the Theorem A.1 bound."""

from __future__ import annotations

import copy
import math
import sys

import nora
import numpy as np
import pytest
import torch

from nora.experiments import theory
from nora.rational import rational, rational_reference

BERNSTEIN = 0.2801694990  # lim n E_n(|x|) (Varga & Carpenter 1985)


# ------------------------------------------------------------------------------ approximation


def test_minimax_polynomial_error_on_abs_decays_like_bernstein_over_n():
    degrees = [8, 16, 32, 64]
    best = [theory.poly_minimax(np.abs, n, (-1, 1), n_points=2001) for n in degrees]
    for n, b in zip(degrees, best):
        assert b.lower <= b.upper
        assert b.lower * n <= BERNSTEIN * 1.001 and b.upper * n >= 0.27  # the bracket sits at beta / n
    rates = theory.fit_rates(degrees, [b.upper for b in best])
    assert rates["algebraic"].rate == pytest.approx(1.0, abs=0.05)  # E_n ~ n^-1
    assert rates["algebraic"].r2 > 0.999 > rates["geometric"].r2


def test_newman_approximant_is_below_his_bound_and_root_exponential():
    x = np.r_[-np.logspace(-14, 0, 4000), 0.0, np.logspace(-14, 0, 4000)]
    ns = np.arange(4, 65, 4)
    errors = [np.max(np.abs(theory.newman_abs(int(n))(x) - np.abs(x))) for n in ns]
    assert all(e <= 3 * math.exp(-math.sqrt(n)) for n, e in zip(ns, errors))
    rates = theory.fit_rates(ns, errors)
    assert rates["root-exponential"].r2 > rates["geometric"].r2
    assert rates["root-exponential"].r2 > 0.99


def test_rational_minimax_recovers_an_exact_rational_and_its_pole():
    best = theory.rational_minimax(lambda x: 1.0 / (x + 2.0), 0, 1, (-1, 1), n_points=501)
    assert best.error < 1e-9
    assert best.poles()[0] == pytest.approx(-2.0, abs=1e-6)
    assert best.min_abs_q() == pytest.approx(1 / 3, rel=1e-6)  # Q ~ x + 2 on [-1, 1]


def test_rational_minimax_equioscillates_and_beats_polynomials():
    m, n = 2, 2
    best = theory.rational_minimax(np.exp, m, n, (-1, 1), n_points=2001)
    assert best.converged
    x = np.linspace(-1, 1, 20001)
    err = best(x) - np.exp(x)
    # best approximation of a non-degenerate type (m, n): m + n + 2 alternating extrema of equal size
    peaks = np.flatnonzero(np.abs(err) > 0.98 * np.abs(err).max())
    signs = np.sign(err[peaks])
    alternations = 1 + int(np.sum(signs[1:] != signs[:-1]))
    assert alternations >= m + n + 2
    poly = theory.poly_minimax(np.exp, m + n, (-1, 1), n_points=2001)
    assert best.error < poly.lower  # (2,2) has as many coefficients as degree 4, and does better on exp


def test_aaa_finds_the_poles_of_tanh_and_geometric_rates_fit():
    results = [theory.aaa_error(np.tanh, k, (-3, 3), n_points=600) for k in range(1, 9)]
    nearest = results[-1].poles[np.argmin(theory.pole_distance(results[-1].poles, (-3, 3)))]
    assert abs(abs(nearest.imag) - math.pi / 2) < 1e-4 and abs(nearest.real) < 1e-4
    errors = theory.running_min([r.error for r in results])
    assert np.all(np.diff(errors) <= 0)
    assert theory.fit_rates(2 * np.arange(1, 9), errors)["geometric"].r2 > 0.95


def test_abs_aaa_is_root_exponential_and_rejects_odd_degrees():
    errors = [theory.abs_aaa_error(n, n_points=600).error for n in (8, 16, 24, 32)]
    assert errors[-1] < 1e-5 and all(b < a for a, b in zip(errors, errors[1:]))
    with pytest.raises(ValueError, match="even"):
        theory.abs_aaa_error(5)


def test_bernstein_rho_predicts_the_chebyshev_interpolation_rate_for_runge():
    runge = lambda x: 1.0 / (1.0 + 25.0 * x**2)  # poles at +-i/5
    ns = np.arange(10, 81, 10)
    errors = [theory.poly_interp_error(runge, int(n), (-1, 1)) for n in ns]
    measured = math.exp(theory.fit_rates(ns, errors)["geometric"].rate)
    assert measured == pytest.approx(theory.bernstein_rho(0.2j, (-1, 1)), rel=0.03)
    assert theory.bernstein_rho(0.2j, (-1, 1)) == pytest.approx(0.2 + math.sqrt(1.04), rel=1e-12)


def test_fit_rates_identifies_each_law_and_rejects_too_few_points():
    n = np.arange(2, 40, 2, dtype=float)
    laws = {"geometric": 3.0 * 1.7**-n, "root-exponential": 2.0 * np.exp(-2.5 * np.sqrt(n)), "algebraic": 0.3 / n**1.5}
    for law, errors in laws.items():
        fits = theory.fit_rates(n, errors)
        assert max(fits.values(), key=lambda r: r.r2).model == law
    assert theory.fit_rates(n, laws["geometric"])["geometric"].rate == pytest.approx(math.log(1.7))
    assert theory.fit_rates(n, laws["algebraic"])["algebraic"].rate == pytest.approx(1.5)
    with pytest.raises(ValueError, match="at least 3"):
        theory.fit_rates([1, 2, 3], [1e-14, 1e-15, 1e-16])
    with pytest.raises(ValueError, match="interval"):
        theory.poly_minimax(np.abs, 4, (1, -1))


def test_degree_needed_and_running_min():
    assert theory.degree_needed([2, 4, 6], [1e-3, 1e-7, 1e-9], 1e-6) == 4
    assert theory.degree_needed([2, 4], [1e-3, 1e-4], 1e-6) is None
    assert list(theory.running_min([3.0, 1.0, 2.0, 0.5])) == [3.0, 1.0, 1.0, 0.5]


# ------------------------------------------------------------------------ rationals in torch.func


def test_rational_functional_matches_nora_rational_including_the_subgradient_at_zero():
    torch.manual_seed(0)
    x = torch.randn(7, 16, dtype=torch.float64, requires_grad=True)
    num = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    den = torch.randn(4, 4, dtype=torch.float64)
    den[1, 2] = 0.0
    den.requires_grad_(True)
    ours, lib = theory.rational_functional(x, num, den), rational(x, num, den)
    assert torch.allclose(ours, lib, atol=1e-13)
    g_ours = torch.autograd.grad(ours.square().sum(), (x, num, den))
    g_lib = torch.autograd.grad(lib.square().sum(), (x, num, den))
    for a, b in zip(g_ours, g_lib):
        assert torch.allclose(a, b, atol=1e-11)
    assert g_ours[2][1, 2] != 0  # sub-gradient +1 at b = 0, like nora.rational ...
    ref = rational_reference(x, num, den)
    assert torch.autograd.grad(ref.square().sum(), den)[0][1, 2] == 0  # ... unlike the plain-ops reference


def test_jacobian_of_a_linear_model_gives_the_ntk_x_xt():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3, bias=False).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    jac = theory.jacobian(model, x, ["weight"], chunk=4)
    assert jac.shape == (6 * 3, 15)
    assert torch.allclose(jac @ jac.T, torch.kron(x @ x.T, torch.eye(3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="unknown"):
        theory.jacobian(model, x, ["nope"])


def test_jacobian_through_nora_layers_matches_autograd():
    torch.manual_seed(1)
    model = nora.apply_nora(theory.rational_mlp([6, 8, 4], groups=2), nora.NoraConfig(groups=2, target="rational")).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_B"):
                p.normal_(0, 0.05)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    x = torch.randn(3, 6, dtype=torch.float64)
    jac = theory.jacobian(model, x, names)
    out = model(x)
    params = [dict(model.named_parameters())[n] for n in names]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[i, c], params, retain_graph=True)])
            for i in range(3) for c in range(4)]
    assert torch.allclose(jac, torch.stack(rows), atol=1e-12)
    assert sys.modules["nora.rational"].rational is rational  # the patch is undone after the block
    assert sys.modules["nora.adapters.nora"].rational is rational


def test_activation_jacobian_rank_respects_the_bounds_of_appendix_a1():
    torch.manual_seed(2)
    groups, layers = 2, 2
    base = theory.rational_mlp([5, 8, 8, 4], groups=groups).double()
    x = torch.randn(40, 5, dtype=torch.float64)  # 160 rows, more than any bound below
    coef = [n for n, _ in base.named_parameters() if n.endswith(("numerator", "denominator"))]
    jac = theory.jacobian(base, x, coef)
    bound = layers * groups * 10
    assert jac.shape[1] == bound
    assert theory.numerical_rank(jac, 1e-10) <= bound
    assert theory.numerical_rank(jac, 1e-10) >= bound - 4  # (nearly) attained on a generic network
    nora_model = nora.apply_nora(copy.deepcopy(base).float(), nora.NoraConfig(groups=groups, rank=1, target="rational")).double()
    factors = [n for n, p in nora_model.named_parameters() if p.requires_grad]
    jac_f = theory.jacobian(nora_model, x, factors)
    sizes = [dict(nora_model.named_parameters())[n].numel() for n in factors]
    blocks = dict(zip(factors, torch.split(jac_f, sizes, dim=1)))
    assert all(torch.all(blocks[n] == 0) for n in factors if n.endswith("_A"))  # B = 0: no first-order A direction
    assert theory.numerical_rank(jac_f, 1e-10) <= layers * 2 * groups * 1


# ------------------------------------------------------------------------------ kernel measures


def test_effective_rank_and_participation_ratio_of_known_spectra():
    assert theory.effective_rank(np.array([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0)
    assert theory.participation_ratio(np.array([1.0, 1.0, 0.0])) == pytest.approx(2.0)
    spectrum = np.array([4.0, 1.0])
    p = spectrum / spectrum.sum()
    assert theory.effective_rank(spectrum) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    k = torch.diag(torch.tensor([5.0, 5.0, 0.0]))
    assert theory.effective_rank(k) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="square"):
        theory.effective_rank(np.ones((2, 3)))


def test_kernel_alignment():
    torch.manual_seed(0)
    a = torch.randn(6, 3)
    k = a @ a.T
    assert theory.kernel_alignment(k, 3 * k) == pytest.approx(1.0)
    e1, e2 = torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))
    assert theory.kernel_alignment(e1, e2) == 0.0
    ones = torch.ones(4, 4)
    assert theory.kernel_alignment(ones + torch.eye(4), torch.eye(4), centered=True) == pytest.approx(1.0)


def test_mean_direction_ratio_separates_zero_mean_from_biased_draws():
    gen = np.random.default_rng(0)
    zero = gen.normal(size=(40, 500))
    r0, se0 = theory.mean_direction_ratio(zero @ zero.T)
    assert abs(r0) < 3 * se0 and abs(r0) < 0.02
    mu = np.full(500, 0.5)  # ||mu||^2 / E||C||^2 = 125 / (125 + 500) = 0.2
    biased = mu + gen.normal(size=(40, 500))
    r1, se1 = theory.mean_direction_ratio(biased @ biased.T)
    assert r1 == pytest.approx(0.2, abs=0.03) and r1 > 5 * se1
    with pytest.raises(ValueError, match="at least 3"):
        theory.mean_direction_ratio(np.eye(2))


# -------------------------------------------------------------------------------- Theorem A.1


def test_deviation_bound_arithmetic():
    deltas = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    # L = 3: term 1 = ||W3|| Lip2 ||W2|| Delta1 = 4 * 0.5 * 3; term 2 = ||W3|| Delta2 = 4
    assert float(theory.deviation_bound([2.0, 3.0, 4.0], [7.0, 0.5], deltas)[0]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="L weight norms"):
        theory.deviation_bound([1.0, 2.0], [1.0, 1.0], deltas)


def test_theorem_a1_bound_holds_and_is_zero_without_a_change():
    torch.manual_seed(3)
    base = theory.rational_mlp([10, 16, 16, 16, 4], groups=4).double()
    x = torch.randn(64, 10, dtype=torch.float64)
    same = theory.theorem_a1(base, copy.deepcopy(base), x)
    assert float(same.actual.max()) == 0 and float(same.pointwise.max()) == 0
    for sigma in (1e-3, 1e-2):
        perturbed = nora.apply_nora(copy.deepcopy(base).float(), nora.NoraConfig(groups=4, target="rational")).double()
        with torch.no_grad():
            for name, p in perturbed.named_parameters():
                if name.endswith("_B"):
                    p.normal_(0, sigma)
        report = theory.theorem_a1(base, perturbed, x)
        assert torch.all(report.pointwise >= report.actual)
        assert torch.all(report.uniform >= report.pointwise)
        assert float(report.actual.max()) > 0
    with pytest.raises(ValueError, match="same Linear"):
        theory.theorem_a1(base, theory.rational_mlp([10, 16, 16, 16, 4], groups=4).double(), x)


def test_lipschitz_and_elementwise_derivative_of_the_gelu_fit():
    layer = nora.GroupRational(8, groups=2).double()
    fit = nora.shipped_inits()["gelu"]
    u = np.linspace(-3, 3, 4001)
    slope = np.max(np.abs(np.gradient(fit(u), u)))
    assert theory.activation_lipschitz(layer, 8, (-3, 3)) == pytest.approx(slope, rel=1e-3)
    assert theory.lipschitz_constant(lambda t: theory.rational_functional(
        t[:, None], layer.numerator[:1], layer.denominator[:1])[:, 0], (-3, 3), n=4001) == pytest.approx(slope, rel=1e-3)
    z = torch.randn(5, 8, dtype=torch.float64)
    d = theory.elementwise_derivative(layer, z)
    eps = 1e-6
    assert torch.allclose(d, (layer(z + eps) - layer(z - eps)) / (2 * eps), atol=1e-6)


def test_collect_inputs_returns_the_pre_activations_in_order():
    torch.manual_seed(0)
    model = theory.rational_mlp([3, 4, 4, 2], groups=2)
    x = torch.randn(5, 3)
    seen = theory.collect_inputs(model, x, (nora.GroupRational,))
    assert list(seen) == ["1", "3"]
    assert torch.allclose(seen["1"], model[0](x))
    with pytest.raises(ValueError, match="no module"):
        theory.collect_inputs(model, x, (torch.nn.Conv2d,))


def test_swap_activations_replaces_only_the_named_modules_of_a_copy():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    fit = nora.shipped_inits()["gelu"]
    make = lambda name, old: nora.GroupRational(8, 1, init=(torch.tensor(fit.numerator), torch.tensor(fit.denominator)))
    swapped = theory.swap_activations(model, ["1"], make)
    assert isinstance(model[1], torch.nn.GELU) and isinstance(swapped[1], nora.GroupRational)
    x = torch.randn(16, 4)
    assert torch.allclose(swapped(x), model(x), atol=5e-3)  # the fit is within 1.3e-3 of GELU on [-3, 3]
    with pytest.raises(ValueError, match="no submodule"):
        theory.swap_activations(model, ["5"], make)


def test_report_records_only_headline_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("NORA_RESULTS_DIR", str(tmp_path))
    out = theory.report("01_x", "smoke", {"a": np.float64(0.5), "b": 3, "c": "text"}, headline=["a"], paper={"a": "0.4"})
    assert out == {"a": 0.5, "b": 3, "c": "text"} and type(out["a"]) is float
    stored = nora.experiments.results.load_all("smoke")
    assert stored == {"01_x": {"values": {"a": 0.5}, "paper": {"a": "0.4"}}}
    with pytest.raises(ValueError, match="headline"):
        theory.report("01_x", "smoke", {"a": 1.0}, headline=["z"])


def test_rational_mlp_validates_its_widths():
    model = theory.rational_mlp([4, 8, 2], groups=4)
    assert [type(m).__name__ for m in model] == ["Linear", "GroupRational", "Linear"]
    with pytest.raises(ValueError, match="widths"):
        theory.rational_mlp([4, 2])
