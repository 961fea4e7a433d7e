"""GPU only: the Triton rational kernels vs the memory-bandwidth floor, a ten-atomics-per-element backward, and GELU.

    python benchmarks/triton_rational.py [--shape 32 197 768] [--groups 8] [--dtypes fp32 bf16]

Prints, per dtype, side by side in one run (triton.testing.do_bench, CUDA events, medians):
forward time and its share of the bandwidth floor (a device copy of the same bytes); backward
time of our kernel (per-(tile, group) register accumulation, one atomic per coefficient per
program) vs a KAT-style kernel doing one atomic add per coefficient per element (written here,
only for this comparison); torch GELU forward / backward. Before timing, each kernel's results are
checked against the float64 reference on fresh random inputs with NaN-poisoned outputs.
Exits 0 with a message when there is no CUDA device or no triton.
"""

from __future__ import annotations

import argparse
import sys

import torch

import nora  # noqa: F401
from nora.kernels import triton_rational as tr
from nora.rational import GroupRational, rational_reference

if tr.HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _atomic_backward_kernel(x_ptr, go_ptr, dx_ptr, a_ptr, b_ptr, dcoef_ptr, total, C, CG,
                                M: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr):
        """KAT's backward design: flat elements, coefficients gathered per element, one atomic per term per element."""
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < total
        grp = ((offs % C) // CG).to(tl.int32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        go = tl.load(go_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        p = tl.load(a_ptr + grp * (M + 1) + M, mask=mask, other=0.0)
        dp = tl.zeros_like(x)
        for i in tl.static_range(M):
            dp = dp * x + p
            p = p * x + tl.load(a_ptr + grp * (M + 1) + (M - 1 - i), mask=mask, other=0.0)
        ax = tl.abs(x)
        s = tl.load(b_ptr + grp * N + N - 1, mask=mask, other=0.0)
        ds = tl.zeros_like(x)
        for i in tl.static_range(N - 1):
            ds = ds * ax + s
            s = s * ax + tl.load(b_ptr + grp * N + (N - 2 - i), mask=mask, other=0.0)
        iq = 1.0 / (1.0 + ax * s)
        ratio = p * iq
        gq = go * iq
        sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))
        tl.store(dx_ptr + offs, ((dp - ratio * (s + ax * ds) * sign) * gq).to(dx_ptr.dtype.element_ty), mask=mask)
        t = gq
        for k in tl.static_range(M + 1):
            tl.atomic_add(dcoef_ptr + grp * (M + 1 + N) + k, t, mask=mask)
            t = t * x
        u = -ratio * gq
        for j in tl.static_range(N):
            u = u * ax
            tl.atomic_add(dcoef_ptr + grp * (M + 1 + N) + M + 1 + j, u, mask=mask)


def atomic_backward(x, g, a, b_abs, dx):
    """Launch the ten-atomics baseline; returns (dx, coefficient sums w.r.t. a and |b|)."""
    groups, channels = a.shape[0], x.shape[-1]
    dcoef = torch.zeros(groups, a.shape[1] + b_abs.shape[1], device=x.device)
    block = 1024
    _atomic_backward_kernel[(triton.cdiv(x.numel(), block),)](
        x, g, dx, a, b_abs, dcoef, x.numel(), channels, channels // groups,
        M=a.shape[1] - 1, N=b_abs.shape[1], BLOCK=block, num_warps=4,
    )
    return dx, dcoef


def relative(a, b) -> float:
    return float((a.detach().double() - b.detach()).norm() / b.detach().norm())


def check(name, dtype, x, g, a, b, den, forward, backward) -> None:
    """Fresh inputs, poisoned outputs, float64 reference: print the relative errors."""
    y = forward(torch.full_like(x, float("nan")))
    dx, sums = backward(torch.full_like(x, float("nan")))
    xr = x.double().cpu().requires_grad_(True)
    nr = a.double().cpu().requires_grad_(True)
    dr = den.double().cpu().requires_grad_(True)
    ref = rational_reference(xr, nr, dr)
    (ref * g.double().cpu()).sum().backward()
    d_abs = torch.where(dr < 0, -dr.grad, dr.grad)
    errs = (relative(y.cpu(), ref), relative(dx.cpu(), xr.grad), relative(sums.cpu(), torch.cat([nr.grad, d_abs], 1)))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    flag = "ok" if max(errs) <= tol else "FAIL"
    print(f"  {name:34s} rel. error vs float64: y {errs[0]:.1e}  dx {errs[1]:.1e}  coeff {errs[2]:.1e}  [{flag}, tol {tol:g}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 197, 768])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    if not tr.HAS_TRITON or not torch.cuda.is_available():
        print("skipped: needs a CUDA device and triton (" + ("no CUDA device" if tr.HAS_TRITON else "triton not installed") + ")")
        sys.exit(0)
    from triton.testing import do_bench

    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}; shape {tuple(args.shape)}, {args.groups} groups, type (5, 4)")
    layer = GroupRational(args.shape[-1], groups=args.groups).to(dev)
    torch.manual_seed(0)
    for name in args.dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        num = layer.numerator.detach() + 0.05 * torch.randn_like(layer.numerator)
        den = layer.denominator.detach() + 0.05 * torch.randn_like(layer.denominator)
        den[0, 0], den[-1, -1] = den[0, 0].abs(), -den[-1, -1].abs()
        a, b = num.float().contiguous(), den.abs().float().contiguous()
        x = (2 * torch.randn(*args.shape, device=dev)).to(dtype)
        g = torch.randn(*args.shape, device=dev).to(dtype)
        print(f"{name}:")
        check("ours", dtype, x, g, a, b, den,
              lambda out: tr.rational_forward(x, a, b, out=out), lambda dx: tr.rational_backward(x, g, a, b, dx=dx))
        check("ten atomics per element (baseline)", dtype, x, g, a, b, den,
              lambda out: tr.rational_forward(x, a, b, out=out), lambda dx: atomic_backward(x, g, a, b, dx))
        y, dx = torch.empty_like(x), torch.empty_like(x)
        t_fwd = do_bench(lambda: tr.rational_forward(x, a, b, out=y))
        t_copy = do_bench(lambda: y.copy_(x))
        t_bwd = do_bench(lambda: tr.rational_backward(x, g, a, b, dx=dx))
        t_atomic = do_bench(lambda: atomic_backward(x, g, a, b, dx))
        t_gelu_f = do_bench(lambda: torch.nn.functional.gelu(x))
        t_gelu_b = do_bench(lambda: torch.ops.aten.gelu_backward(g, x))
        moved = 2 * x.numel() * x.element_size()
        print(f"  forward      {t_fwd * 1e3:8.1f} us  {moved / t_fwd / 1e6:7.0f} GB/s  = {t_copy / t_fwd:5.1%} of the copy floor"
              f" ({t_copy * 1e3:.1f} us)   GELU fwd {t_gelu_f * 1e3:.1f} us ({t_fwd / t_gelu_f:.2f}x)")
        print(f"  backward     {t_bwd * 1e3:8.1f} us   ten-atomics baseline {t_atomic * 1e3:.1f} us"
              f" ({t_atomic / t_bwd:.1f}x slower)   GELU bwd {t_gelu_b * 1e3:.1f} us ({t_bwd / t_gelu_b:.2f}x)")


if __name__ == "__main__":
    main()
