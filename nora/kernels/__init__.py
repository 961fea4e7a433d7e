"""Which kernel evaluates ``nora.rational``: the fused C++ CPU kernel, the Triton GPU kernel, or eager torch ops.

``NORA_KERNEL`` (or ``use(...)``) picks: ``auto`` (default: Triton for CUDA tensors when triton
imports, the C++ kernel for CPU tensors when it builds, else eager), ``eager``, ``cpp`` or
``triton`` (forced: an error if that kernel cannot take the input, so tests never silently test
the fallback).  ``triton`` on CPU tensors runs under Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

__all__ = ["BACKENDS", "ENV_VAR", "function", "requested", "select", "triton_available", "use"]

BACKENDS = ("auto", "eager", "cpp", "triton")
ENV_VAR = "NORA_KERNEL"
_local = threading.local()  # use(...) applies to the calling thread only


def _forced() -> list[str]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def requested() -> str:
    """The backend asked for: the innermost ``use(...)``, else $NORA_KERNEL, else "auto"."""
    stack = _forced()
    name = stack[-1] if stack else (os.environ.get(ENV_VAR) or "auto")
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}; got {name!r}")
    return name


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Force a backend in this thread inside a ``with`` block: ``with nora.kernels.use("eager"): ...``."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {name!r}")
    _forced().append(name)
    try:
        yield
    finally:
        _forced().pop()


def triton_available() -> bool:
    """True when triton imports (it needs no GPU to import; running needs CUDA or TRITON_INTERPRET=1)."""
    try:
        from nora.kernels import triton_rational  # noqa: F401
    except ImportError:
        return False
    return triton_rational.HAS_TRITON


def select(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> str:
    """The backend that will evaluate ``rational(x, num, den)``: "eager", "cpp" or "triton"."""
    name = requested()
    if name == "eager":
        return "eager"
    if name == "triton" or (name == "auto" and x.is_cuda):
        if triton_available() and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            from nora.kernels.triton_rational import supports

            if supports(x, num, den):
                return "triton"
        if name == "triton":
            raise RuntimeError(
                f"{ENV_VAR}=triton but the Triton kernel cannot take a {x.dtype} tensor on {x.device} "
                "(needs triton, and CUDA or TRITON_INTERPRET=1)"
            )
        return "eager"
    from nora.kernels import cpu

    if cpu.supports(x, num, den):
        return "cpp"
    if name == "cpp":
        raise RuntimeError(
            f"{ENV_VAR}=cpp but the C++ kernel cannot take a {x.dtype} tensor on {x.device}"
            + (f" ({cpu.build_error()})" if cpu.build_error() else "")
        )
    return "eager"


def function(backend: str) -> type[torch.autograd.Function]:
    """The autograd Function implementing ``backend`` ("eager", "cpp" or "triton")."""
    if backend == "cpp":
        from nora.kernels.cpu import RationalCpu

        return RationalCpu
    if backend == "triton":
        from nora.kernels.triton_rational import RationalTriton

        return RationalTriton
    if backend == "eager":
        from nora.kernels.eager import RationalEager

        return RationalEager
    raise ValueError(f"backend must be 'eager', 'cpp' or 'triton'; got {backend!r}")
