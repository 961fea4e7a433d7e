"""Folding adapters into plain modules: same outputs, no adapter overhead at inference."""

from __future__ import annotations

from torch import nn

from nora.adapters.base import RECORD_ATTR, AdapterModule, replace_module

__all__ = ["merge"]


def merge(model: nn.Module) -> nn.Module:
    """Merge peft adapters (``merge_and_unload``: LoRA/DoRA, NoRA, NoRA++) and every adapter module that has ``merged()``.

    NoRA layers become frozen ``GroupRational`` activations with the deltas folded in (also on a
    model adapted in place by ``nora.apply_nora``, whose ``modules_to_save`` copies replace the
    originals, as peft's ``merge_and_unload`` does); LoRAN layers become plain linears.  Returns
    the merged model (a new object for peft models).  Adapters that cannot be merged (prompts,
    bottleneck adapters) raise ``ValueError``.
    """
    for name, module in model.named_modules():
        if isinstance(module, AdapterModule) and not callable(getattr(module, "merged", None)):
            raise ValueError(f"adapter module {name!r} ({type(module).__name__}) cannot be merged")
    if callable(getattr(model, "merge_and_unload", None)):
        model = model.merge_and_unload()
    else:
        _merge_peft_layers_in_place(model)
    mergeable: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, AdapterModule) and not any(name.startswith(m + ".") for m, _ in mergeable):
            mergeable.append((name, module))
    for name, module in mergeable:
        replace_module(model, name, module.merged())
    if hasattr(model, RECORD_ATTR):
        delattr(model, RECORD_ATTR)
    return model


def _merge_peft_layers_in_place(model: nn.Module) -> None:
    """What ``BaseTuner.merge_and_unload`` does, for peft layers injected without a PeftModel."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)) and not any(name.startswith(n + ".") for n, _ in layers):
            layers.append((name, module))
    for name, module in layers:
        if not hasattr(module, "unload_and_optionally_merge_module"):
            raise ValueError(f"peft layer {name!r} ({type(module).__name__}) cannot be merged in place; use its PeftModel")
        replace_module(model, name, module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None))
    if layers and "peft_config" in vars(model):
        del model.peft_config
