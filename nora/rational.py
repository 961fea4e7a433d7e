"""Group-wise safe Padé activation y = P(x) / Q(x), its memory-lean autograd, and the module.

Form A of ANCHORS.md is used throughout:

    P(x) = a_0 + a_1 x + ... + a_m x^m
    Q(x) = 1 + |b_1| |x| + |b_2| |x|^2 + ... + |b_n| |x|^n   >= 1

Why form A: Q >= 1 for *every* coefficient vector, so no perturbation a fine-tuning step makes
can create a pole; Q is smooth in b away from b_j = 0 (form B, 1 + |sum b_j x^j|, has a kink
wherever the inner polynomial changes sign, i.e. at x-positions that move during training);
and it is the form the fast KAT/FlashKAT kernels evaluate, so coefficients fitted here can be
used there.  Coefficients are fitted in this form (``nora.fit``), never borrowed from form B.

Channels of the last dimension are split into ``groups`` contiguous groups; group g uses row g
of the (groups, m+1) numerator and (groups, n) denominator matrices.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nora import kernels

__all__ = ["GroupRational", "rational", "rational_reference"]


def _grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    """View (..., C) as (N, groups, C // groups) without copying when possible."""
    channels = x.shape[-1]
    return x.reshape(-1, groups, channels // groups)


def _check_coefficients(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> int:
    if num.dim() != 2 or den.dim() != 2 or num.shape[0] != den.shape[0]:
        raise ValueError(
            f"numerator/denominator must be (groups, m+1) and (groups, n) matrices with the same "
            f"number of rows, got {tuple(num.shape)} and {tuple(den.shape)}"
        )
    if num.shape[1] < 2 or den.shape[1] < 1:
        raise ValueError(f"degrees must be >= (1, 1), got ({num.shape[1] - 1}, {den.shape[1]})")
    groups = num.shape[0]
    if x.dim() == 0 or x.shape[-1] % groups:
        raise ValueError(
            f"channels (last dimension of the input, {x.shape[-1] if x.dim() else 'scalar'}) "
            f"must be divisible by groups={groups}"
        )
    return groups


def rational(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Apply the group-wise safe rational to ``x`` (..., C) with (G, m+1) / (G, n) coefficients.

    The kernel is chosen by ``nora.kernels.select``: the fused C++ kernel on CPU, Triton on CUDA,
    chunked eager torch ops otherwise (or with ``NORA_KERNEL=eager``); every one saves only x and
    the coefficients for backward (GELU's bytes plus a few hundred).
    """
    groups = _check_coefficients(x, num, den)
    return kernels.function(kernels.select(x, num, den)).apply(x, num, den, groups)


def rational_reference(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Plain torch-ops version (autograd saves every power): the ground truth for tests, not for training."""
    groups = _check_coefficients(x, num, den)
    xg = _grouped(x, groups)
    powers = torch.stack([xg**k for k in range(num.shape[1])], dim=-1)
    p = (powers * num.unsqueeze(-2)).sum(-1)
    abs_powers = torch.stack([xg.abs() ** j for j in range(1, den.shape[1] + 1)], dim=-1)
    q = 1 + (abs_powers * den.abs().unsqueeze(-2)).sum(-1)
    return (p / q).reshape(x.shape)


InitSpec = str | Callable[[torch.Tensor], torch.Tensor] | tuple[torch.Tensor, torch.Tensor]


class GroupRational(nn.Module):
    """A learnable group-wise safe Padé activation: ``groups`` contiguous channel groups, one P/Q each.

    ``init`` is a shipped init name ("gelu", "gelu_tanh", "silu", "tanh", "sigmoid", "identity"),
    any callable (fitted on the spot with ``nora.fit_rational``), or a ``(numerator, denominator)``
    pair of 1-D (shared) or 2-D (per group) tensors.
    """

    def __init__(
        self,
        channels: int,
        groups: int = 8,
        degrees: tuple[int, int] = (5, 4),
        init: InitSpec = "gelu",
        interval: tuple[float, float] = (-3.0, 3.0),
    ) -> None:
        super().__init__()
        from nora.fit import validate_degrees

        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if channels % groups:
            raise ValueError(f"groups={groups} must divide channels={channels}")
        degrees = validate_degrees(degrees)
        num, den = _initial_coefficients(init, degrees, interval)
        if num.dim() == 1:
            num, den = num.expand(groups, -1), den.expand(groups, -1)
        if num.shape != (groups, degrees[0] + 1) or den.shape != (groups, degrees[1]):
            raise ValueError(
                f"init coefficients have shapes {tuple(num.shape)}/{tuple(den.shape)}, expected "
                f"({groups}, {degrees[0] + 1})/({groups}, {degrees[1]})"
            )
        self.channels = channels
        self.groups = groups
        self.degrees = degrees
        self.numerator = nn.Parameter(num.detach().clone().float().contiguous())
        self.denominator = nn.Parameter(den.detach().clone().float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.channels:
            raise ValueError(f"input channels (last dimension) must be {self.channels}, got shape {tuple(x.shape)}")
        return rational(x, self.numerator, self.denominator)

    def regroup(self, groups: int) -> GroupRational:
        """A copy with ``groups`` groups, each new group inheriting its parent group's coefficients."""
        if not isinstance(groups, int) or groups < self.groups or groups % self.groups:
            raise ValueError(f"groups={groups!r} must be a multiple of the current {self.groups}")
        if self.channels % groups:
            raise ValueError(f"groups={groups} must divide channels={self.channels}")
        k = groups // self.groups
        num = self.numerator.detach().repeat_interleave(k, dim=0)
        den = self.denominator.detach().repeat_interleave(k, dim=0)
        out = GroupRational(self.channels, groups, self.degrees, init=(num, den))
        return out.to(self.numerator.device)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, degrees={self.degrees}"


def _initial_coefficients(init: InitSpec, degrees, interval):
    from nora.fit import fit_rational, shipped_init

    if isinstance(init, tuple):
        if len(init) != 2:
            raise ValueError(f"init pair must be (numerator, denominator), got {len(init)} items")
        return torch.as_tensor(init[0]), torch.as_tensor(init[1])
    if isinstance(init, str):
        found = shipped_init(init, degrees, interval)
        fitted = found if found is not None else fit_rational(init, degrees, interval)
    elif callable(init):
        fitted = fit_rational(init, degrees, interval)
    else:
        raise TypeError(f"init must be a name, a callable or a coefficient pair, got {type(init).__name__}")
    return torch.tensor(fitted.numerator), torch.tensor(fitted.denominator)
