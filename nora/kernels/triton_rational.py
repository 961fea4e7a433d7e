"""Triton forward / backward of the group-wise safe rational on GPU (FlashKAT-style coefficient gradients).

One program per (row tile, group): it streams the tile's channels in blocks, keeps the group's
coefficients in registers, writes y (or grad_x) once, and reduces its (m+1+n) coefficient-gradient
terms in registers, ending with a single atomic add per coefficient (KAT's kernel does one atomic
per coefficient per *element*; FlashKAT measured that as the bottleneck). fp32 / bf16 / fp16 inputs
are computed in fp32 and returned in their dtype. The ``triton.jit`` wrapping happens on first use,
so ``TRITON_INTERPRET=1`` set at any time before it runs the kernels on CPU tensors (the tests).
"""

from __future__ import annotations

import os

import torch
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the module still imports: GPU paths are simply unavailable
    triton = tl = None
    HAS_TRITON = False

__all__ = ["HAS_TRITON", "RationalTriton", "rational_backward", "rational_forward", "supports"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK_R = 32  # rows per program
BLOCK_C = 128  # channels per inner step (masked past the group's end)
NUM_WARPS = 4


def _forward_kernel(x_ptr, y_ptr, a_ptr, b_ptr, R, C, CG, M: tl.constexpr, N: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_r = tl.program_id(0)
    g = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    row_off = rows.to(tl.int64)[:, None] * C + g * CG
    row_ok = rows[:, None] < R
    a_m = tl.load(a_ptr + g * (M + 1) + M)
    b_n = tl.load(b_ptr + g * N + N - 1)
    for c0 in range(0, CG, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_ok & (cols[None, :] < CG)
        x = tl.load(x_ptr + row_off + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        p = a_m + tl.zeros_like(x)
        for i in tl.static_range(M):
            p = p * x + tl.load(a_ptr + g * (M + 1) + (M - 1 - i))
        ax = tl.abs(x)
        s = b_n + tl.zeros_like(x)
        for i in tl.static_range(N - 1):
            s = s * ax + tl.load(b_ptr + g * N + (N - 2 - i))
        y = p / (1.0 + ax * s)
        tl.store(y_ptr + row_off + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _backward_kernel(x_ptr, go_ptr, dx_ptr, a_ptr, b_ptr, dcoef_ptr, R, C, CG, M: tl.constexpr, N: tl.constexpr,
                     KP: tl.constexpr, WANT_DX: tl.constexpr, WANT_COEF: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_r = tl.program_id(0)
    g = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    row_off = rows.to(tl.int64)[:, None] * C + g * CG
    row_ok = rows[:, None] < R
    a_m = tl.load(a_ptr + g * (M + 1) + M)
    b_n = tl.load(b_ptr + g * N + N - 1)
    kk = tl.arange(0, KP)
    acc = tl.zeros([KP], dtype=tl.float32)  # this program's coefficient-gradient sums, in registers
    for c0 in range(0, CG, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_ok & (cols[None, :] < CG)
        offs = row_off + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        go = tl.load(go_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 outside: no term counts
        p = a_m + tl.zeros_like(x)
        dp = tl.zeros_like(x)
        for i in tl.static_range(M):
            dp = dp * x + p
            p = p * x + tl.load(a_ptr + g * (M + 1) + (M - 1 - i))
        ax = tl.abs(x)
        s = b_n + tl.zeros_like(x)  # S(|x|) = sum_j |b_j| |x|^(j-1); Q = 1 + |x| S
        ds = tl.zeros_like(x)
        for i in tl.static_range(N - 1):
            ds = ds * ax + s
            s = s * ax + tl.load(b_ptr + g * N + (N - 2 - i))
        iq = 1.0 / (1.0 + ax * s)
        ratio = p * iq
        gq = go * iq
        if WANT_DX:
            sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))
            dx = (dp - ratio * (s + ax * ds) * sign) * gq
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if WANT_COEF:
            t = gq  # g x^k / Q
            for k in tl.static_range(M + 1):
                acc += tl.where(kk == k, tl.sum(t), 0.0)
                t = t * x
            u = -ratio * gq  # -g P |x|^j / Q^2
            for j in tl.static_range(N):
                u = u * ax
                acc += tl.where(kk == M + 1 + j, tl.sum(u), 0.0)
    if WANT_COEF:
        tl.atomic_add(dcoef_ptr + g * (M + 1 + N) + kk, acc, mask=kk < M + 1 + N)


_jitted: dict[bool, tuple] = {}


def _kernels():
    """The jitted (or, under TRITON_INTERPRET=1, interpreted) kernels for the current mode."""
    mode = os.environ.get("TRITON_INTERPRET") == "1"
    if mode not in _jitted:
        _jitted[mode] = (triton.jit(_forward_kernel), triton.jit(_backward_kernel))
    return _jitted[mode]


def supports(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> bool:
    """Whether the Triton kernels can take these tensors (triton importable, fp32/bf16/fp16, same device)."""
    return HAS_TRITON and x.dtype in DTYPES and num.device == x.device and den.device == x.device


def _prepare(num: torch.Tensor, den: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return num.detach().float().contiguous(), den.detach().abs().float().contiguous()


def rational_forward(x: torch.Tensor, a: torch.Tensor, b_abs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = P(x)/Q(x) for contiguous x (..., C); a (G, m+1), b_abs (G, n) fp32; writes into ``out`` if given."""
    groups, channels = a.shape[0], x.shape[-1]
    out = torch.empty_like(x) if out is None else out
    rows = x.numel() // channels if channels else 0
    if rows:
        fwd, _ = _kernels()
        fwd[(triton.cdiv(rows, BLOCK_R), groups)](
            x, out, a, b_abs, rows, channels, channels // groups, M=a.shape[1] - 1, N=b_abs.shape[1],
            BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS,
        )
    return out


def rational_backward(x: torch.Tensor, grad_out: torch.Tensor, a: torch.Tensor, b_abs: torch.Tensor,
                      want_dx: bool = True, want_coef: bool = True, dx: torch.Tensor | None = None):
    """(grad_x or None, (G, m+1+n) fp32 sums of the coefficient terms w.r.t. a and |b|, or None)."""
    groups, channels = a.shape[0], x.shape[-1]
    k = a.shape[1] + b_abs.shape[1]
    if want_dx and dx is None:
        dx = torch.empty_like(x)
    dcoef = torch.zeros(groups, k, dtype=torch.float32, device=x.device) if want_coef else None
    rows = x.numel() // channels if channels else 0
    if rows and (want_dx or want_coef):
        _, bwd = _kernels()
        bwd[(triton.cdiv(rows, BLOCK_R), groups)](
            x, grad_out, dx if want_dx else x, a, b_abs, dcoef if want_coef else a, rows, channels, channels // groups,
            M=a.shape[1] - 1, N=b_abs.shape[1], KP=triton.next_power_of_2(k), WANT_DX=want_dx, WANT_COEF=want_coef,
            BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS,
        )
    return (dx if want_dx else None), dcoef


class RationalTriton(torch.autograd.Function):
    """Triton forward / backward; saves only x and the coefficients (GELU's bytes + coefficients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, num: torch.Tensor, den: torch.Tensor, groups: int):
        ctx.save_for_backward(x, num, den)
        a, b = _prepare(num, den)
        return rational_forward(x.detach().contiguous(), a, b).view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, num, den = ctx.saved_tensors
        want_x, want_num, want_den = ctx.needs_input_grad[:3]
        a, b = _prepare(num, den)
        dx, dcoef = rational_backward(
            x.contiguous(), grad_out.contiguous(), a, b, want_dx=want_x, want_coef=want_num or want_den
        )
        m1 = num.shape[1]
        grad_num = dcoef[:, :m1].to(num.dtype) if want_num else None
        grad_den = torch.where(den < 0, -dcoef[:, m1:], dcoef[:, m1:]).to(den.dtype) if want_den else None
        return (dx.view(x.shape) if want_x else None), grad_num, grad_den, None
