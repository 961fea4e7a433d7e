"""Forward+backward and forward-only time, and saved-for-backward bytes, of the rational paths vs torch GELU.

    python benchmarks/rational_vs_gelu.py [--shape 32 197 768] [--groups 8] [--repeats 15]
        [--no-compile] [--extra /scratch/peers.py:factory ...] [--system-malloc]

Contenders, timed interleaved in one run (the order rotates every repeat; median of repeats):
torch GELU; ``GroupRational`` on its default path (the fused C++ kernel) and forced eager
(``nora.kernels.use("eager")``); the naive torch-ops reference; ``torch.compile`` (inductor) of
the rational written by Horner in torch ops (its compile time is printed, not timed).
``--extra FILE:FUNC`` adds contenders from a file outside the repository: ``FUNC(channels,
groups)`` returns ``{name: module_or_callable}`` (how the peers' PyTorch references were run,
see RESULTS.md).
Prints times and ratios to GELU; never asserts a target. Runs with glibc keeping freed memory
(``steady_malloc.py``: no contender pays page faults for another's freed buffers).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import steady_malloc  # benchmarks/steady_malloc.py

steady_malloc.reexec_with_steady_malloc()  # before torch: it may re-exec this script

import torch  # noqa: E402

import nora  # noqa: F401  (first: torchvision fix, registers everything)
from nora import kernels
from nora.rational import GroupRational, rational_reference
from nora.experiments.theory import rational_functional  # the rational in plain torch ops (Horner), for torch.compile


def saved_bytes(fn, x) -> int:
    """Bytes autograd keeps for backward (every tensor packed by saved_tensors_hooks)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total


def on_backend(fn, backend: str):
    """``fn`` evaluated with ``nora.kernels.use(backend)`` (forward; backward follows the forward's choice)."""

    def call(t):
        with kernels.use(backend):
            return fn(t)

    return call


def load_extras(specs: list[str], channels: int, groups: int) -> dict:
    out = {}
    for spec in specs:
        path, _, func = spec.rpartition(":")
        module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        out.update(getattr(module, func)(channels, groups))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 197, 768])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive torch-ops reference (slow)")
    parser.add_argument("--extra", action="append", default=[], metavar="FILE:FUNC")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's malloc defaults (steady_malloc.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(*args.shape, requires_grad=True)
    g = torch.randn(*args.shape)
    channels = args.shape[-1]
    layer = GroupRational(channels, groups=args.groups)
    contenders = {
        "gelu": torch.nn.functional.gelu,
        "nora default": on_backend(layer, "auto"),
        "nora eager": on_backend(layer, "eager"),
    }
    naive = lambda t: rational_reference(t, layer.numerator, layer.denominator)  # noqa: E731
    if not args.no_naive:
        contenders["naive torch ops"] = naive
    if not args.no_compile:
        compiled = torch.compile(lambda t: rational_functional(t, layer.numerator, layer.denominator))
        t0 = time.perf_counter()
        compiled(x).backward(g)
        print(f"torch.compile (inductor) of the rational by Horner: first forward+backward {time.perf_counter() - t0:.1f} s")
        contenders["torch.compile(Horner)"] = compiled
    contenders.update(load_extras(args.extra, channels, args.groups))
    params = [p for fn in contenders.values() if isinstance(fn, torch.nn.Module) for p in fn.parameters()]
    params += list(layer.parameters())

    def fwd_bwd(fn):
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).backward(g)

    def fwd(fn):
        with torch.no_grad():
            fn(x)

    names = list(contenders)
    both = {k: [] for k in names}
    forward = {k: [] for k in names}
    for fn in contenders.values():
        fwd_bwd(fn)  # warm-up (builds the C++ kernel if this machine has not yet)
    for i in range(args.repeats):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fwd_bwd(contenders[name])
            both[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fwd(contenders[name])
            forward[name].append(time.perf_counter() - t0)
    base_b, base_f = statistics.median(both["gelu"]), statistics.median(forward["gelu"])
    base_m = saved_bytes(torch.nn.functional.gelu, x)
    print(
        f"shape {tuple(args.shape)} fp32, {args.groups} groups, type {layer.degrees}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved repeats; default backend here: {kernels.select(x, layer.numerator, layer.denominator)}; "
        f"malloc: {'freed memory kept' if steady_malloc.active() else 'system defaults'}"
    )
    print(f"{'path':24s} {'fwd+bwd ms':>10s} {'x GELU':>7s} {'fwd ms':>8s} {'x GELU':>7s} {'saved MB':>9s} {'x GELU':>7s}")
    for name in names:
        tb, tf = statistics.median(both[name]), statistics.median(forward[name])
        m = saved_bytes(contenders[name], x)
        print(f"{name:24s} {1e3 * tb:10.2f} {tb / base_b:7.2f} {1e3 * tf:8.2f} {tf / base_f:7.2f} {m / 2**20:9.2f} {m / base_m:7.2f}")


if __name__ == "__main__":
    main()
