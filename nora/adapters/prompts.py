"""VPT-shallow (Jia et al., 2022): learnable prompt tokens in front of a frozen timm ViT's patch tokens.

The input of the first block becomes ``[prefix tokens (class, registers), P prompts, patch tokens]``:
the prompts are inserted after the positional embedding (they carry none) and after ``norm_pre``,
i.e. directly into the first layer's input space as in VPT.  ``model.num_prefix_tokens`` is raised
by P so that average pooling skips the prompts and token pooling still reads the class token.

Unlike LoRA or the bottleneck adapter, VPT changes the outputs from the first step (the patch
tokens attend to the prompts); it cannot be merged into the weights.

Paper (Appendix C.1): 10 prompts of width 192 on ViT-Tiny, prompts + head trained.  Shallow VPT
then has 10 x 192 = 1,920 prompt parameters (+ 19,300 for a 100-class head); the paper's Table 1
reports 0.39M for VPT, which no shallow or deep 10-token VPT on ViT-Tiny reaches (deep: 23,040).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nora.adapters.base import AdapterModule, Injection, register_adapter
from nora.config import BaseConfig
from nora.inject import resolve_modules

__all__ = ["PromptedNormPre", "VPTConfig", "VisualPrompts", "apply_vpt", "inject_vpt"]


@dataclass
class VPTConfig(BaseConfig):
    """VPT-shallow: ``prompts`` tokens; ``init_std=None`` uses VPT's uniform init, a float a normal init."""

    prompts: int = 10
    trainable: tuple[str, ...] = ("head",)
    init_std: float | None = None

    def validate(self) -> None:
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable)
        if not isinstance(self.prompts, int) or isinstance(self.prompts, bool) or self.prompts < 1:
            raise ValueError(f"prompts must be an int >= 1, got {self.prompts!r}")
        if self.init_std is not None and (
            not isinstance(self.init_std, (int, float)) or not math.isfinite(self.init_std) or self.init_std <= 0
        ):
            raise ValueError(f"init_std must be None or a positive number, got {self.init_std!r}")
        if any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be module names or regexes, got {self.trainable!r}")


class VisualPrompts(AdapterModule):
    """The P x dim prompt tokens (the whole adapter state of VPT)."""

    def __init__(self, prompts: int, dim: int, bound: float | None = None, std: float | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(1, prompts, dim, device=device, dtype=dtype))
        with torch.no_grad():
            if std is not None:
                self.tokens.normal_(0.0, std)
            else:
                self.tokens.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        return f"prompts={self.tokens.shape[1]}, dim={self.tokens.shape[2]}"


class PromptedNormPre(nn.Module):
    """Runs the model's own ``norm_pre``, then inserts the prompts after the ``prefix`` leading tokens."""

    def __init__(self, inner: nn.Module, prompts: VisualPrompts, prefix: int) -> None:
        super().__init__()
        self.inner = inner
        self.prompts = prompts
        self.prefix = prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inner(x)
        p = self.prompts.tokens.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, : self.prefix], p, x[:, self.prefix :]], dim=1)


def _vpt_bound(model: nn.Module, dim: int) -> float:
    """VPT's init: uniform(-v, v), v = sqrt(6 / (3 * patch_h * patch_w + dim)) (Xavier on the patch projection)."""
    patch = getattr(model.patch_embed, "patch_size", (16, 16))
    patch = tuple(patch) if isinstance(patch, (tuple, list)) else (int(patch), int(patch))
    return math.sqrt(6.0 / float(3 * patch[0] * patch[1] + dim))


def inject_vpt(model: nn.Module, config: VPTConfig) -> Injection:
    """Validate ``config`` against a timm ViT, then insert the prompts and freeze all but them and ``trainable``."""
    if not isinstance(config, VPTConfig):
        raise TypeError(f"config must be a VPTConfig, got {type(config).__name__}")
    config.validate()
    missing = [a for a in ("norm_pre", "num_prefix_tokens", "embed_dim", "patch_embed") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"model: VPT needs a timm VisionTransformer, {type(model).__name__} lacks {missing}")
    if isinstance(model.norm_pre, PromptedNormPre):
        raise ValueError("model already carries VPT prompts (reload the base model first)")
    if getattr(model, "dynamic_img_size", False):
        raise ValueError("model: dynamic_img_size=True resamples the position embedding with num_prefix_tokens, "
                         "which VPT raises; create the model with dynamic_img_size=False")
    trainable = resolve_modules(model, config.trainable, "trainable")
    dim, prefix = int(model.embed_dim), int(model.num_prefix_tokens)
    ref = next(model.parameters())
    std = None if config.init_std is None else float(config.init_std)
    bound = _vpt_bound(model, dim) if std is None else None
    prompts = VisualPrompts(config.prompts, dim, bound=bound, std=std, device=ref.device, dtype=ref.dtype)
    wrapper = PromptedNormPre(model.norm_pre, prompts, prefix)

    injection = Injection.begin(model)
    injection.freeze_all()
    injection.swap("norm_pre", wrapper)
    injection.set_attr(model, "num_prefix_tokens", prefix + config.prompts)
    injection.unfreeze(prompts)
    injection.unfreeze_named(trainable)
    injection.attach("vpt", config)
    return injection


def apply_vpt(model: nn.Module, config: VPTConfig) -> nn.Module:
    """Add VPT-shallow prompts to a timm ViT in place (bad config: ``ValueError``, model untouched)."""
    inject_vpt(model, config)
    return model


register_adapter("vpt", VPTConfig, inject_vpt)
