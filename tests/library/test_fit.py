"""Fitting rationals: accuracy targets, shipped inits reproduce, bad input."""

import numpy as np
import pytest
import torch

from nora.fit import ACTIVATIONS, fit_rational, shipped_inits
from nora.rational import GroupRational


def kernel_error(name, lo=-3.0, hi=3.0):
    """Max error of the shipped init evaluated through the torch kernel in float64."""
    layer = GroupRational(1, groups=1, init=name).double()
    x = torch.linspace(lo, hi, 20001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        y = layer(x).squeeze(1).numpy()
    return np.abs(y - ACTIVATIONS[name](x.squeeze(1).numpy())).max()


def test_gelu_type_5_4_meets_the_3e_3_target_through_the_kernel():
    assert kernel_error("gelu") <= 3e-3
    assert kernel_error("gelu_tanh") <= 3e-3


def test_silu_fits_far_better_than_gelu():
    assert kernel_error("silu") <= 1e-5


def test_torch_gelu_agrees_with_the_fitted_target():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    np.testing.assert_allclose(ACTIVATIONS["gelu"](x.numpy()), torch.nn.functional.gelu(x).numpy(), atol=1e-12)
    tanh = torch.nn.functional.gelu(x, approximate="tanh").numpy()
    np.testing.assert_allclose(ACTIVATIONS["gelu_tanh"](x.numpy()), tanh, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_shipped_init_equals_a_fresh_fit_and_records_its_error(name):
    shipped = shipped_inits()[name]
    fresh = fit_rational(name, shipped.degrees, shipped.interval)
    x = np.linspace(*shipped.interval, 4001)
    assert np.abs(shipped(x) - fresh(x)).max() <= 1e-6
    assert shipped.max_error == pytest.approx(fresh.max_error, rel=1e-3, abs=1e-12)
    # The module stores coefficients in fp32: rounding them adds up to ~1e-7 relative error.
    assert kernel_error(name) <= shipped.max_error * 1.01 + 1e-6


def test_callable_targets_and_torch_callables_fit():
    fit = fit_rational(torch.nn.functional.softplus, (4, 3), (-4, 4))
    assert fit.max_error < 1e-3


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="unknown activation"):
        fit_rational("gelux")
    with pytest.raises(ValueError, match="degrees"):
        fit_rational("gelu", degrees=(5,))
    with pytest.raises(ValueError, match="interval"):
        fit_rational("gelu", interval=(3, -3))
    with pytest.raises(TypeError, match="fn_or_name"):
        fit_rational(42)
