"""NoRA: replace an activation by a fitted group-wise rational and train low-rank coefficient deltas.

For a layer with G groups and a type-(m, n) rational, the numerator and denominator coefficient
matrices N (G × (m+1)) and D (G × n) are perturbed as

    N' = N + s · B_N A_N,   D' = D + s · B_D A_D,   s = alpha / rank,

with A_N (r × (m+1)), B_N (G × r), A_D (r × n), B_D (G × r).  A is Kaiming-uniform and B is zero,
so training starts exactly at the base rational.  Trainable per layer: r·(m+1+n) + 2·G·r, which
is r·(10 + 2G) for the paper's (5, 4).

The paper's ablations are options of this one module (``NoraConfig.mode`` / ``perturb``):

- ``mode="lowrank"`` (NoRA), ``"full"`` (tune N, D directly: "rational tuning"),
  ``"zero_delta"`` (a full G×K additive delta initialised to zero: "zero-init tuning"),
  ``"const"`` (only the constant terms: a_0 += δ_g and the denominator constant b_0 = exp(c_g)
  that Q = 1 + Σ|b_j||x|^j fixes at 1 — implemented as dividing P and Q by b_0, which keeps
  the form pole-free);
- ``perturb="numerator" | "denominator" | "both"`` (Table 5);
- more groups than the base rational has: the base coefficients are replicated (Fig. 2 init).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from nora.adapters.base import AdapterModule, Injection, register_adapter
from nora.config import BaseConfig
from nora.fit import fit_rational, shipped_init, validate_degrees
from nora.inject import KNOWN_TARGETS, activation_kind, find_targets, infer_channels, resolve_modules
from nora.rational import GroupRational, rational

__all__ = ["NoraActivation", "NoraConfig", "apply_nora", "enable_nora_training", "inject_nora"]

MODES = ("lowrank", "full", "zero_delta", "const")
PERTURB = ("both", "numerator", "denominator")


@dataclass
class NoraConfig(BaseConfig):
    """How NoRA replaces and tunes the activations of a model (see the module docstring)."""

    groups: int = 8
    rank: int = 3
    alpha: float = 6.0
    degrees: tuple[int, int] = (5, 4)
    target: str | type = "gelu"
    trainable: tuple[str, ...] = ()
    mode: str = "lowrank"
    perturb: str = "both"
    init: str | None = None
    interval: tuple[float, float] = (-3.0, 3.0)

    def validate(self) -> None:
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable)
        self.degrees = validate_degrees(self.degrees)
        self.interval = tuple(self.interval)
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ValueError(f"groups must be a positive int, got {self.groups!r}")
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"rank must be an int >= 1, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.perturb not in PERTURB:
            raise ValueError(f"perturb must be one of {PERTURB}, got {self.perturb!r}")
        if self.mode == "const" and self.perturb != "both":
            raise ValueError(f"perturb={self.perturb!r} has no meaning with mode='const' (use 'both')")
        if isinstance(self.target, str):
            if not self.target:
                raise ValueError("target must not be empty")
            if self.target.lower() not in KNOWN_TARGETS:
                try:
                    re.compile(self.target)
                except re.error as err:
                    raise ValueError(f"target {self.target!r} is neither {KNOWN_TARGETS} nor a regex: {err}")
        elif not (isinstance(self.target, type) and issubclass(self.target, nn.Module)):
            raise ValueError(f"target must be 'gelu', 'silu', 'rational', a module class or a regex, got {self.target!r}")
        if self.init is not None and not isinstance(self.init, str):
            raise ValueError(f"init must be None or an activation name, got {self.init!r}")
        if len(self.interval) != 2 or not self.interval[0] < self.interval[1]:
            raise ValueError(f"interval must be (lo, hi) with lo < hi, got {self.interval!r}")
        if any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be module names or regexes, got {self.trainable!r}")

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.rank


class NoraActivation(AdapterModule):
    """A frozen base rational (G groups) plus trainable coefficient deltas, one of ``MODES``."""

    def __init__(self, channels: int, base_numerator: torch.Tensor, base_denominator: torch.Tensor, config: NoraConfig):
        super().__init__()
        groups = config.groups
        num, den = _replicate(base_numerator, base_denominator, groups)
        if channels % groups:
            raise ValueError(f"groups={groups} must divide channels={channels}")
        self.channels, self.groups, self.mode, self.perturb = channels, groups, config.mode, config.perturb
        self.rank, self.scaling = config.rank, config.scaling
        self.register_buffer("base_numerator", num.float().contiguous())
        self.register_buffer("base_denominator", den.float().contiguous())
        k_num, k_den = num.shape[1], den.shape[1]
        parts = {"numerator": ("num", k_num), "denominator": ("den", k_den)}
        wanted = [p for p in parts if self.perturb in ("both", p)]
        if self.mode == "lowrank":
            for part in wanted:
                prefix, k = parts[part]
                a = nn.Parameter(torch.empty(config.rank, k))
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                self.register_parameter(f"{prefix}_A", a)
                self.register_parameter(f"{prefix}_B", nn.Parameter(torch.zeros(groups, config.rank)))
        elif self.mode == "zero_delta":
            for part in wanted:
                prefix, k = parts[part]
                self.register_parameter(f"{prefix}_delta", nn.Parameter(torch.zeros(groups, k)))
        elif self.mode == "full":
            for part in wanted:
                prefix, _ = parts[part]
                base = self.base_numerator if prefix == "num" else self.base_denominator
                self.register_parameter(f"{prefix}_coefficients", nn.Parameter(base.clone()))
        else:  # const
            self.a0_delta = nn.Parameter(torch.zeros(groups))
            self.log_b0 = nn.Parameter(torch.zeros(groups))

    def _part(self, prefix: str, base: torch.Tensor) -> torch.Tensor:
        if self.mode == "lowrank" and hasattr(self, f"{prefix}_A"):
            return base + self.scaling * (getattr(self, f"{prefix}_B") @ getattr(self, f"{prefix}_A"))
        if self.mode == "zero_delta" and hasattr(self, f"{prefix}_delta"):
            return base + getattr(self, f"{prefix}_delta")
        if self.mode == "full" and hasattr(self, f"{prefix}_coefficients"):
            return getattr(self, f"{prefix}_coefficients")
        return base

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The effective (G, m+1) numerator and (G, n) denominator the layer evaluates."""
        if self.mode == "const":
            b0 = self.log_b0.exp().unsqueeze(1)
            num = self.base_numerator.clone()
            num[:, 0] = num[:, 0] + self.a0_delta
            return num / b0, self.base_denominator / b0
        return self._part("num", self.base_numerator), self._part("den", self.base_denominator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.channels:
            raise ValueError(f"NoraActivation expects last dimension {self.channels}, got {tuple(x.shape)}")
        return rational(x, *self.coefficients())

    def merged(self) -> GroupRational:
        """A frozen ``GroupRational`` with the deltas folded into its coefficients (same outputs)."""
        num, den = (t.detach().clone() for t in self.coefficients())
        out = GroupRational(self.channels, self.groups, (num.shape[1] - 1, den.shape[1]), init=(num, den))
        out.requires_grad_(False)
        return out.to(self.base_numerator.device)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, mode={self.mode}, perturb={self.perturb}, rank={self.rank}"


def _replicate(num: torch.Tensor, den: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Base coefficients as (groups, K): a shared row is broadcast, G0 rows are replicated to G."""
    num, den = num.detach(), den.detach()
    if num.dim() == 1:
        return num.expand(groups, -1).clone(), den.expand(groups, -1).clone()
    g0 = num.shape[0]
    if groups % g0:
        raise ValueError(f"groups={groups} must be a multiple of the base rational's {g0} groups")
    return num.repeat_interleave(groups // g0, 0), den.repeat_interleave(groups // g0, 0)


def _base_coefficients(module: nn.Module, config: NoraConfig, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    kind = activation_kind(module)
    if kind == "rational":
        if module.degrees != config.degrees:
            raise ValueError(f"degrees={config.degrees} differ from the rational at {name!r} ({module.degrees})")
        return module.numerator, module.denominator
    init = config.init or kind
    if init is None:
        raise ValueError(
            f"target module {name!r} ({type(module).__name__}) is not a known activation; set init= to the "
            "activation to fit (e.g. 'gelu')"
        )
    fit = shipped_init(init, config.degrees, config.interval) or fit_rational(init, config.degrees, config.interval)
    return torch.tensor(fit.numerator), torch.tensor(fit.denominator)


def inject_nora(model: nn.Module, config: NoraConfig, *, example_input=None, freeze: bool = True) -> Injection:
    """Validate ``config`` against ``model``, build every NoRA layer, then swap them in (reversibly)."""
    if not isinstance(config, NoraConfig):
        raise TypeError(f"config must be a NoraConfig, got {type(config).__name__}")
    config.validate()
    if any(isinstance(m, NoraActivation) for m in model.modules()):
        raise ValueError("model already has NoRA layers (merge or reload the base model first)")
    targets = find_targets(model, config.target)
    if not targets:
        raise ValueError(f"target={config.target!r} matches no module of {type(model).__name__}")
    names = [n for n, _ in targets]
    widths = infer_channels(model, names, example_input)
    trainable = resolve_modules(model, config.trainable, "trainable")
    fitted: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    new_modules = {}
    for name, module in targets:
        if widths[name] % config.groups:
            raise ValueError(f"groups={config.groups} does not divide the {widths[name]} channels of {name!r}")
        key = activation_kind(module) or "custom"
        if key == "rational":
            base = _base_coefficients(module, config, name)
        else:
            if (config.init or key) not in fitted:
                fitted[config.init or key] = _base_coefficients(module, config, name)
            base = fitted[config.init or key]
        layer = NoraActivation(widths[name], *base, config)
        device = next(iter(module.parameters()), torch.empty(0)).device
        new_modules[name] = layer.to(device)

    injection = Injection.begin(model)
    if freeze:
        injection.freeze_all()
    for name, layer in new_modules.items():
        injection.swap(name, layer)
    injection.unfreeze_named(trainable)
    injection.attach("nora", config)
    return injection


def apply_nora(model: nn.Module, config: NoraConfig, *, example_input=None) -> nn.Module:
    """Replace the targeted activations by NoRA layers; freeze all but NoRA factors and ``trainable``.

    On invalid input a ``ValueError`` names the field and the model is left exactly as it was.
    """
    inject_nora(model, config, example_input=example_input)
    return model


def enable_nora_training(model: nn.Module) -> None:
    """Make NoRA parameters and the config's ``trainable`` modules trainable again (after peft froze them)."""
    from nora.adapters.base import get_record
    from nora.inject import unwrap

    base = unwrap(model)
    for module in base.modules():
        if isinstance(module, NoraActivation):
            module.requires_grad_(True)
    record = get_record(model)
    if record is not None and record.kind == "nora":
        for name in resolve_modules(base, record.config.trainable, "trainable"):
            base.get_submodule(name).requires_grad_(True)


register_adapter("nora", NoraConfig, lambda model, config: inject_nora(model, config))
