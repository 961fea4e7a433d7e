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

NoRA is a peft method (``peft_type`` ``NORA``), laid out like peft's ``tuners/lora``: the config
(:class:`NoraConfig`, a ``peft.PeftConfig``), the layer (:class:`NoraActivation`, a
``BaseTunerLayer`` holding one :class:`NoraDelta` per adapter name) here, the tuner
(``NoraModel``, a ``BaseTuner``) in ``nora.adapters.tuner``.  Two ways in, one config object::

    model = peft.get_peft_model(model, cfg)   # a PeftModel: save_pretrained, disable_adapter, ...
    model = nora.apply_nora(model, cfg)       # the same layers in place, no wrapper (peft's
                                              # inject_adapter_in_model), for nora.save_adapter / merge

The layer keeps the activation it replaced as ``base_layer``.  Disabled (``disable_adapter()``)
or with no adapter of its own active it evaluates that original activation (GELU, SiLU), not the
fitted rational, so a disabled NoRA model is exactly the base model; ``unload()`` puts the
original back, ``merge_and_unload()`` a frozen ``GroupRational`` with the deltas folded in.
The config's ``trainable`` modules (e.g. the new head) become peft ``modules_to_save``: a trained
copy next to the frozen original, which ``disable_adapter()`` uses.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from nora.fit import fit_rational, shipped_init, validate_degrees
from nora.inject import KNOWN_TARGETS, activation_kind
from nora.rational import GroupRational, rational

__all__ = ["NoraActivation", "NoraConfig", "NoraDelta", "apply_nora"]

MODES = ("lowrank", "full", "zero_delta", "const")
PERTURB = ("both", "numerator", "denominator")
_CLASS_PREFIX = "class:"
_DELTA_TENSORS = frozenset({"num_A", "num_B", "den_A", "den_B", "num_delta", "den_delta", "num_coefficients",
                            "den_coefficients", "a0_delta", "log_b0"})


# ------------------------------------------------------------------------------------------- config


@dataclass
class NoraConfig(PeftConfig):
    """How NoRA replaces and tunes the activations of a model; a ``peft.PeftConfig`` (``peft_type="NORA"``).

    Args:
        groups: channel groups per activation (G), each with its own rational.
        rank: rank r of the coefficient deltas B·A.
        alpha: scale numerator; the deltas are multiplied by ``alpha / rank``.
        degrees: (m, n), numerator and denominator degrees of the rational.
        target: the activations to replace: "gelu" (exact and tanh GELUs), "silu", "rational"
            (existing ``GroupRational``), a module class, or a regex matched in full against module names.
        trainable: extra modules trained in full (e.g. ``["head"]``), exact names or full regexes;
            they become peft ``modules_to_save`` (resolved to exact names when the adapter is injected).
        mode: one of "lowrank" (NoRA), "full", "zero_delta", "const" (the paper's ablations).
        perturb: "both", "numerator" or "denominator": which coefficients get a delta (Table 5).
        init: the activation the base rational is fitted to when the target is not a known one.
        interval: the fitting interval of the base rational.
        modules_to_save: peft's name for ``trainable`` (filled in from it; give one or the other).
        channels: recorded, not chosen: each site's channel count, filled in when the adapter is
            injected and saved with it; a load onto a model whose widths differ is refused.
        tensor_sha256: recorded, not chosen: the SHA-256 of every saved tensor, written by
            ``save_pretrained`` and checked on load.
    """

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
    modules_to_save: list[str] | None = None
    channels: dict[str, int] | None = None
    tensor_sha256: dict[str, str] | None = field(default=None, repr=False)

    # BaseTuner.inject_adapter reads ``target_modules``; NoRA finds its sites from ``target``.
    target_modules = None
    _PEFT_TYPE = "NORA"

    def __post_init__(self) -> None:
        super().__post_init__()
        from peft.utils import PeftType

        self.peft_type = PeftType[self._PEFT_TYPE]
        self.validate()

    def validate(self) -> None:
        """Normalise the fields and raise ``ValueError`` naming the offending one."""
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable or ())
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [self.modules_to_save]
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)
            if not self.trainable:
                self.trainable = tuple(self.modules_to_save)
        if isinstance(self.target, str) and self.target.startswith(_CLASS_PREFIX):
            self.target = _decode_class(self.target)
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
                    raise ValueError(f"target {self.target!r} is neither {KNOWN_TARGETS} nor a regex: {err}") from err
        elif not (isinstance(self.target, type) and issubclass(self.target, nn.Module)):
            raise ValueError(f"target must be 'gelu', 'silu', 'rational', a module class or a regex, got {self.target!r}")
        if self.init is not None and not isinstance(self.init, str):
            raise ValueError(f"init must be None or an activation name, got {self.init!r}")
        if len(self.interval) != 2 or not self.interval[0] < self.interval[1]:
            raise ValueError(f"interval must be (lo, hi) with lo < hi, got {self.interval!r}")
        if any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be module names or regexes, got {self.trainable!r}")
        if self.channels is not None and (
            not isinstance(self.channels, dict)
            or any(not isinstance(k, str) or not isinstance(v, int) or v < 1 for k, v in self.channels.items())
        ):
            raise ValueError(f"channels must be None or a {{site name: positive int}} dict, got {self.channels!r}")
        if self.tensor_sha256 is not None and (
            not isinstance(self.tensor_sha256, dict)
            or any(not isinstance(v, str) or not re.fullmatch(r"[0-9a-f]{64}", v) for v in self.tensor_sha256.values())
        ):
            raise ValueError("tensor_sha256 must be None or a {tensor name: SHA-256 hex digest} dict")

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if isinstance(self.target, type):
            out["target"] = f"{_CLASS_PREFIX}{self.target.__module__}:{self.target.__qualname__}"
        return out

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Write ``adapter_config.json``, recording the SHA-256 of the tensors already saved next to it.

        peft's ``PeftModel.save_pretrained`` writes the tensors first, then calls this; the digests
        describe exactly the bytes on disk, and the config object itself is left unchanged.
        """
        from nora.adapters.tuner import payload_digests

        record = _shallow_copy(self)
        record.tensor_sha256 = payload_digests(save_directory)
        PeftConfig.save_pretrained(record, save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """Load the config; for a local directory also check its tensors against the recorded SHA-256
        (a corrupted payload raises ``ValueError`` before any model is touched)."""
        from nora.adapters.tuner import refuse_legacy, verify_payload

        path = os.path.join(pretrained_model_name_or_path, subfolder) if subfolder else pretrained_model_name_or_path
        refuse_legacy(path)
        config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        if os.path.isdir(path):
            verify_payload(path, config)
        return config


def _shallow_copy(config: NoraConfig) -> NoraConfig:
    out = object.__new__(type(config))
    out.__dict__.update(config.__dict__)
    return out


def _decode_class(value: str) -> type:
    module, _, qualname = value[len(_CLASS_PREFIX) :].partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"target {value!r}: cannot resolve the module class: {err}") from err
    return obj


# -------------------------------------------------------------------------------------------- layer


class NoraDelta(nn.Module):
    """One adapter's coefficients at one site: the frozen base rational (buffers) and its trainable deltas."""

    def __init__(self, base_numerator: torch.Tensor, base_denominator: torch.Tensor, config: NoraConfig):
        super().__init__()
        groups = config.groups
        num, den = _replicate(base_numerator, base_denominator, groups)
        self.groups, self.mode, self.perturb = groups, config.mode, config.perturb
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

    @property
    def degrees(self) -> tuple[int, int]:
        return self.base_numerator.shape[1] - 1, self.base_denominator.shape[1]

    def _part(self, prefix: str, base: torch.Tensor) -> torch.Tensor:
        if self.mode == "lowrank" and hasattr(self, f"{prefix}_A"):
            return base + self.scaling * (getattr(self, f"{prefix}_B") @ getattr(self, f"{prefix}_A"))
        if self.mode == "zero_delta" and hasattr(self, f"{prefix}_delta"):
            return base + getattr(self, f"{prefix}_delta")
        if self.mode == "full" and hasattr(self, f"{prefix}_coefficients"):
            return getattr(self, f"{prefix}_coefficients")
        return base

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The effective (G, m+1) numerator and (G, n) denominator."""
        if self.mode == "const":
            b0 = self.log_b0.exp().unsqueeze(1)
            num = self.base_numerator.clone()
            num[:, 0] = num[:, 0] + self.a0_delta
            return num / b0, self.base_denominator / b0
        return self._part("num", self.base_numerator), self._part("den", self.base_denominator)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, mode={self.mode}, perturb={self.perturb}, rank={self.rank}"


class NoraActivation(nn.Module, BaseTunerLayer):
    """peft's tuner layer for one activation site: the original activation (``base_layer``) and one
    :class:`NoraDelta` per adapter name (``nora_delta``); it evaluates the active adapter's rational.

    Standalone, ``NoraActivation(channels, base_numerator, base_denominator, config)`` is a layer
    with one adapter ("default") and no original activation.  ``groups``, ``base_numerator``,
    ``coefficients()`` and the like describe the active adapter.
    """

    adapter_layer_names = ("nora_delta",)
    other_param_names = ()

    def __init__(
        self,
        channels: int,
        base_numerator: torch.Tensor | None = None,
        base_denominator: torch.Tensor | None = None,
        config: NoraConfig | None = None,
        *,
        base_layer: nn.Module | None = None,
        adapter_name: str = "default",
        delta: NoraDelta | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if base_layer is not None:
            self.base_layer = base_layer
        self.channels = channels
        self.nora_delta = nn.ModuleDict()
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        if delta is None and config is not None:
            if base_numerator is None or base_denominator is None:
                raise ValueError("base_numerator and base_denominator are needed with config")
            delta = NoraDelta(base_numerator, base_denominator, config)
        if delta is not None:
            self.update_layer(adapter_name, delta)

    # --- adapters
    def update_layer(self, adapter_name: str, delta: NoraDelta) -> None:
        """Add (or replace) adapter ``adapter_name``'s coefficients at this site."""
        if self.channels % delta.groups:
            raise ValueError(f"groups={delta.groups} must divide channels={self.channels}")
        if adapter_name in self.merged_adapters:
            raise ValueError(f"adapter {adapter_name!r} is merged at this layer; unmerge it first")
        self.nora_delta[adapter_name] = delta
        self.set_adapter(self.active_adapters)

    def set_adapter(self, adapter_names: str | list[str], inference_mode: bool = False) -> None:
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        if len([n for n in names if n in self.nora_delta]) > 1:
            raise ValueError(f"a NoRA layer evaluates one adapter at a time, got active adapters {names}")
        super().set_adapter(names, inference_mode=inference_mode)

    def _active_name(self) -> str | None:
        present = [n for n in self.active_adapters if n in self.nora_delta]
        if len(present) > 1:
            raise ValueError(f"a NoRA layer evaluates one adapter at a time, got active adapters {present}")
        return present[0] if present else None

    def _delta(self) -> NoraDelta:
        name = self._active_name()
        if name is None and len(self.nora_delta) == 1:
            name = next(iter(self.nora_delta))
        if name is None:
            raise ValueError(f"no active NoRA adapter at this layer (adapters: {sorted(self.nora_delta)})")
        return self.nora_delta[name]

    # --- the active adapter's description and tensors (kept from the single-adapter layer: ``layer.num_B``)
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _DELTA_TENSORS and "nora_delta" in self.__dict__.get("_modules", {}):
                return getattr(self._delta(), name)
            raise

    @property
    def groups(self) -> int:
        return self._delta().groups

    @property
    def mode(self) -> str:
        return self._delta().mode

    @property
    def perturb(self) -> str:
        return self._delta().perturb

    @property
    def rank(self) -> int:
        return self._delta().rank

    @property
    def scaling(self) -> float:
        return self._delta().scaling

    @property
    def base_numerator(self) -> torch.Tensor:
        return self._delta().base_numerator

    @property
    def base_denominator(self) -> torch.Tensor:
        return self._delta().base_denominator

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The effective (G, m+1) numerator and (G, n) denominator the layer evaluates."""
        return self._delta().coefficients()

    # --- forward
    def _base(self, x: torch.Tensor) -> torch.Tensor:
        base = getattr(self, "base_layer", None)
        if base is None:
            raise ValueError("this NoraActivation was built standalone: it has no original activation to fall back to")
        return base(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.channels:
            raise ValueError(f"NoraActivation expects last dimension {self.channels}, got {tuple(x.shape)}")
        if self.disable_adapters:
            return self._base(x)
        name = self._active_name()
        if name is None:
            return self._base(x)
        if name in self.merged_adapters:
            return rational(x, self._merged_numerator, self._merged_denominator)
        return rational(x, *self.nora_delta[name].coefficients())

    # --- merging (peft's merge / unmerge / merge_and_unload / unload)
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold the adapter's deltas into cached coefficients (same outputs, no delta products)."""
        names = [n for n in check_adapters_to_merge(self, adapter_names) if n in self.nora_delta]
        if not names:
            return
        if len(names) + len(self.merged_adapters) > 1:
            raise ValueError(f"a NoRA layer merges one adapter at a time, got {self.merged_adapters + names}")
        num, den = (t.detach().clone() for t in self.nora_delta[names[0]].coefficients())
        if safe_merge and not (torch.isfinite(num).all() and torch.isfinite(den).all()):
            raise ValueError(f"NaNs or infs in the merged coefficients of adapter {names[0]!r}")
        self.register_buffer("_merged_numerator", num, persistent=False)
        self.register_buffer("_merged_denominator", den, persistent=False)
        self.merged_adapters.append(names[0])

    def unmerge(self) -> None:
        if not self.merged:
            return
        del self._merged_numerator, self._merged_denominator
        self.merged_adapters.clear()

    def merged_rational(self, adapter_name: str | None = None) -> GroupRational:
        """A frozen ``GroupRational`` with the adapter's deltas folded in (same outputs)."""
        delta = self._delta() if adapter_name is None else self.nora_delta[adapter_name]
        num, den = (t.detach().clone() for t in delta.coefficients())
        out = GroupRational(self.channels, delta.groups, delta.degrees, init=(num, den))
        out.requires_grad_(False)
        return out.to(delta.base_numerator.device)

    def unload_and_optionally_merge_module(self, merge: bool, safe_merge: bool, adapter_names: list[str] | None) -> nn.Module:
        """What ``merge_and_unload`` (merge=True: the folded rational) or ``unload`` (the original activation) puts here."""
        if not merge:
            return self.get_base_layer()
        names = [n for n in (adapter_names or self.active_adapters) if n in self.nora_delta]
        if len(names) > 1:
            raise ValueError(f"a NoRA layer merges one adapter at a time, got {names}")
        if not names:
            return self.get_base_layer()
        out = self.merged_rational(names[0])
        if safe_merge and not (torch.isfinite(out.numerator).all() and torch.isfinite(out.denominator).all()):
            raise ValueError(f"NaNs or infs in the merged coefficients of adapter {names[0]!r}")
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _replicate(num: torch.Tensor, den: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Base coefficients as (groups, K): a shared row is broadcast, G0 rows are replicated to G."""
    num, den = torch.as_tensor(num).detach(), torch.as_tensor(den).detach()
    if num.dim() == 1:
        return num.expand(groups, -1).clone(), den.expand(groups, -1).clone()
    g0 = num.shape[0]
    if groups % g0:
        raise ValueError(f"groups={groups} must be a multiple of the base rational's {g0} groups")
    return num.repeat_interleave(groups // g0, 0), den.repeat_interleave(groups // g0, 0)


def base_coefficients(module: nn.Module, config: NoraConfig, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The base rational for the activation ``module`` at ``name``: its own coefficients (a rational) or a fit."""
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


# ---------------------------------------------------------------------------------------- in place


def apply_nora(model: nn.Module, config: NoraConfig, *, example_input=None, adapter_name: str = "default") -> nn.Module:
    """Replace the targeted activations by NoRA layers in place; freeze all but NoRA factors and ``trainable``.

    The same layers and config as ``peft.get_peft_model(model, config)``, without the ``PeftModel``
    wrapper (like peft's ``inject_adapter_in_model``); ``nora.save_adapter`` / ``load_adapter`` /
    ``merge`` work on the result.  ``example_input`` (one forward pass) measures the channels when
    they cannot be read from the layers around an activation.  On invalid input a ``ValueError``
    names the field and the model is left exactly as it was.
    """
    from nora.adapters.tuner import NoraModel

    if not isinstance(config, NoraConfig) or type(config).__name__ == "NoraPlusConfig":
        raise TypeError(
            f"config must be a NoraConfig, got {type(config).__name__} (NoRA++ needs the PeftModel: peft.get_peft_model)"
        )
    if any(isinstance(m, NoraActivation) for m in model.modules()):
        raise ValueError("model already has NoRA layers (merge or reload the base model first, or add a named adapter "
                         "through peft: PeftModel.add_adapter)")
    NoraModel(model, config, adapter_name, example_input=example_input)
    return model


# The tuner registers the peft method NORA (and imports nora.adapters.plus: NORA_PLUS); it imports this
# module, so it comes last.
import nora.adapters.tuner  # noqa: E402,F401
