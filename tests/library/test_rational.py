"""GroupRational: exact gradients, dtype handling, large inputs, saved memory, grouping — on every CPU path.

Each test that evaluates the rational runs once per backend (``backend`` fixture): the chunked
eager torch-ops path and the fused C++ kernel. The Triton kernels are tested in test_kernels.py.
"""

import math

import pytest
import torch

from nora import kernels
from nora.kernels import cpu
from nora.rational import GroupRational, rational, rational_reference


@pytest.fixture(params=["eager", "cpp"])
def backend(request):
    """Run the test with the rational forced onto one backend (forward and backward)."""
    if request.param == "cpp" and not cpu.available():
        pytest.skip(f"C++ kernel unavailable: {cpu.build_error()}")
    with kernels.use(request.param):
        yield request.param


def coefficients(groups=4, m=5, n=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    num = torch.randn(groups, m + 1, generator=g, dtype=dtype)
    den = torch.randn(groups, n, generator=g, dtype=dtype)
    den = den.sign() * (den.abs() + 0.1)  # away from the kink of |b| at 0
    den[0, 0], den[-1, -1] = den[0, 0].abs(), -den[-1, -1].abs()  # both signs, always
    assert (den < 0).any() and (den > 0).any()
    return num, den


def test_gradcheck_float64_wrt_input_and_every_coefficient(backend):
    num, den = coefficients()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    x = x + 0.05 * x.sign()  # keep away from x = 0, where |x| is not differentiable
    for t in (x, num, den):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(rational, (x, num, den), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape,groups,degrees",
    [((7, 12), 3, (5, 4)), ((2, 5, 24), 8, (5, 4)), ((1, 3, 2, 10), 5, (5, 4)),
     ((4, 6), 2, (1, 1)), ((4, 6), 3, (2, 1)), ((3, 8), 4, (3, 2)), ((3, 8), 2, (1, 3)),
     ((3, 50, 520), 8, (5, 4))],  # > one eager chunk and above the C++ kernel's threading threshold
)
def test_matches_reference_values_and_gradients(shape, groups, degrees, backend):
    num, den = coefficients(groups, *degrees)
    x = (3 * torch.randn(*shape, dtype=torch.float64)).requires_grad_(True)
    args = [x, num.clone().requires_grad_(True), den.clone().requires_grad_(True)]
    ref_args = [a.detach().clone().requires_grad_(True) for a in args]
    out, ref = rational(*args), rational_reference(*ref_args)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in zip(args, ref_args):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_fp32_returned_in_input_dtype(dtype, backend):
    num, den = coefficients(dtype=torch.float32)
    x = torch.randn(6, 16).to(dtype).requires_grad_(True)
    out = rational(x, num, den)
    assert out.dtype == dtype
    expected = rational(x.detach().float(), num, den).to(dtype)
    assert torch.equal(out, expected)
    out.float().sum().backward()
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_outputs_and_gradients_for_large_inputs(dtype, backend):
    num, den = coefficients(groups=2, dtype=torch.float32)
    x = torch.tensor([-1e4, -3e3, -1.0, 0.0, 1.0, 3e3, 1e4, 7e3], dtype=dtype).repeat(2, 1).requires_grad_(True)
    num.requires_grad_(True)
    den.requires_grad_(True)
    out = rational(x, num, den)
    out.float().sum().backward()
    for t in (out, x.grad, num.grad, den.grad):
        assert torch.isfinite(t.float()).all()


def saved_bytes(fn, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total


def test_backward_saves_what_gelu_saves_plus_the_coefficients(backend):
    layer = GroupRational(768, groups=8)
    x = torch.randn(4, 197, 768, requires_grad=True)
    coeff_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    gelu_bytes = saved_bytes(torch.nn.functional.gelu, x)
    assert gelu_bytes == x.numel() * 4
    assert saved_bytes(layer, x) == gelu_bytes + coeff_bytes


def test_groups_are_contiguous_channel_blocks(backend):
    num, den = coefficients(groups=2, dtype=torch.float32)
    x = torch.randn(5, 8)
    out = rational(x, num, den)
    torch.testing.assert_close(out[:, :4], rational(x[:, :4], num[:1], den[:1]))
    torch.testing.assert_close(out[:, 4:], rational(x[:, 4:], num[1:], den[1:]))


def test_denominator_never_below_one_whatever_the_coefficients(backend):
    num = torch.zeros(1, 6)
    num[0, 0] = 1.0  # P = 1, so y = 1 / Q
    den = -torch.rand(1, 4) * 10  # negative b: a signed-x form would create poles
    x = torch.linspace(-50, 50, 10001).unsqueeze(1)
    y = rational(x, num, den)
    assert (y <= 1.0).all() and (y > 0).all()


def test_invalid_construction_names_the_field():
    with pytest.raises(ValueError, match="groups"):
        GroupRational(10, groups=3)
    with pytest.raises(ValueError, match="degrees"):
        GroupRational(8, groups=2, degrees=(0, 4))
    with pytest.raises(ValueError, match="channels"):
        GroupRational(8, groups=2)(torch.randn(2, 6))


def test_regroup_replicates_each_group_into_its_sub_groups(backend):
    layer = GroupRational(16, groups=2)
    with torch.no_grad():
        layer.numerator[1] += 0.5
    grown = layer.regroup(8)
    assert grown.numerator.shape == (8, 6)
    torch.testing.assert_close(grown.numerator[:4], layer.numerator[:1].expand(4, -1))
    torch.testing.assert_close(grown.numerator[4:], layer.numerator[1:].expand(4, -1))
    x = torch.randn(3, 16)
    torch.testing.assert_close(grown(x), layer(x))


def test_fp64_module_inputs_keep_fp64_precision(backend):
    layer = GroupRational(4, groups=1, init="silu").double()
    x = torch.linspace(-2, 2, 4, dtype=torch.float64)
    assert layer(x).dtype == torch.float64
    with torch.no_grad():
        assert math.isclose(float(layer(torch.zeros(4, dtype=torch.float64))[0]), float(layer.numerator[0, 0]))
