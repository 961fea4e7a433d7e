"""Counting trainable and total parameters, the way the paper's tables report them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

__all__ = ["ParameterCount", "count_parameters"]


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameter counts; ``percent`` = 100 * trainable / total."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __repr__(self) -> str:
        return f"ParameterCount(trainable={self.trainable:,}, total={self.total:,}, percent={self.percent:.3f}%)"


def _numel(param: nn.Parameter) -> int:
    """Logical element count: a bitsandbytes 4-bit weight counts its unpacked shape, not its bytes."""
    quant_state = getattr(param, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    return math.prod(shape) if shape is not None else param.numel()


def count_parameters(model: nn.Module, exclude: Iterable[str] = ()) -> ParameterCount:
    """Count parameters of ``model``, skipping those under any module name prefix in ``exclude``.

    Shared parameters are counted once, and peft's unused frozen copy of a ``modules_to_save``
    module (``original_module``) not at all.  ``exclude=["head"]`` gives the paper's Table 6
    convention (classification head not counted).
    """
    prefixes = tuple(exclude)
    trainable = total = 0
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") or f".{p}." in f".{name}" for p in prefixes):
            continue
        if ".original_module." in f".{name}":
            continue  # peft's frozen copy of a modules_to_save module: the model computes with the other
        n = _numel(param)
        total += n
        if param.requires_grad:
            trainable += n
    return ParameterCount(trainable=trainable, total=total)
