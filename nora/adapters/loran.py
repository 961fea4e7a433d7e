"""LoRAN: LoRA whose update passes through an element-wise nonlinearity, and the Sinter activation.

For a frozen linear layer y = W x + b (W: out × in) LoRAN learns

    ΔW = s · σ(B A),   s = alpha / rank,   B: out × r (zero-init),   A: r × in (Kaiming-uniform),
    y  = W x + b + ΔW · dropout(x)

(Deng et al., arXiv 2509.21870; released code: liyinqiao2012/PEFT-LoRAN, ``mlora.py``).  The
nonlinearity ``σ`` (``LoRANConfig.activation``) is one of

- ``"sinter"``:   Sinter(z) = z + A·z·sin(ω z), A = ``sinter_amplitude``, ω = ``sinter_frequency``
  (released constants A = 5e-5, ω = 1e4);
- ``"sigmoid"``:  sigmoid(z) − 1/2  (*centred*, see below);
- ``"tanh"``, ``"relu"``, ``"identity"`` (``identity`` is plain LoRA, computed the factored way);
- ``"sine"``:     sin(ω z)/√in, ω = ``sine_frequency`` — the closest peer, sine-activated low-rank
  adaptation (Ji et al., ICLR 2025; released code samy-ji/Sine-Low-Rank divides by √in_features).

Every choice satisfies σ(0) = 0, so with B = 0 the model starts *exactly* at the base model, and
every choice has σ'(0) ≠ 0, so the first step moves B.  Two deliberate departures from the
released LoRAN code, both about its ablation activations:

- **sigmoid is centred.**  The released code applies ``nn.Sigmoid`` unchanged, so its
  LoRAN-sigmoid starts at W + (s/2)·11ᵀ (for r = 64, α = 16: +0.125 on *every* weight entry), not
  at the base model.  We use σ(z) − σ(0) = sigmoid(z) − 1/2, which keeps the slope 1/4 at 0 and
  removes only the constant offset.
- **relu uses the subgradient 1 at 0.**  ``torch.relu``'s gradient at exactly 0 is 0; with B = 0
  every entry of BA is exactly 0, so with ``nn.ReLU`` (the released code) the gradients of A and B
  are exactly zero forever and the adapter never leaves the base model.  The value is unchanged
  (max(z, 0)); only the derivative at the kink differs.

Cost.  Unlike LoRA (x → A x → B(A x), never forming an out × in matrix), a nonlinear σ must be
applied to the full update, so **every forward materialises the out × in matrix σ(BA)** — the
cost of a full-rank weight per adapted layer per forward (and r·out·in extra multiply-adds to form
BA), independent of the batch size.  ``LoRANLinear`` forms BA once per forward and applies σ
and s once; a custom autograd function keeps only x, A and B for the backward pass (which
recomputes BA), so no out × in tensor is held between forward and backward.  Its backward is
made of differentiable torch ops (double backward, ``torch.func.jacrev`` / ``vmap`` work; forward-
mode ``jvp`` does not).  Only ``activation="identity"`` uses LoRA's factored path.

Dropout, as in LoRA and the released code, acts on the adapter branch's input only:
y = W x + b + ΔW · dropout(x).  It is active in ``train()`` mode only; merging is for inference.

Precision.  The adapter branch runs in the adapter's dtype (float32 unless the base layer is
float64), with autocast disabled for it: Sinter's perturbation A·z·sin(ωz) is at most A = 5e-5
*relative* to z, below half an ulp of bfloat16 / float16, so in those dtypes Sinter at the
released constants is bit-exactly the identity.

Merging: W' = W + s·σ(BA) (``LoRANLinear.merged()``, used by ``nora.merge``), summed in float64 and
rounded once to the base dtype.  For a bitsandbytes 4-bit (NF4/FP4) base the weight is
dequantized and the merged layer is a *float* ``nn.Linear`` (float32 by default), not 4-bit:
re-quantizing would round the update away (NF4's step near a weight is ~1e-2 of the layer's
weight scale; a LoRAN update is typically far smaller).  If bitsandbytes has already repacked the
layer into its CPU inference format (its first eval-mode forward on an AVX512-BF16 CPU does that,
with bf16 scales), the weight of that format is used.

Saving.  ``LoRANLinear.base_children = ("base_layer",)`` marks the wrapped layer as base-model
state: only ``lora_A`` / ``lora_B`` (and the ``trainable`` modules) are adapter state.

Why not peft (0.21).  peft's LoRA machinery can *run* this — a subclass of
``peft.tuners.lora.layer.Linear`` overriding ``forward`` and ``get_delta_weight``, registered
with the experimental ``LoraConfig._register_custom_module({nn.Linear: ...})`` — but it cannot
keep the save/load guarantee: (1) ``PeftType`` is a closed enum, so ``register_peft_method`` can
not add a "loran" method with its own config; (2) the custom-module registration and the σ
settings are not written to ``adapter_config.json`` (it says ``peft_type: LORA``), so
``PeftModel.from_pretrained`` silently rebuilds a *plain LoRA* with the same tensors — a
different function, with no error; (3) LoRA variants (``LoraVariant``) are chosen from fixed
``LoraConfig`` fields, so a new variant needs a new config field peft does not know either;
(4) the custom mapping is keyed by layer type, and bitsandbytes' ``Linear4bit`` *is* an
``nn.Linear``, so the 4-bit path needs its own dequantizing merge anyway (peft's 4-bit merge
re-quantizes).  So this is a small module of our own on the same ``nora`` adapter contract as
NoRA: config validated first, reversible injection, safetensors + JSON via ``nora.io`` (kind
"loran"), ``nora.merge``.  The tensor names follow peft's LoRA layout (``<target>.base_layer``,
``<target>.lora_A``, ``<target>.lora_B``).

Targets.  ``LoRANConfig.targets`` entries work like peft's ``target_modules`` list: an entry
matches a module whose full name equals it or ends with ``"." + entry`` (``"q_proj"`` matches
``model.layers.0.self_attn.q_proj``; ``"attn.qkv"`` matches ``blocks.3.attn.qkv``), or — if it
is a valid regular expression — one it matches in full (``r"blocks\\.[0-5]\\.attn\\.qkv"``).
Every entry must match at least one module and every matched module must be a linear layer
(``nn.Linear`` or a subclass that keeps ``nn.Linear.forward``, or bitsandbytes ``Linear4bit``);
anything else raises a ``ValueError`` naming ``targets``.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nora.adapters.base import AdapterModule, Injection, get_record, register_adapter
from nora.config import BaseConfig
from nora.inject import resolve_modules

__all__ = [
    "ACTIVATIONS",
    "LoRANConfig",
    "LoRANLinear",
    "Sinter",
    "apply_loran",
    "inject_loran",
    "loran_activation",
    "sinter",
]

ACTIVATIONS = ("sinter", "sigmoid", "tanh", "relu", "identity", "sine")

# Released constants of the LoRAN runs (experiment/20-Newsgroups/Llama-2-7b/LoRAN/adapter_config.json:
# mlora_af_sin_A, mlora_af_sin_omega; the code's own defaults are 5e-4 and 1e3 — the same A·ω = 0.5).
SINTER_AMPLITUDE = 5e-5
SINTER_FREQUENCY = 1e4
# The sine-LoRA code takes its frequency as a required command-line value (default 0, which would
# make the adapter dead); 200 is our default, not a released constant: tune it.
SINE_FREQUENCY = 200.0


# --------------------------------------------------------------------------------------------
# Sinter


def sinter(x: torch.Tensor, amplitude: float = SINTER_AMPLITUDE, frequency: float = SINTER_FREQUENCY) -> torch.Tensor:
    """Sinter(x) = x + amplitude · x · sin(frequency · x), element-wise.

    Its derivative is 1 + A·sin(ωx) + A·ω·x·cos(ωx).  The value differs from x by at most
    ``|amplitude|`` *relative* to x, whatever x is; the derivative differs from 1 by up to
    |A| + |A·ω·x| (= 5e-5 + 0.5·|x| at the released constants).
    """
    return x + amplitude * x * torch.sin(frequency * x)


class Sinter(nn.Module):
    """Module form of :func:`sinter` (fixed constants, no parameters)."""

    def __init__(self, amplitude: float = SINTER_AMPLITUDE, frequency: float = SINTER_FREQUENCY) -> None:
        super().__init__()
        _check_finite("amplitude", amplitude)
        _check_finite("frequency", frequency)
        self.amplitude = float(amplitude)
        self.frequency = float(frequency)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sinter(x, self.amplitude, self.frequency)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude:g}, frequency={self.frequency:g}"


# --------------------------------------------------------------------------------------------
# The element-wise nonlinearities: value and derivative, out-of-place torch ops only (so the
# custom backward below is itself differentiable and vmappable).


@dataclass(frozen=True)
class _Act:
    name: str
    amplitude: float = SINTER_AMPLITUDE
    frequency: float = SINTER_FREQUENCY
    sine_frequency: float = SINE_FREQUENCY
    in_features: int = 1

    def value(self, z: torch.Tensor) -> torch.Tensor:
        n = self.name
        if n == "sinter":
            return sinter(z, self.amplitude, self.frequency)
        if n == "sigmoid":
            return torch.sigmoid(z) - 0.5
        if n == "tanh":
            return torch.tanh(z)
        if n == "relu":
            return z.clamp_min(0)
        if n == "identity":
            return z
        if n == "sine":
            return torch.sin(self.sine_frequency * z) / math.sqrt(self.in_features)
        raise AssertionError(n)

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        n = self.name
        if n == "sinter":
            a, w = self.amplitude, self.frequency
            wz = w * z
            return 1 + a * torch.sin(wz) + (a * w) * z * torch.cos(wz)
        if n == "sigmoid":
            s = torch.sigmoid(z)
            return s * (1 - s)
        if n == "tanh":
            return 1 - torch.tanh(z) ** 2
        if n == "relu":
            return (z >= 0).to(z.dtype)  # subgradient 1 at 0: see the module docstring
        if n == "identity":
            return torch.ones_like(z)
        if n == "sine":
            return torch.cos(self.sine_frequency * z) * (self.sine_frequency / math.sqrt(self.in_features))
        raise AssertionError(n)


def loran_activation(
    name: str,
    *,
    in_features: int = 1,
    sinter_amplitude: float = SINTER_AMPLITUDE,
    sinter_frequency: float = SINTER_FREQUENCY,
    sine_frequency: float = SINE_FREQUENCY,
):
    """The element-wise σ that LoRAN applies to BA (a callable on tensors), e.g. for plots.

    ``in_features`` only matters for ``"sine"`` (σ(z) = sin(ωz)/√in).
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")
    return _Act(name, float(sinter_amplitude), float(sinter_frequency), float(sine_frequency), int(in_features)).value


class _LoRANBranch(torch.autograd.Function):
    """y = x · (s·σ(B A))ᵀ for 2-D x, saving only x, A, B; the backward recomputes B A.

    grad_x = g · ΔW;  G = gᵀ x ⊙ s·σ'(BA);  grad_A = Bᵀ G;  grad_B = G Aᵀ.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float, act: _Act) -> torch.Tensor:
        delta = act.value(lora_b @ lora_a) * scale
        return F.linear(x, delta)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, lora_a, lora_b, scale, act = inputs
        ctx.save_for_backward(x, lora_a, lora_b)
        ctx.scale = scale
        ctx.act = act

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, lora_a, lora_b = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs_input_grad[:3]
        z = lora_b @ lora_a
        grad_x = grad_a = grad_b = None
        if need_x:
            grad_x = grad @ (ctx.act.value(z) * ctx.scale)
        if need_a or need_b:
            g = (grad.transpose(0, 1) @ x) * (ctx.act.derivative(z) * ctx.scale)
            if need_a:
                grad_a = lora_b.transpose(0, 1) @ g
            if need_b:
                grad_b = g @ lora_a.transpose(0, 1)
        return grad_x, grad_a, grad_b, None, None


# --------------------------------------------------------------------------------------------
# Supported base layers


def _is_bnb_module(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "bitsandbytes"


def _linear_kind(module: nn.Module) -> str | None:
    """'linear' for a float nn.Linear, 'bnb4' for a bitsandbytes 4-bit Linear, else None."""
    if _is_bnb_module(module):
        import bitsandbytes as bnb

        return "bnb4" if isinstance(module, bnb.nn.Linear4bit) else None
    if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
        return "linear" if module.weight.is_floating_point() else None
    return None


def _dequantized_weight(base: nn.Module) -> torch.Tensor:
    """The float weight (out × in) of a float or bitsandbytes 4-bit linear layer."""
    if _linear_kind(base) == "bnb4":
        import bitsandbytes.functional as bnbF

        weight = base.weight
        state = getattr(weight, "quant_state", None)
        if state is None:
            raise ValueError("the bitsandbytes 4-bit layer is not quantized yet (move it to a device first)")
        if getattr(state, "packing_format_for_cpu", False):
            # bitsandbytes >= 0.49 repacks a Linear4bit in place on its first eval-mode, no-grad
            # forward on an AVX512-BF16 CPU (bf16 absmax, its own layout).  Read the weight that
            # layout holds by applying its kernel to the identity.
            eye = torch.eye(int(base.in_features), dtype=torch.float32, device=weight.device)
            return bnbF.gemv_4bit(eye, weight.data, state=state).transpose(0, 1).contiguous()
        return bnbF.dequantize_4bit(weight.data, state)
    return base.weight


# --------------------------------------------------------------------------------------------
# The layer


class LoRANLinear(AdapterModule):
    """A frozen linear layer plus the LoRAN update: ``base_layer(x) + s·σ(BA)·dropout(x)``.

    Parameters ``lora_A`` (r × in, Kaiming-uniform) and ``lora_B`` (out × r, zeros) are created in
    the base weight's dtype if it is floating point (float32 for a 4-bit base) on its device.
    ``base_children`` names the child that holds the *base* model's state, not adapter state.
    ``weight`` / ``bias`` / ``in_features`` / ``out_features`` read through to the base layer for
    code that inspects them; code that computes with ``.weight`` directly bypasses the adapter.
    """

    base_children = ("base_layer",)

    def __init__(
        self,
        base_layer: nn.Module,
        rank: int = 8,
        alpha: float = 16.0,
        activation: str = "sinter",
        *,
        sinter_amplitude: float = SINTER_AMPLITUDE,
        sinter_frequency: float = SINTER_FREQUENCY,
        sine_frequency: float = SINE_FREQUENCY,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kind = _linear_kind(base_layer)
        if kind is None:
            raise ValueError(f"LoRANLinear wraps an nn.Linear or a bitsandbytes Linear4bit, got {type(base_layer).__name__}")
        LoRANConfig(
            rank=rank, alpha=alpha, activation=activation, sinter_amplitude=sinter_amplitude,
            sinter_frequency=sinter_frequency, sine_frequency=sine_frequency, dropout=dropout,
        )  # validates the hyper-parameters, naming the field
        self.base_layer = base_layer
        self.in_features = int(base_layer.in_features)
        self.out_features = int(base_layer.out_features)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scale = self.alpha / self.rank
        self.activation = activation
        self.act = _Act(activation, float(sinter_amplitude), float(sinter_frequency), float(sine_frequency), self.in_features)
        weight = base_layer.weight
        dtype = weight.dtype if (kind == "linear" and weight.is_floating_point()) else torch.float32
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, device=weight.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, device=weight.device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and peft's LoRA
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    # read-through attributes of the wrapped layer
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def delta_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """ΔW = s·σ(B A) (out × in), computed in ``dtype`` (default: the adapter's dtype)."""
        a, b = self.lora_A, self.lora_B
        if dtype is not None:
            a, b = a.to(dtype), b.to(dtype)
        return self.act.value(b @ a) * self.scale

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter branch alone, s·σ(BA)·dropout(x), in the adapter's dtype."""
        a, b = self.lora_A, self.lora_B
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LoRANLinear expects last dimension {self.in_features}, got {tuple(x.shape)}")
        with _no_autocast(x.device.type):
            xd = self.dropout(x).to(a.dtype)
            if self.activation == "identity":  # plain LoRA: the factored path, no out × in matrix
                return F.linear(F.linear(xd, a), b) * self.scale
            lead = xd.shape[:-1]
            out = _LoRANBranch.apply(xd.reshape(-1, self.in_features), a, b, self.scale, self.act)
            return out.reshape(*lead, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        return result + self.adapter_output(x).to(result.dtype)

    @torch.no_grad()
    def merged(self, dtype: torch.dtype | None = None) -> nn.Linear:
        """A plain ``nn.Linear`` with W' = W + s·σ(BA) (float64 sum, one rounding).

        Its dtype is the base weight's for a float base; for a 4-bit base the dequantized weight
        is used and the result is float (``dtype``, default: the adapter's dtype, float32).
        """
        base = self.base_layer
        weight = _dequantized_weight(base)
        if dtype is None:
            dtype = weight.dtype if _linear_kind(base) == "linear" else self.lora_A.dtype
        merged_weight = weight.to(torch.float64) + self.delta_weight(torch.float64)
        bias = base.bias
        out = nn.Linear(self.in_features, self.out_features, bias=bias is not None, device=weight.device, dtype=dtype)
        out.weight.copy_(merged_weight.to(dtype))
        out.weight.requires_grad_(bool(base.weight.requires_grad) and base.weight.is_floating_point())
        if bias is not None:
            out.bias.copy_(bias.to(dtype))
            out.bias.requires_grad_(bool(bias.requires_grad))
        return out

    def extra_repr(self) -> str:
        act = self.activation
        if act == "sinter":
            act += f"(A={self.act.amplitude:g}, ω={self.act.frequency:g})"
        elif act == "sine":
            act += f"(ω={self.act.sine_frequency:g})"
        return f"rank={self.rank}, alpha={self.alpha:g}, activation={act}"


def _no_autocast(device_type: str):
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # a device type autocast does not know
        enabled = False
    return torch.autocast(device_type=device_type, enabled=False) if enabled else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# Config and injection


def _check_finite(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")


def _as_names(field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{field} must be a sequence of non-empty module names or regexes, got {value!r}")
    return tuple(value)


@dataclass
class LoRANConfig(BaseConfig):
    """LoRAN hyper-parameters (see the module docstring for ``targets`` and ``activation``).

    ``trainable``: names (exact or full regex, as ``nora.inject.resolve_modules``) of modules
    trained in full next to the adapter (e.g. a new classification head); saved with it.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    activation: str = "sinter"
    sinter_amplitude: float = SINTER_AMPLITUDE
    sinter_frequency: float = SINTER_FREQUENCY
    sine_frequency: float = SINE_FREQUENCY
    dropout: float = 0.0
    trainable: tuple[str, ...] = ()

    def validate(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be an int >= 1, got {self.rank!r}")
        _check_finite("alpha", self.alpha)
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha!r}")
        self.targets = _as_names("targets", self.targets)
        if not self.targets:
            raise ValueError("targets must name at least one module")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        _check_finite("sinter_amplitude", self.sinter_amplitude)
        _check_finite("sinter_frequency", self.sinter_frequency)
        _check_finite("sine_frequency", self.sine_frequency)
        if self.sine_frequency <= 0:
            raise ValueError(f"sine_frequency must be positive (0 makes the update identically 0), got {self.sine_frequency!r}")
        _check_finite("dropout", self.dropout)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self.trainable = _as_names("trainable", self.trainable)


def _entry_matches(entry: str, name: str) -> bool:
    if name == entry or name.endswith("." + entry):
        return True
    try:
        return re.fullmatch(entry, name) is not None
    except re.error:
        return False


def find_loran_targets(model: nn.Module, targets) -> list[str]:
    """Names of the modules ``targets`` selects (see the module docstring); raises ``ValueError``."""
    targets = _as_names("targets", targets)
    modules = dict(model.named_modules())
    names: list[str] = []
    for entry in targets:
        hits = [n for n in modules if n and _entry_matches(entry, n)]
        if not hits:
            raise ValueError(f"targets entry {entry!r} matches no module of {type(model).__name__}")
        for name in hits:
            module = modules[name]
            if isinstance(module, LoRANLinear) or any(
                isinstance(modules.get(name.rsplit(".", k)[0]), LoRANLinear) for k in range(1, name.count(".") + 1)
            ):
                raise ValueError(f"targets entry {entry!r}: {name!r} already carries LoRAN (reload the base model first)")
            if _linear_kind(module) is None:
                why = (
                    "bitsandbytes layers other than Linear4bit are not supported"
                    if _is_bnb_module(module)
                    else "it is not a floating-point nn.Linear (or a bitsandbytes Linear4bit)"
                )
                raise ValueError(f"targets entry {entry!r} matches {name!r} ({type(module).__name__}): {why}")
            parent = modules[name.rpartition(".")[0]] if "." in name else model
            if isinstance(parent, nn.MultiheadAttention):
                raise ValueError(
                    f"targets entry {entry!r} matches {name!r}, the output projection of nn.MultiheadAttention, "
                    "which reads its .weight directly: a wrapper there would be ignored"
                )
            if name not in names:
                names.append(name)
    return names


def inject_loran(model: nn.Module, config: LoRANConfig) -> Injection:
    """Validate everything, then wrap every target linear in a :class:`LoRANLinear` (reversibly).

    Freezes the whole model, then makes the LoRAN factors and the ``trainable`` modules
    trainable.  On any ``ValueError`` / ``TypeError`` the model is untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, LoRANConfig):
        raise TypeError(f"config must be a LoRANConfig, got {type(config).__name__}")
    config.validate()
    record = get_record(model)
    if record is not None:
        raise ValueError(f"model already carries a nora adapter of kind {record.kind!r}; stacking adapters is not supported")
    names = find_loran_targets(model, config.targets)
    trainable = resolve_modules(model, config.trainable, "trainable") if config.trainable else []
    new_modules = {
        name: LoRANLinear(
            model.get_submodule(name),
            config.rank,
            config.alpha,
            config.activation,
            sinter_amplitude=config.sinter_amplitude,
            sinter_frequency=config.sinter_frequency,
            sine_frequency=config.sine_frequency,
            dropout=config.dropout,
        )
        for name in names
    }
    injection = Injection.begin(model)
    try:
        injection.freeze_all()
        for name, module in new_modules.items():
            injection.swap(name, module)
            injection.set_requires_grad(module.lora_A, True)
            injection.set_requires_grad(module.lora_B, True)
        for name in trainable:
            for param in model.get_submodule(name).parameters():
                injection.set_requires_grad(param, True)
        injection.attach("loran", config)
    except BaseException:
        injection.undo()
        raise
    return injection


def apply_loran(model: nn.Module, config: LoRANConfig) -> nn.Module:
    """Add LoRAN to ``model`` in place and return it (see :func:`inject_loran`)."""
    inject_loran(model, config)
    return model


register_adapter("loran", LoRANConfig, inject_loran)
