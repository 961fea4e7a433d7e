"""Learnable activations in place of GELU (the paper's Table 3): PReLU, AReLU, ELU with learnable alpha.

Only the activation parameters and the ``trainable`` modules (the head) are trained; every other
weight is frozen.  None of them equals GELU, so unlike NoRA the swap changes the model's outputs
at init (the paper's Table 3 numbers come from this setting).

- ``prelu`` (He et al., 2015): f(x) = x for x >= 0, a * x for x < 0, a initialised to 0.25.  Default
  one slope per layer (``nn.PReLU()``'s channel-shared form, 1 parameter per layer);
  ``per_channel=True`` gives He et al.'s channel-wise form, one slope per hidden channel of the
  activation's last dimension (768 per ViT-Tiny MLP).  ``nn.PReLU(C)`` itself puts channels on
  dim 1, which for (B, N, C) tokens is the token axis, so the slope is broadcast over the last dim.
- ``arelu`` (Chen et al., 2020): f(x) = (1 + sigmoid(beta)) * x for x >= 0, clamp(alpha, 0.01, 0.99) * x
  for x < 0; alpha = 0.9, beta = 2.0 at init (the authors' code); 2 parameters per layer.
- ``elu`` (Clevert et al., 2016): f(x) = x for x > 0, alpha * (exp(x) - 1) for x <= 0, alpha = 1 at init;
  1 parameter per layer.

Each layer's ``merged()`` is a frozen plain module computing the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nora.adapters.base import AdapterModule, Injection, register_adapter
from nora.config import BaseConfig
from nora.inject import KNOWN_TARGETS, find_targets, infer_channels, resolve_modules

__all__ = ["KINDS", "AReLU", "ActivationSwapConfig", "FrozenActivation", "LearnableELU", "PReLU",
           "apply_activation_swap", "inject_activation_swap"]


def _prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, weight.to(x.dtype) * x)


def _arelu(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    a = alpha.clamp(0.01, 0.99).to(x.dtype)
    b = (1 + torch.sigmoid(beta)).to(x.dtype)
    return b * torch.relu(x) - a * torch.relu(-x)


def _elu(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    # expm1 of the clamped input: exp of large positive x would give inf * 0 = nan gradients.
    return torch.relu(x) + alpha.to(x.dtype) * torch.expm1(x.clamp(max=0))


_FUNCTIONS = {"prelu": _prelu, "arelu": _arelu, "elu": _elu}


class _Learnable(AdapterModule):
    """Shared behaviour: evaluate ``_FUNCTIONS[kind]`` on the parameters; merge to a frozen copy."""

    kind: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FUNCTIONS[self.kind](x, *(p for _, p in self.named_parameters()))

    def merged(self) -> FrozenActivation:
        """A plain frozen module with the learned parameters as buffers (same outputs)."""
        return FrozenActivation(self.kind, {n: p.detach().clone() for n, p in self.named_parameters()})


class PReLU(_Learnable):
    """PReLU with ``channels`` slopes (1: shared) broadcast over the last dimension."""

    kind = "prelu"

    def __init__(self, channels: int = 1, init: float = 0.25, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(init), device=device, dtype=dtype))


class AReLU(_Learnable):
    """AReLU: learnable alpha (negative slope, clamped to [0.01, 0.99]) and beta (positive gain 1 + sigmoid)."""

    kind = "arelu"

    def __init__(self, alpha: float = 0.9, beta: float = 2.0, device=None, dtype=None) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([float(alpha)], device=device, dtype=dtype))
        self.beta = nn.Parameter(torch.tensor([float(beta)], device=device, dtype=dtype))


class LearnableELU(_Learnable):
    """ELU whose alpha is a parameter."""

    kind = "elu"

    def __init__(self, alpha: float = 1.0, device=None, dtype=None) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([float(alpha)], device=device, dtype=dtype))


KINDS = {"prelu": PReLU, "arelu": AReLU, "elu": LearnableELU}


class FrozenActivation(nn.Module):
    """A merged learnable activation: the same function with fixed (buffer) parameters."""

    def __init__(self, kind: str, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.kind = kind
        self._names = list(values)
        for name, value in values.items():
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FUNCTIONS[self.kind](x, *(getattr(self, n) for n in self._names))

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


@dataclass
class ActivationSwapConfig(BaseConfig):
    """Which learnable activation (``kind``) replaces the ``target`` activations; ``per_channel`` is PReLU-only."""

    kind: str = "prelu"
    target: str | type = "gelu"
    trainable: tuple[str, ...] = ("head",)
    per_channel: bool = False

    def validate(self) -> None:
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel must be a bool, got {self.per_channel!r}")
        if self.per_channel and self.kind != "prelu":
            raise ValueError(f"per_channel=True applies to kind='prelu' only, got kind={self.kind!r}")
        if isinstance(self.target, str):
            if not self.target:
                raise ValueError("target must not be empty")
        elif not (isinstance(self.target, type) and issubclass(self.target, nn.Module)):
            raise ValueError(f"target must be one of {KNOWN_TARGETS}, a module class or a regex, got {self.target!r}")
        if any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be module names or regexes, got {self.trainable!r}")


def inject_activation_swap(model: nn.Module, config: ActivationSwapConfig, *, example_input=None) -> Injection:
    """Validate, build one learnable activation per ``target`` module, then swap them in and freeze the rest."""
    if not isinstance(config, ActivationSwapConfig):
        raise TypeError(f"config must be an ActivationSwapConfig, got {type(config).__name__}")
    config.validate()
    if any(isinstance(m, _Learnable) for m in model.modules()):
        raise ValueError("model already carries learnable activations (reload the base model first)")
    targets = find_targets(model, config.target)
    if not targets:
        raise ValueError(f"target={config.target!r} matches no module of {type(model).__name__}")
    names = [n for n, _ in targets]
    widths = infer_channels(model, names, example_input) if config.per_channel else {}
    trainable = resolve_modules(model, config.trainable, "trainable")
    ref = next(model.parameters())
    new: dict[str, nn.Module] = {}
    for name in names:
        kwargs = {"channels": widths[name]} if config.per_channel else {}
        new[name] = KINDS[config.kind](**kwargs, device=ref.device, dtype=ref.dtype)

    injection = Injection.begin(model)
    injection.freeze_all()
    for name, module in new.items():
        injection.swap(name, module)
        injection.unfreeze(module)
    injection.unfreeze_named(trainable)
    injection.attach("activation_swap", config)
    return injection


def apply_activation_swap(model: nn.Module, config: ActivationSwapConfig, *, example_input=None) -> nn.Module:
    """Replace the targeted activations in place (bad config: ``ValueError``, model untouched)."""
    inject_activation_swap(model, config, example_input=example_input)
    return model


register_adapter("activation_swap", ActivationSwapConfig, lambda model, config: inject_activation_swap(model, config))
