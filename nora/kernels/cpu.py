"""The fused C++/OpenMP CPU kernel: built once per machine with the system C++ compiler, loaded with ctypes.

Why not ``torch.utils.cpp_extension``: the kernel needs no torch headers, so a plain ``g++`` build
takes seconds (3-4 s on the 2-core development machine), and the shared object is cached under
``$NORA_KERNEL_CACHE`` (default ``~/.cache/nora/kernels``, else a temporary folder) keyed by the
source, the compiler and the CPU's flags: a process pays only a ``dlopen``.  Why not
``torch.compile``: measured 2.5-5x GELU's forward+backward time against this kernel's 1.0-1.5x
(benchmarks/RESULTS.md), and it compiles again in every process (4-14 s here).  No compiler, or a
failed build, leaves ``available()`` false and ``nora.rational`` on the eager path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

__all__ = ["RationalCpu", "available", "build_error", "library_path", "rational_backward", "rational_forward", "supports"]

SOURCE = Path(__file__).with_name("rational_cpu.cpp")
CACHE_ENV = "NORA_KERNEL_CACHE"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
SMALL = 1 << 15  # elements below which one thread is faster than waking the pool
BLOCK_ELEMENTS = 1 << 18  # elements per block of rows handed to a thread (its sums fit in L1/L2)
BLOCK_MAX_ROWS = 256  # fp32 per-lane sums run over at most this many rows before going to double
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_lock = threading.Lock()
_state: dict[str, object] = {}


def _cache_dir() -> Path:
    """Where built kernels live: $NORA_KERNEL_CACHE, else $XDG_CACHE_HOME/nora/kernels, else ~/.cache/nora/kernels."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nora" / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` code is only valid on the same kind of CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() + platform.machine()


def _build(compiler: str) -> Path:
    """Compile the kernel into the cache (atomically: concurrent builders each rename a complete file)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _cpu_flags()]).encode()).hexdigest()[:16]
    folder = _cache_dir()
    target = folder / f"rational_cpu_{key}.so"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: build per boot in the temporary folder instead
        folder = Path(tempfile.gettempdir()) / "nora-kernels"
        target = folder / target.name
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load() -> ctypes.CDLL | None:
    """Build (or find) and load the kernel once per process; remember why not if it fails."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        try:
            compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
            if not compiler:
                raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
            path = _build(compiler)
            lib = ctypes.CDLL(str(path))
            _declare(lib)
            _state["path"] = path
        except Exception as err:  # noqa: BLE001  (any failure means: use the eager path)
            _state["error"] = f"{type(err).__name__}: {err}"
            lib = None
        _state["lib"] = lib
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"nora_rational_forward_{suffix}")
        fwd.argtypes = [p, p, p, p, i64, i64, i64, i32, i32, i64, i32]
        fwd.restype = None
        bwd = getattr(lib, f"nora_rational_backward_{suffix}")
        bwd.argtypes = [p, p, p, p, p, p, i64, i64, i64, i32, i32, i32, i32, i64, i32]
        bwd.restype = None


def available() -> bool:
    """True when the compiled kernel is loaded (building it on first call, ~2 s once per machine)."""
    return _load() is not None


def build_error() -> str | None:
    """Why the kernel is not available (None when it is, or before the first attempt)."""
    return _state.get("error")  # type: ignore[return-value]


def library_path() -> Path | None:
    """The loaded shared object (None when not loaded)."""
    return _state.get("path")  # type: ignore[return-value]


def supports(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> bool:
    """Whether this kernel can take these tensors (CPU, a float dtype, built)."""
    return (
        x.device.type == "cpu" and num.device.type == "cpu" and den.device.type == "cpu"
        and x.dtype in DTYPES and available()
    )


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _threads(numel: int) -> int:
    return 1 if numel < SMALL else torch.get_num_threads()


def _block_rows(channels: int) -> int:
    return max(1, min(BLOCK_MAX_ROWS, BLOCK_ELEMENTS // max(channels, 1)))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def rational_forward(x: torch.Tensor, a: torch.Tensor, b_abs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = P(x)/Q(x) for contiguous fp32/fp64 x (..., C) with a (G, m+1), |b| (G, n) of x's dtype; into ``out`` if given."""
    groups, channels = a.shape[0], x.shape[-1]
    out = torch.empty_like(x) if out is None else out
    if x.numel():
        lib = _load()
        fn = lib.nora_rational_forward_f64 if x.dtype == torch.float64 else lib.nora_rational_forward_f32
        fn(x.data_ptr(), out.data_ptr(), a.data_ptr(), b_abs.data_ptr(), x.numel() // channels, groups,
           channels // groups, a.shape[1] - 1, b_abs.shape[1], _block_rows(channels), _threads(x.numel()))
    return out


def rational_backward(x: torch.Tensor, grad_out: torch.Tensor, a: torch.Tensor, b_abs: torch.Tensor,
                      want_dx: bool = True, want_coef: bool = True, dx: torch.Tensor | None = None):
    """(grad_x or None, (G, m+1+n) float64 sums of the coefficient terms w.r.t. a and |b|, or None)."""
    groups, channels = a.shape[0], x.shape[-1]
    m, n = a.shape[1] - 1, b_abs.shape[1]
    if want_dx and dx is None:
        dx = torch.empty_like(x)
    rows = x.numel() // channels if channels else 0
    block = _block_rows(channels)
    blocks = -(-rows // block)
    # one row of sums per block, summed here in block order: the same bits for any thread count
    partial = torch.zeros(max(blocks, 1), groups, m + 1 + n, dtype=torch.float64) if want_coef else None
    if rows and (want_dx or want_coef):
        lib = _load()
        fn = lib.nora_rational_backward_f64 if x.dtype == torch.float64 else lib.nora_rational_backward_f32
        fn(x.data_ptr(), grad_out.data_ptr(), _ptr(dx) if want_dx else None, a.data_ptr(), b_abs.data_ptr(),
           _ptr(partial), rows, groups, channels // groups, m, n, int(want_dx), int(want_coef), block,
           _threads(x.numel()))
    return (dx if want_dx else None), (partial.sum(0) if want_coef else None)


class RationalCpu(torch.autograd.Function):
    """Fused forward / backward on CPU; saves only x and the coefficients (GELU's bytes + coefficients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, num: torch.Tensor, den: torch.Tensor, groups: int):
        ctx.save_for_backward(x, num, den)
        cdt = _compute_dtype(x)
        a, b = _prepare(num, den, cdt)
        return rational_forward(x.detach().to(cdt).contiguous(), a, b).view(x.shape).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, num, den = ctx.saved_tensors
        want_x, want_num, want_den = ctx.needs_input_grad[:3]
        cdt = _compute_dtype(x)
        a, b = _prepare(num, den, cdt)
        dx, sums = rational_backward(
            x.to(cdt).contiguous(), grad_out.to(cdt).contiguous(), a, b, want_dx=want_x, want_coef=want_num or want_den
        )
        m1 = num.shape[1]
        grad_num = sums[:, :m1].to(num.dtype) if want_num else None
        # d|b|/db with the sub-gradient +1 at b = 0 (a coefficient at 0 can still move)
        grad_den = torch.where(den < 0, -sums[:, m1:], sums[:, m1:]).to(den.dtype) if want_den else None
        return (dx.view(x.shape).to(x.dtype) if want_x else None), grad_num, grad_den, None


def _prepare(num: torch.Tensor, den: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return num.detach().to(dtype).contiguous(), den.detach().abs().to(dtype).contiguous()
