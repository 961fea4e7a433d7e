"""The rational's kernels: every fast path against the float64 reference, backend selection, the build cache.

The Triton kernels run compiled on a CUDA machine; without one they run under Triton's CPU
interpreter, which only works if triton was *imported* with TRITON_INTERPRET=1 — in a full test
session something (bitsandbytes, torch) imports it earlier, so ``test_triton_kernels_in_the_interpreter``
re-runs this file's Triton cases in a child process with that variable set.
Correctness only: speed is in benchmarks/.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nora import kernels
from nora.kernels import cpu, eager
from nora.kernels.triton_rational import HAS_TRITON
from nora.rational import GroupRational, rational, rational_reference



def triton_runs_here() -> bool:
    """Triton kernels can run in this process: CUDA, or triton imported in interpreter mode."""
    if not HAS_TRITON:
        return False
    if torch.cuda.is_available():
        return True
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros_like, InterpretedFunction)


FAST = ["cpp"] + (["triton"] if triton_runs_here() else [])
# odd sizes: group widths 1, 3, 7, 13, 65 and 129 (> Triton's 128-channel block), rows not multiples of 32
SHAPES = [((5, 3), 3, (5, 4)), ((7, 21), 3, (5, 4)), ((2, 33, 56), 8, (5, 4)), ((37, 104), 8, (3, 2)),
          ((3, 11, 129), 1, (2, 3)), ((9, 130), 2, (1, 1))]


@pytest.fixture(params=FAST)
def fast(request):
    """A fast backend, forced; Triton runs on CPU tensors through its interpreter unless CUDA is here."""
    if request.param == "cpp" and not cpu.available():
        pytest.skip(f"C++ kernel unavailable: {cpu.build_error()}")
    return request.param


def device_for(backend):
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


def coefficients(groups, m, n, seed):
    g = torch.Generator().manual_seed(seed)
    num = torch.randn(groups, m + 1, generator=g, dtype=torch.float64)
    den = torch.randn(groups, n, generator=g, dtype=torch.float64)
    den = den.sign() * (den.abs() + 0.1)
    den[0, 0], den[-1, -1] = den[0, 0].abs(), -den[-1, -1].abs()  # both signs, always
    return num, den


def relative(a, b):
    return float((a.detach().double() - b.detach()).norm() / b.detach().norm())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("shape,groups,degrees", SHAPES)
def test_fast_paths_match_the_float64_reference(fast, dtype, tol, shape, groups, degrees):
    num, den = coefficients(groups, *degrees, seed=len(shape) + shape[-1])
    x64 = (3 * torch.randn(*shape, dtype=torch.float64)).to(dtype).double()  # representable in dtype
    w = torch.randn(*shape, dtype=torch.float64).to(dtype).double()  # the upstream gradient arrives in dtype
    dev = device_for(fast)
    args = [x64.to(dtype), num.float(), den.float()]
    args = [a.to(dev).requires_grad_(True) for a in args]
    with kernels.use(fast):
        assert kernels.select(*args) == fast
        out = rational(*args)
    (out.double() * w.to(dev)).sum().backward()
    ref_args = [t.clone().requires_grad_(True) for t in (x64, num.float().double(), den.float().double())]
    ref = rational_reference(*ref_args)
    (ref * w).sum().backward()
    assert out.dtype == dtype
    assert relative(out.cpu(), ref) <= tol
    for a, b in zip(args, ref_args):
        assert relative(a.grad.cpu(), b.grad) <= tol


def test_every_output_element_is_written(fast):
    """Outputs start poisoned (NaN): any element a kernel skips would survive."""
    num, den = coefficients(3, 5, 4, seed=1)
    dev = device_for(fast)
    x = torch.randn(37, 3 * 43, device=dev)
    g = torch.randn_like(x)
    a, b = num.float().to(dev), den.abs().float().to(dev)
    module = cpu if fast == "cpp" else __import__("nora.kernels.triton_rational", fromlist=["x"])
    y = module.rational_forward(x, a, b, out=torch.full_like(x, float("nan")))
    dx, sums = module.rational_backward(x, g, a, b, dx=torch.full_like(x, float("nan")))
    xr = x.double().cpu().requires_grad_(True)
    nr, dr = num.clone().requires_grad_(True), den.clone().requires_grad_(True)
    ref = rational_reference(xr, nr, dr)
    (ref * g.double().cpu()).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    assert relative(y.cpu(), ref) <= 1e-5 and relative(dx.cpu(), xr.grad) <= 1e-5
    d_abs = torch.where(den < 0, -dr.grad, dr.grad)  # the kernels return sums w.r.t. |b|
    assert relative(sums.cpu(), torch.cat([nr.grad, d_abs], dim=1)) <= 1e-5


@pytest.mark.parametrize("wanted", ["x", "coefficients", "numerator", "denominator"])
def test_partial_gradient_requests(fast, wanted):
    num, den = coefficients(2, 5, 4, seed=3)
    dev = device_for(fast)
    x = torch.randn(9, 4, 6, device=dev)
    args = [x, num.float().to(dev), den.float().to(dev)]
    need = {"x": [0], "coefficients": [1, 2], "numerator": [1], "denominator": [2]}[wanted]
    for i in need:
        args[i].requires_grad_(True)
    with kernels.use(fast):
        rational(*args).sum().backward()
    ref_args = [a.detach().double().cpu().requires_grad_(i in need) for i, a in enumerate(args)]
    rational_reference(*ref_args).sum().backward()
    for i, (a, b) in enumerate(zip(args, ref_args)):
        assert (a.grad is None) == (i not in need)
        if i in need:
            assert relative(a.grad.cpu(), b.grad) <= 1e-5


def test_all_paths_agree_on_a_gelu_initialised_layer(fast):
    """The shipped fits carry denormal coefficients; fast paths flush them without changing results."""
    layer = GroupRational(96, groups=8)
    dev = device_for(fast)
    x = torch.randn(3, 17, 96, device=dev)
    layer = layer.to(dev)
    with kernels.use("eager"):
        expected = layer(x)
    with kernels.use(fast):
        got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["eager", "cpp"])
def test_empty_and_non_contiguous_inputs(backend):
    if backend == "cpp" and not cpu.available():
        pytest.skip(cpu.build_error())
    num, den = coefficients(2, 5, 4, seed=5)
    num, den = num.float(), den.float()
    with kernels.use(backend):
        empty = torch.empty(0, 3, 8, requires_grad=True)
        rational(empty, num, den).sum().backward()
        assert empty.grad.shape == empty.shape
        x = torch.randn(8, 5).t()  # (5, 8) transposed view
        torch.testing.assert_close(rational(x, num, den), rational(x.contiguous(), num, den))


# (shape, groups, degrees) under tiny CHUNK=100 / BLOCK=20: ragged last chunks and blocks; group widths 30
# (two 15-wide pieces per group), 14 (one row per block), 23 (prime and > BLOCK: whole-width one-row blocks)
EAGER_RAGGED = [((7, 13, 60), 2, (5, 4)), ((11, 42), 3, (3, 2)), ((5, 46), 2, (2, 3)), ((9, 4), 1, (1, 1))]


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)]
)
@pytest.mark.parametrize("shape,groups,degrees", EAGER_RAGGED)
def test_eager_ragged_chunks_blocks_and_dtypes(monkeypatch, dtype, tol, shape, groups, degrees):
    """The eager path with chunk/block sizes that leave ragged ends and split groups: float64 reference,
    fp64 computed in fp64, bf16/fp16 in fp32 (outputs in the input dtype)."""
    monkeypatch.setattr(eager, "CHUNK", 100)
    monkeypatch.setattr(eager, "BLOCK", 20)
    num, den = coefficients(groups, *degrees, seed=shape[-1])
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    x64 = (3 * torch.randn(*shape, dtype=torch.float64)).to(dtype).double()
    w = torch.randn(*shape, dtype=torch.float64).to(dtype).double()
    args = [a.clone().requires_grad_(True) for a in (x64.to(dtype), num.to(cdt), den.to(cdt))]
    with kernels.use("eager"):
        out = rational(*args)
    (out.double() * w).sum().backward()
    ref_args = [t.detach().double().clone().requires_grad_(True) for t in (x64, num.to(cdt), den.to(cdt))]
    ref = rational_reference(*ref_args)
    (ref * w).sum().backward()
    assert out.dtype == dtype and args[0].grad.dtype == dtype
    assert relative(out, ref) <= tol
    for a, b in zip(args, ref_args):
        assert relative(a.grad, b.grad) <= tol


def test_eager_leaves_the_thread_count_as_it_was():
    """The eager path runs its ops on the calling thread (torch.set_num_threads(1) inside) and restores it."""
    threads = torch.get_num_threads()
    num, den = coefficients(2, 5, 4, seed=2)
    x = torch.randn(300, 64, requires_grad=True)
    try:
        torch.set_num_threads(2)
        with kernels.use("eager"):
            rational(x, num.float(), den.float()).sum().backward()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_cpp_results_are_bitwise_the_same_for_any_thread_count():
    if not cpu.available():
        pytest.skip(cpu.build_error())
    num, den = coefficients(8, 5, 4, seed=7)
    x = torch.randn(1000, 128, dtype=torch.float64)  # several row blocks, above the threading threshold
    g = torch.randn_like(x)
    a, b = num, den.abs()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu.rational_backward(x, g, a, b)
        torch.set_num_threads(max(2, threads))
        many = cpu.rational_backward(x, g, a, b)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one[0], many[0], rtol=0, atol=0)
    assert torch.equal(one[1], many[1])  # per-block sums in block order: the same bits


def test_selection_follows_the_environment_and_use(monkeypatch):
    x, num, den = torch.randn(2, 8), torch.randn(2, 6), torch.randn(2, 4)
    monkeypatch.setenv("NORA_KERNEL", "eager")
    assert kernels.select(x, num, den) == "eager"
    with kernels.use("auto"):
        assert kernels.select(x, num, den) == ("cpp" if cpu.available() else "eager")
        with kernels.use("eager"):
            assert kernels.select(x, num, den) == "eager"
    monkeypatch.setenv("NORA_KERNEL", "fastest")
    with pytest.raises(ValueError, match="NORA_KERNEL"):
        kernels.select(x, num, den)
    with pytest.raises(ValueError, match="backend"):
        with kernels.use("cuda"):
            pass
    monkeypatch.setenv("NORA_KERNEL", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="triton"):
        kernels.select(x, num, den)  # a CPU tensor, no interpreter: never a silent fallback


def test_no_compiler_means_the_eager_path(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("NORA_KERNEL_CACHE", str(tmp_path / "cache"))
    x, num, den = torch.randn(2, 8), torch.randn(2, 6), torch.randn(2, 4)
    assert not cpu.available()
    assert "no-such-compiler" in cpu.build_error()
    assert kernels.select(x, num, den) == "eager"
    with kernels.use("cpp"), pytest.raises(RuntimeError, match="C\\+\\+ kernel"):
        kernels.select(x, num, den)
    torch.testing.assert_close(rational(x, num, den), rational_reference(x, num, den))


def test_build_is_cached_per_machine():
    if not cpu.available():
        pytest.skip(cpu.build_error())
    path = cpu.library_path()
    stamp = path.stat().st_mtime_ns
    compiler = cpu.os.environ.get("CXX") or cpu.shutil.which("g++") or cpu.shutil.which("c++")
    assert cpu._build(compiler) == path  # a second build finds the cached object
    assert path.stat().st_mtime_ns == stamp


def test_triton_kernels_in_the_interpreter():
    if not HAS_TRITON:
        pytest.skip("triton is not installed (the Triton kernels are GPU-only; they import without it)")
    if triton_runs_here() or os.environ.get("NORA_TEST_CHILD"):
        pytest.skip("the Triton cases run in this process")
    env = dict(os.environ, TRITON_INTERPRET="1", NORA_TEST_CHILD="1", TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "triton"],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    found = re.search(r"(\d+) passed, 1 skipped", summary)  # every Triton case ran; only this test skipped itself
    assert found and int(found.group(1)) >= 10, summary
