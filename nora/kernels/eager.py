"""The eager path: plain torch ops on cache-sized row chunks, for any device and dtype (no compiler needed).

Why chunks: the rational is 11 torch ops forward and ~45 backward (fused multiply-adds by
Horner); on whole tensors each is a trip through DRAM (the previous whole-tensor path ran at ~30x
GELU's time). On chunks of ``CHUNK`` elements the temporaries stay in L2 and are chunk-sized
(peak memory stays small), each op is below torch's parallel grain (no OpenMP team per op: on a
loaded machine that cost more than the ops), and each coefficient is a per-channel row, the
fast broadcast pattern of a bias add. Still ~6x GELU on CPU: use the C++ or Triton kernel.
Saves only x and the coefficients, like GELU.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["RationalEager"]

CHUNK = 1 << 15  # elements per chunk: temporaries stay in L2, and torch runs ops this small on the calling thread


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _rows(coef: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """(G, K) per-group coefficients as (K, C) per-channel rows (each group's row repeated over its channels)."""
    groups = coef.shape[0]
    rows = coef.detach().to(dtype).t().repeat_interleave(channels // groups, dim=1).contiguous()
    if dtype == torch.float32:  # denormal coefficients (fits leave some, e.g. |b_1| ~ 8e-41) cost a
        # microcode assist per x86 operation on every element; they change nothing in fp32
        rows = torch.where(rows.abs() < torch.finfo(dtype).tiny, torch.zeros_like(rows), rows)
    return rows


def _chunks(rows: int, channels: int):
    step = max(1, CHUNK // max(channels, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def _horner(t: torch.Tensor, c: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k c[k] t^k by Horner, one fused multiply-add per coefficient (c[k] are (C,) rows)."""
    d = len(c) - 1
    value = torch.addcmul(c[d - 1], t, c[d], out=out) if out is not None else torch.addcmul(c[d - 1], t, c[d])
    for k in range(d - 2, -1, -1):
        torch.addcmul(c[k], value, t, out=value)
    return value


def _horner_with_derivative(t: torch.Tensor, c: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_k c[k] t^k, its derivative in t) by Horner, as two fresh writable tensors."""
    d = len(c) - 1
    value = torch.addcmul(c[d - 1], t, c[d])
    if d == 1:
        return value, c[1].expand_as(t).clone()
    deriv = torch.addcmul(value, t, c[d])
    torch.addcmul(c[d - 2], value, t, out=value)
    for k in range(d - 3, -1, -1):
        torch.addcmul(value, deriv, t, out=deriv)
        torch.addcmul(c[k], value, t, out=value)
    return value, deriv


class RationalEager(torch.autograd.Function):
    """Chunked torch-ops forward / backward; saves only x and the coefficients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, num: torch.Tensor, den: torch.Tensor, groups: int):
        ctx.save_for_backward(x, num, den)
        ctx.groups = groups
        cdt = _compute_dtype(x)
        channels = x.shape[-1]
        x2 = x.detach().reshape(-1, channels)
        a = list(_rows(num, channels, cdt).unbind(0))
        b = list(_rows(den.abs(), channels, cdt).unbind(0))
        one = torch.ones((), dtype=cdt, device=x.device)
        out = torch.empty(x2.shape, dtype=cdt, device=x.device)
        for lo, hi in _chunks(x2.shape[0], channels):
            xc = x2[lo:hi].to(cdt)
            p = _horner(xc, a, out=out[lo:hi])
            ax = xc.abs()
            s = _horner(ax, b) if len(b) > 1 else b[0]  # Q = 1 + |x| S(|x|), S = sum_j |b_j| |x|^(j-1)
            p.div_(torch.addcmul(one, ax, s))
        return out.reshape(x.shape).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, num, den = ctx.saved_tensors
        want_x, want_num, want_den = ctx.needs_input_grad[:3]
        cdt = _compute_dtype(x)
        channels = x.shape[-1]
        x2 = x.reshape(-1, channels)
        g2 = grad_out.reshape(-1, channels)
        a = list(_rows(num, channels, cdt).unbind(0))
        b = list(_rows(den.abs(), channels, cdt).unbind(0))
        m, n = len(a) - 1, len(b)
        grad_x = torch.empty(x2.shape, dtype=cdt, device=x.device) if want_x else None
        want_coef = want_num or want_den
        sums = torch.zeros(m + 1 + n, channels, dtype=torch.float64, device=x.device)
        one = torch.ones((), dtype=cdt, device=x.device)
        step = max(1, CHUNK // channels)
        # terms[k] = g x^k / Q (k <= m), terms[m+1+j] = g P |x|^(j+1) / Q^2 (negated at the end), per chunk
        terms = torch.empty(m + 1 + n, min(step, x2.shape[0]), channels, dtype=cdt, device=x.device)
        partial = torch.empty(m + 1 + n, channels, dtype=cdt, device=x.device)
        for lo, hi in _chunks(x2.shape[0], channels):
            xc = x2[lo:hi].to(cdt)
            gc = g2[lo:hi].to(cdt)
            tc = terms[:, : hi - lo]
            p, dp = _horner_with_derivative(xc, a)
            ax = xc.abs()
            if n > 1:  # S(|x|) = sum_j |b_j| |x|^(j-1) and S'; Q = 1 + |x| S
                s, ds = _horner_with_derivative(ax, b)
            else:
                s, ds = b[0].expand_as(ax).clone(), torch.zeros_like(ax)
            q = torch.addcmul(one, s, ax)
            gq = torch.div(gc, q, out=tc[0])
            r = p.div_(q)
            if want_x:
                dq = torch.addcmul(s, ds, ax, out=s).mul_(torch.sign(xc))  # dQ/dx = sign(x) (S + |x| S')
                torch.mul(dp.sub_(dq.mul_(r)), gq, out=grad_x[lo:hi])
            if want_coef:
                for k in range(1, m + 1):
                    torch.mul(tc[k - 1], xc, out=tc[k])
                torch.mul(r, gq, out=tc[m + 1]).mul_(ax)
                for j in range(1, n):
                    torch.mul(tc[m + j], ax, out=tc[m + 1 + j])
                for k in range(m + 1 + n):  # one op per term: each stays below torch's parallel grain
                    torch.sum(tc[k], 0, out=partial[k])
                sums += partial
        sums[m + 1 :].neg_()
        grad_num = grad_den = None
        per_group = sums.view(m + 1 + n, num.shape[0], -1).sum(-1).t()  # (G, K)
        if want_num:
            grad_num = per_group[:, : m + 1].to(num.dtype)
        if want_den:
            g_abs = per_group[:, m + 1 :]
            grad_den = torch.where(den < 0, -g_abs, g_abs).to(den.dtype)
        if want_x:
            grad_x = grad_x.reshape(x.shape).to(x.dtype)
        return grad_x, grad_num, grad_den, None
