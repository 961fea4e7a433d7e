"""Every fine-tuning method the vision notebooks compare, by name: ``build_method(name, model, **overrides)``.

Defaults follow the paper's Appendix C.1 where it states them; where it does not, the choice is
ours and said here.  Every method trains the classification head (``trainable=("head",)``).

- ``full``: every parameter.  ``probe``: the head alone on the frozen backbone (what the features give).
- ``vpt``: VPT-shallow, 10 prompt tokens (C.1).
- ``adapter``: bottleneck width 48 after each block's MLP ("between each transformer block", C.1);
  Houlsby's two per block: ``positions=("attn", "mlp")``.
- ``lora``: rank 8 (the paper's rank is lost in its text: our choice), alpha 16, no dropout, on the
  query and value projections (C.1; timm's fused qkv is split exactly, see ``peft_baselines``).
- ``qlora``: ``lora`` on an NF4 4-bit backbone with double quantization and gradient checkpointing (C.1).
- ``dora``: DoRA, rank 8, alpha 16, on all Linear weights of the blocks (qkv, proj, fc1, fc2) (C.1).
- ``prelu`` / ``arelu`` / ``elu``: the learnable activation in place of every GELU (Table 3).
- ``nora``: NoRA, G=8, r=3, alpha=6 on every GELU (the paper's and its code's defaults).
- ``nora++``: NoRA + peft LoRA rank 8, alpha 16 on the attention and MLP Linear layers (Sec. 4.1.3:
  "LoRA to the attention and MLP layers"); override with ``nora={...}`` and ``lora={...}``
  (``NoraConfig`` and ``peft.LoraConfig`` fields).
- ``loran``: LoRAN (Sinter, its released constants), rank 8, alpha 16, on the fused ``attn.qkv`` (neither
  paper has a ViT LoRAN setting: ours).  LoRAN applies sigma to the whole BA, so q/v-only would need
  the qkv split saved with the model; fused qkv has the same count as LoRA on q and v (768 r per block).

Trainable parameters on ViT-Tiny (224 px, 100 classes, head included) with these defaults, next to
the paper's Table 1 (measured with ``nora.counting.count_parameters``):

    full    5,543,716  (paper 5.54M)    lora    93,028  (paper 0.33M; rank 8 on all four linears: 314,212)
    vpt        21,220  (paper 0.39M)    qlora   93,028  (paper 0.33M)
    adapter   243,364  (paper 0.48M; Houlsby two per block + trained LayerNorms: 476,644)
    dora      334,948  (paper 0.34M)    nora    20,236  (paper 0.02M)    nora++ 315,148  (paper 0.35M)
    prelu / elu 19,312, arelu 19,324 (Table 3 gives no counts)

Overrides are fields of the method's config (e.g. ``build_method("lora", model, rank=16)``);
an unknown one raises ``ValueError`` naming it.  The model is changed in place; peft methods
(``lora``, ``qlora``, ``dora``, ``nora++``) return the ``PeftModel`` wrapping it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

__all__ = ["METHODS", "build_method", "method_config"]

METHODS = ("full", "probe", "vpt", "adapter", "lora", "qlora", "dora", "prelu", "arelu", "elu", "nora", "nora++", "loran")

_LORA = dict(rank=8, alpha=16.0, dropout=0.0, targets=("q", "v"), trainable=("head",))
_LORAN = dict(rank=8, alpha=16.0, targets=("attn.qkv",), activation="sinter", trainable=("head",))
_NORA = dict(groups=8, rank=3, alpha=6.0, target="gelu", trainable=("head",))
# "attn.proj", not "proj": peft matches name suffixes, and "proj" would also catch the patch_embed.proj conv.
_NORA_PLUS_LORA = dict(
    r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
)


def _make(cls: type, defaults: dict[str, Any], overrides: dict[str, Any], method: str):
    """``cls(**defaults)`` updated with ``overrides``; unknown fields raise ``ValueError``."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"build_method({method!r}): unknown override(s) {unknown}; {cls.__name__} fields: {sorted(fields)}"
        )
    return cls(**{**defaults, **overrides})


def method_config(name: str, **overrides: Any) -> Any:
    """The config ``build_method`` would use (a tuple ``(NoraConfig, peft.LoraConfig)`` for ``nora++``)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {name!r}")
    if name == "full":
        from nora.adapters.peft_baselines import FullFinetuneConfig

        return _make(FullFinetuneConfig, {}, overrides, name)
    if name == "probe":
        from nora.adapters.peft_baselines import LinearProbeConfig

        return _make(LinearProbeConfig, {}, overrides, name)
    if name == "vpt":
        from nora.adapters.prompts import VPTConfig

        return _make(VPTConfig, dict(prompts=10, trainable=("head",)), overrides, name)
    if name == "adapter":
        from nora.adapters.bottleneck import BottleneckConfig

        return _make(BottleneckConfig, dict(width=48, positions=("mlp",), trainable=("head",)), overrides, name)
    if name in ("lora", "qlora", "dora"):
        from nora.adapters.peft_baselines import LoraBaselineConfig

        extra = {
            "lora": {},
            "qlora": dict(quantize_4bit=True, double_quant=True, gradient_checkpointing=True),
            "dora": dict(use_dora=True, targets=("qkv", "proj", "fc1", "fc2")),
        }[name]
        return _make(LoraBaselineConfig, {**_LORA, **extra}, overrides, name)
    if name in ("prelu", "arelu", "elu"):
        from nora.adapters.activations import ActivationSwapConfig

        return _make(ActivationSwapConfig, dict(kind=name, target="gelu", trainable=("head",)), overrides, name)
    if name == "nora":
        from nora.adapters.nora import NoraConfig

        return _make(NoraConfig, _NORA, overrides, name)
    if name == "nora++":
        from peft import LoraConfig

        from nora.adapters.nora import NoraConfig

        unknown = sorted(set(overrides) - {"nora", "lora"})
        if unknown:
            raise ValueError(f"build_method('nora++'): overrides go in nora={{...}} and lora={{...}}, got {unknown}")
        nora_cfg = _make(NoraConfig, _NORA, dict(overrides.get("nora", {})), name)
        lora_cfg = _make(LoraConfig, _NORA_PLUS_LORA, dict(overrides.get("lora", {})), name)
        return nora_cfg, lora_cfg
    from nora.adapters.loran import LoRANConfig  # name == "loran"

    return _make(LoRANConfig, _LORAN, overrides, name)


def build_method(name: str, model: nn.Module, **overrides: Any) -> nn.Module:
    """Apply method ``name`` (one of ``METHODS``) to ``model`` with its default config updated by ``overrides``."""
    config = method_config(name, **overrides)
    if name == "full":
        from nora.adapters.peft_baselines import apply_full_finetune

        return apply_full_finetune(model, config)
    if name == "probe":
        from nora.adapters.peft_baselines import apply_linear_probe

        return apply_linear_probe(model, config)
    if name == "vpt":
        from nora.adapters.prompts import apply_vpt

        return apply_vpt(model, config)
    if name == "adapter":
        from nora.adapters.bottleneck import apply_bottleneck

        return apply_bottleneck(model, config)
    if name in ("lora", "qlora", "dora"):
        from nora.adapters.peft_baselines import apply_lora_baseline

        return apply_lora_baseline(model, config)
    if name in ("prelu", "arelu", "elu"):
        from nora.adapters.activations import apply_activation_swap

        return apply_activation_swap(model, config)
    if name == "nora":
        from nora.adapters.nora import apply_nora

        return apply_nora(model, config)
    if name == "nora++":
        from nora.adapters.plus import apply_nora_plus

        return apply_nora_plus(model, *config)
    from nora.adapters.loran import apply_loran

    return apply_loran(model, config)
