"""Efficiency measurements for the book: interleaved timings, FLOPs (matmuls + rationals), memory.

Timings are interleaved (every repeat runs each case once, in a rotating order) so that a change
of machine load hits all cases alike; report medians. FLOPs are torch's ``FlopCounterMode``
(matrix products and convolutions, 2 FLOPs per multiply-add; elementwise ops count 0) plus an
explicit count for the rational activations, which FlopCounterMode cannot see inside their
custom kernels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "PROFILES",
    "interleaved_times",
    "matmul_flops",
    "mean_std",
    "peak_cuda_memory",
    "rational_flops",
    "rational_flops_per_element",
    "saved_activation_bytes",
]

# The chapter's sizes per profile: nora.experiments.profiles.settings("08_efficiency", profile) merges
# PROFILES[profile] over the defaults.
# img / patch: ViT-Tiny input of the timed runs (parameter and FLOP counts always use the
# paper's 224 / 16); latency_batch / train_batch: images per timed forward / AdamW step;
# repeats: interleaved timed rounds per seed (their median is kept); act_shape / act_repeats:
# the activation-alone benchmark; threads: torch CPU threads (None: torch's default; 1 on the
# shared 2-core machine, where two OpenMP threads per process stall whenever another process runs).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"img": 32, "patch": 16, "latency_batch": 2, "train_batch": 2, "repeats": 2,
              "act_shape": (2, 17, 768), "act_repeats": 2, "threads": 1},
    "book": {"img": 224, "patch": 16, "latency_batch": 8, "train_batch": 8, "repeats": 7,
             "act_shape": (32, 197, 768), "act_repeats": 15, "threads": 1},
    "paper": {"img": 224, "patch": 16, "latency_batch": 64, "train_batch": 64, "repeats": 30,
              "act_shape": (32, 197, 768), "act_repeats": 100, "threads": None},
}


def interleaved_times(cases: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                      sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each case: ``warmup`` untimed rounds, then ``repeats`` rounds in rotating order."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    names = list(cases)
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            cases[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def mean_std(values) -> tuple[float, float]:
    """Mean and population standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def matmul_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one no-grad forward as torch's FlopCounterMode counts them (matmuls, convs, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return int(counter.get_total_flops())


def rational_flops_per_element(degrees: tuple[int, int]) -> int:
    """FLOPs per element of a type-(m, n) form-A rational by Horner: 2m for P, 2(n-1) + 2 for Q, 1 division.

    Multiply-adds count as two (as FlopCounterMode counts matmuls); |x| is not counted.
    """
    m, n = degrees
    return 2 * m + 2 * (n - 1) + 2 + 1


def rational_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of the rational activations (``GroupRational``, NoRA layers) in one forward, from their input sizes."""
    from nora.adapters.nora import NoraActivation
    from nora.rational import GroupRational

    total = 0

    def hook(module, args, _output):
        nonlocal total
        if isinstance(module, GroupRational):
            degrees = module.degrees
        else:
            degrees = (module.base_numerator.shape[1] - 1, module.base_denominator.shape[1])
        total += args[0].numel() * rational_flops_per_element(degrees)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (GroupRational, NoraActivation))]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def saved_activation_bytes(fn: Callable[[], object], model: nn.Module | None = None) -> int:
    """Bytes autograd keeps for backward while ``fn()`` runs, each storage once, the model's parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_cuda_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak CUDA memory allocated while ``fn()`` runs (bytes above what was allocated before)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
