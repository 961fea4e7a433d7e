"""Bottleneck adapters (Houlsby et al., 2019): h + s * up(act(down(h))) after a frozen sublayer.

Each adapted sublayer (``blocks.i.mlp`` and/or ``blocks.i.attn`` of a timm ViT) is wrapped so its
output h goes through a residual bottleneck: ``down`` (dim -> width), an activation, ``up``
(width -> dim).  ``up`` starts at zero, so the model computes exactly the base function at init.

Parameters per adapter (both Linear layers with bias): ``dim*width + width + width*dim + dim``;
ViT-Tiny (dim 192), width 48: 192*48 + 48 + 48*192 + 192 = 18,672.  One per block (``positions=
("mlp",)``, the default, "between transformer blocks" as the paper's Appendix C.1 says): 12 x
18,672 = 224,064.  Houlsby's two per block (``positions=("attn", "mlp")``): 448,128; with
Houlsby's trainable layer norms (``trainable=("head", r"blocks\\.\\d+\\.norm[12]")``, 9,216 more)
and a 100-class head (19,300) that is 476,644 ~ the paper's "0.48M" in Table 1.

The adapter is nonlinear in h, so it cannot be merged into the frozen weights: it defines no
``merged()`` and ``nora.merge`` refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nora.adapters.base import AdapterModule, Injection, register_adapter
from nora.config import BaseConfig
from nora.inject import resolve_modules

__all__ = ["ACTIVATIONS", "POSITIONS", "AdaptedSublayer", "Bottleneck", "BottleneckConfig", "apply_bottleneck",
           "inject_bottleneck"]

POSITIONS = ("attn", "mlp")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


@dataclass
class BottleneckConfig(BaseConfig):
    """Bottleneck ``width``, the sublayers adapted per block (``positions``), output ``scale``, activation."""

    width: int = 48
    positions: tuple[str, ...] = ("mlp",)
    scale: float = 1.0
    activation: str = "gelu"
    trainable: tuple[str, ...] = ("head",)

    def validate(self) -> None:
        for name in ("positions", "trainable"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise ValueError(f"width must be an int >= 1, got {self.width!r}")
        if not self.positions or any(p not in POSITIONS for p in self.positions) or len(set(self.positions)) != len(
            self.positions
        ):
            raise ValueError(f"positions must be distinct entries of {POSITIONS}, got {self.positions!r}")
        if not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool) or not math.isfinite(self.scale):
            raise ValueError(f"scale must be a finite number, got {self.scale!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be module names or regexes, got {self.trainable!r}")


class Bottleneck(AdapterModule):
    """The residual branch s * up(act(down(h))); ``up`` is zero-initialised. Not mergeable (nonlinear)."""

    def __init__(self, dim: int, width: int, scale: float = 1.0, activation: str = "gelu",
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(width, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = float(scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(h)))

    @staticmethod
    def count(dim: int, width: int) -> int:
        """Closed-form parameter count of one adapter: dim*width + width + width*dim + dim."""
        return dim * width + width + width * dim + dim


class AdaptedSublayer(nn.Module):
    """A frozen sublayer followed by a bottleneck on its output: h + adapter(h), h = inner(...)."""

    def __init__(self, inner: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        h = self.inner(*args, **kwargs)
        return h + self.adapter(h)


def _width_of(module: nn.Module, name: str) -> int:
    """Output width of a timm attention (``proj``) or MLP (``fc2``) sublayer."""
    for attr in ("proj", "fc2"):
        lin = getattr(module, attr, None)
        if hasattr(lin, "out_features"):
            return int(lin.out_features)
    raise ValueError(f"cannot find the output width of {name!r} ({type(module).__name__}): no proj / fc2 Linear")


def inject_bottleneck(model: nn.Module, config: BottleneckConfig) -> Injection:
    """Validate ``config`` against a timm ViT (``blocks.i.attn`` / ``blocks.i.mlp``), then wrap and freeze."""
    if not isinstance(config, BottleneckConfig):
        raise TypeError(f"config must be a BottleneckConfig, got {type(config).__name__}")
    config.validate()
    if any(isinstance(m, AdaptedSublayer) for m in model.modules()):
        raise ValueError("model already carries bottleneck adapters (reload the base model first)")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        raise ValueError(f"model: bottleneck adapters need a timm ViT with .blocks, got {type(model).__name__}")
    trainable = resolve_modules(model, config.trainable, "trainable")
    new: dict[str, AdaptedSublayer] = {}
    for i, block in enumerate(blocks):
        for pos in config.positions:
            name = f"blocks.{i}.{pos}"
            inner = getattr(block, pos, None)
            if not isinstance(inner, nn.Module):
                raise ValueError(f"positions entry {pos!r}: {name} does not exist in {type(model).__name__}")
            ref = next(inner.parameters())
            adapter = Bottleneck(_width_of(inner, name), config.width, config.scale, config.activation,
                                 device=ref.device, dtype=ref.dtype)
            new[name] = AdaptedSublayer(inner, adapter)

    injection = Injection.begin(model)
    injection.freeze_all()
    for name, module in new.items():
        injection.swap(name, module)
        injection.unfreeze(module.adapter)
    injection.unfreeze_named(trainable)
    injection.attach("bottleneck", config)
    return injection


def apply_bottleneck(model: nn.Module, config: BottleneckConfig) -> nn.Module:
    """Add bottleneck adapters to a timm ViT in place (bad config: ``ValueError``, model untouched)."""
    inject_bottleneck(model, config)
    return model


register_adapter("bottleneck", BottleneckConfig, inject_bottleneck)
