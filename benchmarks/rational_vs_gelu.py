"""Forward+backward time and saved-for-backward bytes of GroupRational vs torch GELU, side by side.

    python benchmarks/rational_vs_gelu.py [--shape 32 197 768] [--repeats 20]

Prints ratios to GELU measured in one run (interleaved, median of repeats), never absolute targets.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import nora  # noqa: F401
from nora.rational import GroupRational, rational_reference


def saved_bytes(fn, x) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total


def fwd_bwd(fn, x, g):
    x.grad = None
    fn(x).backward(g)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 197, 768])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--groups", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(*args.shape, requires_grad=True)
    g = torch.randn(*args.shape)
    layer = GroupRational(args.shape[-1], groups=args.groups)
    naive = lambda t: rational_reference(t, layer.numerator, layer.denominator)  # noqa: E731
    contenders = {"gelu": torch.nn.functional.gelu, "group_rational": layer, "naive_torch_ops": naive}
    times = {k: [] for k in contenders}
    for fn in contenders.values():
        fwd_bwd(fn, x, g)  # warm-up
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fwd_bwd(fn, x, g)
            times[name].append(time.perf_counter() - t0)
    base_t = statistics.median(times["gelu"])
    base_m = saved_bytes(torch.nn.functional.gelu, x)
    print(f"shape {tuple(args.shape)} fp32, {torch.get_num_threads()} threads, forward+backward, median of {args.repeats}")
    print(f"{'path':18s} {'ms':>8s} {'time/GELU':>10s} {'saved MB':>9s} {'mem/GELU':>9s}")
    for name, fn in contenders.items():
        t = statistics.median(times[name])
        m = saved_bytes(fn, x)
        print(f"{name:18s} {1e3 * t:8.1f} {t / base_t:10.2f} {m / 2**20:9.1f} {m / base_m:9.2f}")


if __name__ == "__main__":
    main()
