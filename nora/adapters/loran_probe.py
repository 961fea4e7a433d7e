"""How much the element-wise σ of a trained LoRAN adapter actually does: statistics of BA, and σ swaps.

LoRAN's update is ΔW = s·σ(BA) (``nora.adapters.loran``).  Whether σ matters depends on where the
entries z of BA live: Sinter(z) = z + A·z·sin(ωz) differs from z by at most A·|z| (relative A =
5e-5 at the released constants, whatever z is), while its slope 1 + A·sin(ωz) + A·ω·z·cos(ωz)
differs from 1 by up to A + A·ω·|z| (= 5e-5 + 0.5·|z|).  ``update_statistics`` reports, per
LoRAN layer of a trained model, the size of z and both deviations, measured on the actual BA;
``swapped_activation`` temporarily evaluates the same factors with another σ (e.g. ``identity``:
plain LoRA with the trained factors), so the function-level effect of σ can be measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from nora.adapters.loran import ACTIVATIONS, LoRANLinear

__all__ = ["loran_modules", "swapped_activation", "update_statistics"]


def loran_modules(model: nn.Module) -> dict[str, LoRANLinear]:
    """Every ``LoRANLinear`` of ``model`` by name; ``ValueError`` if there is none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found = {n: m for n, m in model.named_modules() if isinstance(m, LoRANLinear)}
    if not found:
        raise ValueError(f"model ({type(model).__name__}) carries no LoRAN layer")
    return found


@torch.no_grad()
def update_statistics(model: nn.Module, rank_tol: float = 1e-3) -> list[dict[str, Any]]:
    """Per LoRAN layer: the entries z of BA and what the layer's σ does to them (float64).

    Keys: ``layer``, ``activation``, ``rank`` (r), ``max_abs_z``, ``rms_z``, ``relative_change`` =
    ‖σ(z) − z‖_F / ‖z‖_F (0 if z = 0), ``max_slope_deviation`` = max |σ'(z) − 1|, ``delta_norm`` =
    ‖ΔW‖_F, ``relative_update`` = ‖ΔW‖_F / ‖W‖_F (W: the base weight, dequantized if 4-bit) and
    ``effective_rank``: the singular values of σ(BA) above ``rank_tol`` times the largest (the
    sine-activated low-rank argument is that a nonlinear σ raises the rank of BA).
    """
    if not isinstance(rank_tol, (int, float)) or isinstance(rank_tol, bool) or not 0 < rank_tol < 1:
        raise ValueError(f"rank_tol must be in (0, 1), got {rank_tol!r}")
    from nora.adapters.loran import _dequantized_weight

    rows = []
    for name, layer in loran_modules(model).items():
        z = layer.lora_B.double() @ layer.lora_A.double()
        act = layer.act
        sz = act.value(z)
        z_norm = float(z.norm())
        delta = sz * layer.scale
        base = _dequantized_weight(layer.base_layer).double()
        sv = torch.linalg.svdvals(sz)
        rows.append({
            "layer": name,
            "activation": layer.activation,
            "rank": layer.rank,
            "max_abs_z": float(z.abs().max()),
            "rms_z": float(z.pow(2).mean().sqrt()),
            "relative_change": float((sz - z).norm()) / z_norm if z_norm > 0 else 0.0,
            "max_slope_deviation": float((act.derivative(z) - 1).abs().max()),
            "delta_norm": float(delta.norm()),
            "relative_update": float(delta.norm() / base.norm()),
            "effective_rank": int((sv > rank_tol * sv[0]).sum()) if float(sv[0]) > 0 else 0,
        })
    return rows


@contextlib.contextmanager
def swapped_activation(model: nn.Module, activation: str, **constants: float) -> Iterator[nn.Module]:
    """Within the block every LoRAN layer uses ``activation`` (same factors, same scale); restored after.

    ``constants``: ``amplitude`` / ``frequency`` (Sinter), ``sine_frequency``.  ``identity``
    gives plain LoRA with the trained factors.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    unknown = sorted(set(constants) - {"amplitude", "frequency", "sine_frequency"})
    if unknown:
        raise ValueError(f"unknown constant(s) {unknown}; use amplitude, frequency, sine_frequency")
    layers = loran_modules(model)
    saved = {name: (layer.activation, layer.act) for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.act = dataclasses.replace(layer.act, name=activation, **{k: float(v) for k, v in constants.items()})
            layer.activation = activation
        yield model
    finally:
        for name, layer in layers.items():
            layer.activation, layer.act = saved[name]
