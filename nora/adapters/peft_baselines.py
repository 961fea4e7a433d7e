"""LoRA, DoRA and QLoRA through peft on timm ViTs, and full fine-tuning: the paper's weight-space baselines.

``apply_lora_baseline(model, LoraBaselineConfig(...))`` returns a ``peft.PeftModel`` whose
trainable parameters are the LoRA factors (+ DoRA magnitudes) and the ``trainable`` modules,
which peft saves as ``modules_to_save``.  Save and load with :func:`save_lora_baseline` /
:func:`load_lora_baseline` (peft's ``save_pretrained`` / ``PeftModel.from_pretrained`` plus a small
JSON file with this config, because the base must be prepared the same way before peft loads).

Query and value only (paper, Appendix C.1).  timm fuses q, k and v into one ``attn.qkv`` Linear
(dim -> 3*dim).  Targets ``"q"``, ``"k"``, ``"v"`` split it (exactly, weights copied) into three
Linear layers ``attn.qkv.q/k/v`` whose outputs are concatenated (:class:`SplitQKV`) and put LoRA on
the named ones only, so k gets no update.  Target ``"qkv"`` is LoRA on the fused layer (one A
shared by q, k, v).  Both cost r*(dim + 3*dim) = 768*r per ViT-Tiny block for {q, v} or {qkv}:
r*(192+192) twice vs r*(192+576) once — the same count, different function classes.  Other
targets (``"proj"``, ``"fc1"``, ``"fc2"``, any name suffix) are resolved to the full names of the
Linear layers they end with before peft sees them (peft's own suffix match would also catch the
``patch_embed.proj`` convolution for ``"proj"``).

QLoRA: every Linear of the backbone (not the ``trainable`` modules) becomes a bitsandbytes
``Linear4bit`` (NF4, double quantization, fp32 compute); LoRA sits on top.  bitsandbytes 0.50
runs this on CPU (forward, backward, optimizer step; tested).  ``model.is_loaded_in_4bit`` is set
so that peft uses its 4-bit LoRA layer (which dequantizes correctly when merging).

Paper vs. ours: the LoRA rank is lost in the paper's text; rank 8 is our default.  Table 1's
0.33M (LoRA) is not reached by rank-8 LoRA on q, v of ViT-Tiny (73,728 + a 19,300 head); it is
closer to rank 8 on all four linears (294,912 + head = 0.31M).  DoRA at rank 8 on all four
linears is 315,648 + head = 334,948 (0.33M, 6.04%), next to the paper's 0.34M (6.1%).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nora.adapters.base import Injection
from nora.config import BaseConfig
from nora.inject import resolve_modules, unwrap

__all__ = [
    "BASELINE_FILE",
    "FullFinetuneConfig",
    "LinearProbeConfig",
    "LoraBaselineConfig",
    "SplitQKV",
    "apply_full_finetune",
    "apply_linear_probe",
    "apply_lora_baseline",
    "load_lora_baseline",
    "prepare_base",
    "quantize_linears_4bit",
    "save_lora_baseline",
]

BASELINE_FILE = "nora_baseline.json"
_SPLIT = ("q", "k", "v")
_CONFIG_ATTR = "_nora_lora_baseline"


@dataclass
class LoraBaselineConfig(BaseConfig):
    """peft LoRA/DoRA (``use_dora``) on ``targets``, optionally on a 4-bit NF4 backbone (QLoRA)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")
    use_dora: bool = False
    quantize_4bit: bool = False
    double_quant: bool = True
    gradient_checkpointing: bool = False
    trainable: tuple[str, ...] = ("head",)

    def validate(self) -> None:
        for name in ("targets", "trainable"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"rank must be an int >= 1, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha) \
                or self.alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets or any(not isinstance(t, str) or not t for t in self.targets):
            raise ValueError(f"targets must be non-empty Linear names, got {self.targets!r}")
        if "qkv" in self.targets and any(t in _SPLIT for t in self.targets):
            raise ValueError(f"targets: 'qkv' (fused) and 'q'/'k'/'v' (split) exclude each other, got {self.targets!r}")
        for name in ("use_dora", "quantize_4bit", "double_quant", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be module names or regexes, got {self.trainable!r}")

    def peft_targets(self) -> list[str]:
        """Name suffixes of the LoRA targets ("q" -> "qkv.q")."""
        return [f"qkv.{t}" if t in _SPLIT else t for t in self.targets]


class SplitQKV(nn.Module):
    """timm's fused ``qkv`` Linear as three Linear layers ``q``, ``k``, ``v`` (same outputs, concatenated)."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        d = qkv.out_features // 3
        for i, name in enumerate(_SPLIT):
            lin = nn.Linear(qkv.in_features, d, bias=qkv.bias is not None, device=qkv.weight.device,
                            dtype=qkv.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(qkv.weight[i * d : (i + 1) * d])
                if qkv.bias is not None:
                    lin.bias.copy_(qkv.bias[i * d : (i + 1) * d])
            lin.requires_grad_(qkv.weight.requires_grad)
            setattr(self, name, lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)  # bitsandbytes Linear4bit subclasses nn.Linear


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _qkv_to_split(model: nn.Module) -> list[str]:
    """Names of the fused ``*.attn.qkv`` Linear layers (already split ones are skipped)."""
    return [n for n, m in model.named_modules() if n.endswith("attn.qkv") and _is_linear(m)]


def _to_quantize(model: nn.Module, keep: list[str]) -> list[str]:
    """Backbone Linear layers (outside ``keep``) that are not 4-bit yet."""
    out = []
    for name, module in model.named_modules():
        if not _is_linear(module) or any(name == k or name.startswith(k + ".") for k in keep):
            continue
        if type(module).__name__ != "Linear4bit":
            out.append(name)
    return out


@dataclass
class _Plan:
    """What ``apply_lora_baseline`` will do, decided before anything changes (full module names)."""

    split: list[str]
    quantize: list[str]
    trainable: list[str]
    lora_targets: list[str]


def _plan(model: nn.Module, config: LoraBaselineConfig) -> _Plan:
    """Validate ``config`` against ``model`` and resolve every name (Linear layers only, never convs)."""
    if not isinstance(config, LoraBaselineConfig):
        raise TypeError(f"config must be a LoraBaselineConfig, got {type(config).__name__}")
    config.validate()
    if callable(getattr(model, "get_base_model", None)) or any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError("model already carries peft adapters (pass a fresh base model)")
    split = _qkv_to_split(model) if any(t in _SPLIT for t in config.targets) else []
    if any(t in _SPLIT for t in config.targets) and not split and not any(
            isinstance(m, SplitQKV) for m in model.modules()):
        raise ValueError(f"targets {config.targets!r}: 'q'/'k'/'v' need timm attention layers '*.attn.qkv'")
    for name in split:
        if model.get_submodule(name).out_features % 3:
            raise ValueError(f"targets: {name!r} has {model.get_submodule(name).out_features} outputs, not 3 x dim")
    linear_names = [n for n, m in model.named_modules() if _is_linear(m) and n not in split]
    linear_names += [f"{n}.{t}" for n in split for t in _SPLIT]
    lora_targets: list[str] = []
    for target in config.peft_targets():
        hits = [n for n in linear_names if _matches(n, target)]
        if not hits:
            raise ValueError(f"targets entry {target!r} matches no Linear layer of {type(model).__name__}")
        lora_targets += [h for h in hits if h not in lora_targets]
    trainable = resolve_modules(model, config.trainable, "trainable")
    all_names = [n for n, _ in model.named_modules() if n]
    for name in trainable:  # peft matches modules_to_save by plain suffix: refuse entries that catch others
        extra = [n for n in all_names if n.endswith(name) and n != name]
        if extra:
            raise ValueError(f"trainable entry {name!r} would also make peft save {extra[:3]}; use a unique name")
        if any(t == name or t.startswith(name + ".") for t in lora_targets):
            raise ValueError(f"trainable entry {name!r} is also a LoRA target")
    quantize = []
    if config.quantize_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ValueError(f"quantize_4bit=True needs bitsandbytes: {err}") from err
        quantize = _to_quantize(model, trainable)
        quantize = [n for n in quantize if n not in split] + [f"{n}.{t}" for n in split for t in _SPLIT]
    if config.gradient_checkpointing and not callable(getattr(model, "set_grad_checkpointing", None)):
        raise ValueError(f"gradient_checkpointing=True needs a timm model (set_grad_checkpointing), "
                         f"got {type(model).__name__}")
    return _Plan(split, quantize, trainable, lora_targets)


def quantize_linears_4bit(model: nn.Module, names: list[str], *, double_quant: bool = True,
                          injection: Injection | None = None) -> nn.Module:
    """Replace the named Linear layers by frozen bitsandbytes NF4 ``Linear4bit`` (compute in the weight dtype).

    Set ``model.is_loaded_in_4bit = True`` before peft wraps the model, so that peft uses its 4-bit
    LoRA layer (``prepare_base`` and ``apply_lora_baseline`` do).
    """
    import bitsandbytes as bnb

    injection = injection or Injection.begin(model)
    for name in names:
        lin = model.get_submodule(name)
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                              compute_dtype=lin.weight.dtype, compress_statistics=double_quant, quant_type="nf4",
                              device="meta")
        q.weight = bnb.nn.Params4bit(lin.weight.detach().cpu().clone(), requires_grad=False,
                                     compress_statistics=double_quant, quant_type="nf4")
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        # bitsandbytes 0.50 on AVX512-BF16 CPUs repacks the weight on the first no-grad eval forward;
        # afterwards outputs are bf16-precise and training either raises (with bias) or silently
        # drops the input gradient (without).  Keep the one NF4 path for train and eval.
        q.support_avx512bf16_for_cpu = False
        injection.swap(name, q.to(lin.weight.device))  # .to() quantizes
    return model


def prepare_base(model: nn.Module, config: LoraBaselineConfig) -> nn.Module:
    """Split qkv and quantize as ``config`` says (what a fresh base needs before ``PeftModel.from_pretrained``)."""
    _prepare(model, config, _plan(model, config))
    _finish(model, config)
    return model


def _prepare(model: nn.Module, config: LoraBaselineConfig, plan: _Plan) -> Injection:
    """Split and quantize (reversibly); sets ``is_loaded_in_4bit`` for peft when quantizing."""
    injection = Injection.begin(model)
    injection.freeze_all()  # peft freezes the base anyway; recorded here so that a failure restores the flags
    try:
        for name in plan.split:
            injection.swap(name, SplitQKV(model.get_submodule(name)))
        if plan.quantize:
            quantize_linears_4bit(model, plan.quantize, double_quant=config.double_quant, injection=injection)
        if config.quantize_4bit:
            injection.set_attr(model, "is_loaded_in_4bit", True)
    except BaseException:
        injection.undo()
        raise
    return injection


def _rollback(model: nn.Module, injection: Injection) -> None:
    """Undo a failed peft call: unwrap peft's layers, then our swaps, flags and attributes."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    from nora.adapters.base import replace_module

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            replace_module(model, name, module.get_base_layer())
        elif isinstance(module, ModulesToSaveWrapper):
            replace_module(model, name, module.original_module)
    injection.undo()
    if "peft_config" in vars(model):
        delattr(model, "peft_config")


def _finish(model: nn.Module, config: LoraBaselineConfig) -> None:
    """After peft succeeded: gradient checkpointing and the config that ``save_lora_baseline`` writes."""
    if config.gradient_checkpointing:
        model.set_grad_checkpointing(True)
    setattr(model, _CONFIG_ATTR, config)


def apply_lora_baseline(model: nn.Module, config: LoraBaselineConfig):
    """Wrap ``model`` with peft LoRA/DoRA/QLoRA as ``config`` says; returns the ``peft.PeftModel``.

    The config is checked against the model first (``ValueError`` naming the field, model untouched).
    """
    from peft import LoraConfig, get_peft_model

    plan = _plan(model, config)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=plan.lora_targets, use_dora=config.use_dora,
                      modules_to_save=plan.trainable or None)
    injection = _prepare(model, config, plan)
    try:
        peft_model = get_peft_model(model, lora)
    except BaseException:
        _rollback(model, injection)
        raise
    _finish(model, config)
    return peft_model


def save_lora_baseline(model, path: str | Path) -> Path:
    """peft's ``save_pretrained`` plus ``nora_baseline.json`` (the :class:`LoraBaselineConfig`)."""
    config = getattr(unwrap(model), _CONFIG_ATTR, None)
    if config is None or not callable(getattr(model, "save_pretrained", None)):
        raise ValueError("model was not built by apply_lora_baseline")
    path = Path(path)
    model.save_pretrained(str(path))
    meta = {"kind": "lora_baseline", "config": config.to_dict()}
    (path / BASELINE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_lora_baseline(model: nn.Module, path: str | Path, *, is_trainable: bool = False):
    """Prepare a fresh base as saved (split / quantize), then ``PeftModel.from_pretrained``."""
    from peft import PeftModel

    path = Path(path)
    try:
        meta = json.loads((path / BASELINE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path / BASELINE_FILE} is missing or not JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("kind") != "lora_baseline":
        raise ValueError(f"{path / BASELINE_FILE}: field 'kind' must be 'lora_baseline'")
    config = LoraBaselineConfig.from_dict(meta.get("config"))
    injection = _prepare(model, config, _plan(model, config))
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except BaseException as err:
        _rollback(model, injection)
        if isinstance(err, RuntimeError):  # torch's size-mismatch error from load_state_dict
            raise ValueError(f"adapter {path} does not match the model: {err}") from err
        raise
    _finish(model, config)
    return peft_model


@dataclass
class FullFinetuneConfig(BaseConfig):
    """Every parameter trainable except those under the ``frozen`` module names/regexes (none in the paper)."""

    frozen: tuple[str, ...] = ()

    def validate(self) -> None:
        if isinstance(self.frozen, str):
            self.frozen = (self.frozen,)
        self.frozen = tuple(self.frozen)
        if any(not isinstance(t, str) or not t for t in self.frozen):
            raise ValueError(f"frozen must be module names or regexes, got {self.frozen!r}")


def apply_full_finetune(model: nn.Module, config: FullFinetuneConfig | None = None) -> nn.Module:
    """Make every parameter trainable (but ``frozen``); save the result as a plain state dict (safetensors)."""
    config = FullFinetuneConfig() if config is None else config
    if not isinstance(config, FullFinetuneConfig):
        raise TypeError(f"config must be a FullFinetuneConfig, got {type(config).__name__}")
    config.validate()
    frozen = resolve_modules(model, config.frozen, "frozen")
    model.requires_grad_(True)
    for name in frozen:
        model.get_submodule(name).requires_grad_(False)
    return model


@dataclass
class LinearProbeConfig(BaseConfig):
    """Only the ``trainable`` modules (the new head) train; the backbone stays frozen: the head-only probe."""

    trainable: tuple[str, ...] = ("head",)

    def validate(self) -> None:
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable)
        if not self.trainable or any(not isinstance(t, str) or not t for t in self.trainable):
            raise ValueError(f"trainable must be a non-empty tuple of module names or regexes, got {self.trainable!r}")


def apply_linear_probe(model: nn.Module, config: LinearProbeConfig | None = None) -> nn.Module:
    """Freeze every parameter but those of the ``trainable`` modules: what the frozen features alone give."""
    config = LinearProbeConfig() if config is None else config
    if not isinstance(config, LinearProbeConfig):
        raise TypeError(f"config must be a LinearProbeConfig, got {type(config).__name__}")
    config.validate()
    trainable = resolve_modules(model, config.trainable, "trainable")
    model.requires_grad_(False)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)
    return model

