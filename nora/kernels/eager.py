"""The eager path: plain torch ops on cache-sized chunks, for any device and dtype (no compiler needed).

Forward: P by Horner in x and Q = 1 + sum_j |b_j| |x|^j by Horner in |x|, one fused multiply-add
per coefficient on per-channel coefficient rows: 11 ops per chunk of ``CHUNK`` elements.
Backward, per block of ``BLOCK`` elements inside one group (14 ops for type (5, 4)): the powers
x^0..x^(K-1) (a copy, then multiplies by doubling); one small matmul maps them to P, P', Q and
dQ/dx (in even and odd parts, joined by sign(x)); a second takes the block's sums of
[g/Q, g P/Q^2, sign(x) g P/Q^2] times every power, i.e. every coefficient's gradient at once.
Why chunks: on whole tensors each op is a trip through DRAM (a whole-tensor path ran at ~30x
GELU's time); on chunks the temporaries stay in L2, are reused from chunk to chunk, and peak memory
stays small. Threads: the forward's chunks hold 64 K elements per intra-op thread, so torch splits
each op over its threads (it splits none below 32 K elements per thread); the backward's ops and
small matmuls run on the calling thread (``torch.set_num_threads(1)`` inside, then restored), as
an OpenMP or MKL team per op of that size costs more than it saves.
Speed (idle 2-core Xeon, fp32 (32, 197, 768), 8 groups, type (5, 4); benchmarks/RESULTS.md): about
4.3x GELU's forward + backward time at 1 thread, 7x at 2 (GELU halves with 2 threads, the backward
here does not); each of its ~25 elementwise steps costs 3-10 us per 16-64 K-element chunk, so this
design cannot go much below ~3.5x at 1 thread. Use the C++ or Triton kernel for speed.
Saves only x and the coefficients, like GELU.
"""
from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable

__all__ = ["RationalEager"]

CHUNK = 1 << 16  # forward: elements per chunk and intra-op thread (x, the output and two temporaries stay in L2)
BLOCK = 1 << 14  # backward: elements per block, inside one group (its ~16 temporaries stay in L2)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _flush_denormals(t: torch.Tensor) -> torch.Tensor:
    """Denormal fp32 coefficients (fits leave some, e.g. |b_1| ~ 8e-41) cost a microcode assist per
    x86 operation on every element; they change nothing in fp32."""
    if t.dtype != torch.float32:
        return t
    return torch.where(t.abs() < torch.finfo(t.dtype).tiny, torch.zeros_like(t), t)


def _rows(coef: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """(G, K) per-group coefficients as (K, C) per-channel rows (each group's row repeated over its channels)."""
    groups = coef.shape[0]
    return _flush_denormals(coef.detach().to(dtype).t().repeat_interleave(channels // groups, dim=1).contiguous())


def _threads(device: torch.device) -> int:
    """torch's intra-op thread count on CPU (1 elsewhere)."""
    return torch.get_num_threads() if device.type == "cpu" else 1


@contextlib.contextmanager
def _one_thread(device: torch.device):
    """Run torch ops on the calling thread (the backward's): its small ops and small matmuls gain
    nothing from an OpenMP or MKL team, which costs more than the op, far more on a loaded machine."""
    threads = _threads(device)
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _horner(t: torch.Tensor, c: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """sum_k c[k] t^k (degree >= 1) into ``out`` by Horner, one fused multiply-add per coefficient."""
    d = len(c) - 1
    torch.addcmul(c[d - 1], t, c[d], out=out)
    for k in range(d - 2, -1, -1):
        torch.addcmul(c[k], out, t, out=out)
    return out


def _basis_matrix(num: torch.Tensor, den: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(G, 6, K) per-group maps from the powers x^0..x^(K-1) to [P, P', Qe, Q'e, Qo, Q'o].

    With s = sign(x): Q = Qe + s Qo and dQ/dx = Q'e + s Q'o. Qe holds 1 and the even-j terms
    |b_j| x^j (= |b_j| |x|^j), Qo the odd-j terms |b_j| x^j (s x^j = |x|^j for odd j); Q'e and Q'o
    are their derivatives in x. At x = 0, s = 0 gives dQ/dx = 0, as d|x|/dx = sign(x) does.
    """
    a = num.detach().to(dtype)
    b = den.detach().abs().to(dtype)
    groups, m1 = a.shape
    n = b.shape[1]
    k = max(m1, n + 1)
    mat = torch.zeros(groups, 6, k, dtype=dtype, device=a.device)
    mat[:, 0, :m1] = a
    mat[:, 1, : m1 - 1] = a[:, 1:] * torch.arange(1, m1, dtype=dtype, device=a.device)
    mat[:, 2, 0] = 1
    for j in range(1, n + 1):
        odd = 2 * (j % 2)
        mat[:, 2 + odd, j] = b[:, j - 1]
        mat[:, 3 + odd, j - 1] = j * b[:, j - 1]
    return _flush_denormals(mat)


def _power_steps(k: int) -> list[tuple[int, int]]:
    """Powers 2..k-1 by doubling: step (e, hi) writes x^(e+1)..x^hi as x^e * x^(1..hi-e), one op each."""
    steps, e = [], 1
    while e + 1 < k:
        hi = min(2 * e, k - 1)
        steps.append((e, hi))
        e = hi
    return steps


def _pieces(width: int) -> int:
    """Column pieces per group: 1 if the group width fits in a BLOCK, else the fewest pieces of at most BLOCK
    that divide it (up to twice that count; beyond, 1: blocks of one whole-width row each)."""
    least = max(1, -(-width // BLOCK))
    for pieces in range(least, 2 * least + 1):
        if width % pieces == 0:
            return pieces
    return 1


class _Block:
    """Reused buffers (and their views) for a backward block of ``rows`` x ``width`` elements."""

    def __init__(self, rows: int, width: int, k: int, dtype: torch.dtype, device: torch.device):
        size = rows * width
        self.pw = torch.empty(k, size, dtype=dtype, device=device)  # x^0 .. x^(k-1)
        self.pw[0] = 1
        self.pw_t = self.pw.t()
        self.x_in = self.pw[1].view(rows, width)
        self.x = self.pw[1]
        self.powers = [(self.pw[e], self.pw[e + 1 : hi + 1], self.pw[1 : hi - e + 1]) for e, hi in _power_steps(k)]
        self.poly = torch.empty(6, size, dtype=dtype, device=device)  # P, P', Qe, Q'e, Qo, Q'o
        self.p, self.dp, self.q, self.dq = self.poly[0], self.poly[1], self.poly[2], self.poly[3]
        self.dp2 = self.dp.view(rows, width)
        self.q2 = self.q.view(rows, width)
        self.even, self.odd = self.poly[2:4], self.poly[4:6]
        self.z = torch.empty(3, size, dtype=dtype, device=device)  # g/Q, g P/Q^2, sign(x) g P/Q^2
        self.gq, self.h, self.hs = self.z[0], self.z[1], self.z[2]
        self.gq2 = self.gq.view(rows, width)
        self.sign = torch.empty(size, dtype=dtype, device=device)


class RationalEager(torch.autograd.Function):
    """Chunked torch-ops forward / backward; saves only x and the coefficients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, num: torch.Tensor, den: torch.Tensor, groups: int):
        ctx.save_for_backward(x, num, den)
        ctx.groups = groups
        cdt = _compute_dtype(x)
        dev = x.device
        channels = x.shape[-1]
        x2 = x.detach().reshape(-1, channels)
        nrows = x2.shape[0]
        a = list(_rows(num, channels, cdt).unbind(0))
        one = torch.ones(channels, dtype=cdt, device=dev)
        b = [one] + list(_rows(den.abs(), channels, cdt).unbind(0))  # Q = 1 + sum_j |b_j| |x|^j, by Horner in |x|
        out = torch.empty(x2.shape, dtype=cdt, device=dev)
        # torch's own threads split each op (none below 32 K elements per thread): a chunk per thread
        step = max(1, CHUNK * _threads(dev) // max(channels, 1))
        rows = min(step, nrows)
        ax_buf = torch.empty(rows, channels, dtype=cdt, device=dev)
        q_buf = torch.empty(rows, channels, dtype=cdt, device=dev)
        x_buf = torch.empty(rows, channels, dtype=cdt, device=dev) if x.dtype != cdt else None
        for lo in range(0, nrows, step):
            hi = min(nrows, lo + step)
            xc = x2[lo:hi] if x_buf is None else x_buf[: hi - lo].copy_(x2[lo:hi])
            p = _horner(xc, a, out=out[lo:hi])
            ax = torch.abs(xc, out=ax_buf[: hi - lo])
            p.div_(_horner(ax, b, out=q_buf[: hi - lo]))
        return out.reshape(x.shape).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        """Per block (inside one group): the powers x^0..x^(K-1) once; from them one matmul gives P, P',
        Q and dQ/dx (in even/odd parts), another the block's sums of [g/Q, g P/Q^2, sign(x) g P/Q^2]
        times each power, i.e. every coefficient's gradient; 14 torch ops per block for type (5, 4)."""
        x, num, den = ctx.saved_tensors
        want_x, want_num, want_den = ctx.needs_input_grad[:3]
        want_coef = want_num or want_den
        cdt = _compute_dtype(x)
        dev = x.device
        channels = x.shape[-1]
        groups = num.shape[0]
        pieces = _pieces(channels // groups)
        units, width = groups * pieces, channels // (groups * pieces)  # unit u lies in group u // pieces
        x3 = x.reshape(-1, units, width)
        g3 = grad_out.reshape(-1, units, width)
        nrows = x3.shape[0]
        mat = _basis_matrix(num, den, cdt)
        k = mat.shape[2]
        mats = mat.repeat_interleave(pieces, dim=0).unbind(0)
        grad_x = torch.empty(x3.shape, dtype=cdt, device=dev) if want_x else None
        step = max(1, BLOCK // width)
        moments = torch.zeros(-(-nrows // step), units, 3, k, dtype=cdt, device=dev)
        blocks: dict[int, _Block] = {}
        with _one_thread(dev):
            for i, lo in enumerate(range(0, nrows, step)):
                hi = min(nrows, lo + step)
                if hi - lo not in blocks:
                    blocks[hi - lo] = _Block(hi - lo, width, k, cdt, dev)
                bk = blocks[hi - lo]
                out_x = grad_x[lo:hi].unbind(1) if want_x else [None] * units
                for u, xs, gs, gxs, mom in zip(range(units), x3[lo:hi].unbind(1), g3[lo:hi].unbind(1), out_x,
                                                moments[i].unbind(0)):
                    bk.x_in.copy_(xs)
                    for base, dst, src in bk.powers:
                        torch.mul(src, base, out=dst)
                    torch.mm(mats[u], bk.pw, out=bk.poly)
                    torch.sign(bk.x, out=bk.sign)
                    bk.even.addcmul_(bk.sign, bk.odd)  # Q, dQ/dx
                    torch.div(gs, bk.q2, out=bk.gq2)
                    bk.p.div_(bk.q)  # y = P / Q
                    if want_coef:
                        torch.mul(bk.gq, bk.p, out=bk.h)
                        torch.mul(bk.h, bk.sign, out=bk.hs)
                        torch.mm(bk.z, bk.pw_t, out=mom)
                    if want_x:  # (P' - y dQ/dx) g / Q
                        bk.dp.addcmul_(bk.p, bk.dq, value=-1)
                        torch.mul(bk.dp2, bk.gq2, out=gxs)
        grad_num = grad_den = None
        if want_coef:
            m1, n = num.shape[1], den.shape[1]
            sums = moments.double().sum(0).view(groups, pieces, 3, k).sum(1)  # (G, 3, K)
            if want_num:  # d/da_k = sum g x^k / Q
                grad_num = sums[:, 0, :m1].to(num.dtype)
            if want_den:  # d/d|b_j| = -sum g P |x|^j / Q^2: even j from g P/Q^2 x^j, odd j from sign(x) g P/Q^2 x^j
                j = torch.arange(1, n + 1, device=dev)
                g_abs = -sums[:, 1 + j % 2, j]
                # d|b|/db with the sub-gradient +1 at b = 0 (a coefficient at 0 can still move), as the C++ kernel
                grad_den = torch.where(den < 0, -g_abs, g_abs).to(den.dtype)
        if want_x:
            grad_x = grad_x.reshape(x.shape).to(x.dtype)
        return grad_x, grad_num, grad_den, None
