"""Folding adapters into plain modules: same outputs, no adapter overhead at inference."""

from __future__ import annotations

from torch import nn

from nora.adapters.base import RECORD_ATTR, AdapterModule, replace_module

__all__ = ["merge"]


def merge(model: nn.Module) -> nn.Module:
    """Merge peft LoRA/DoRA (``merge_and_unload``) and every adapter module that has ``merged()``.

    NoRA layers become frozen ``GroupRational`` activations with the deltas folded in; LoRAN
    layers become plain linears.  Returns the merged model (a new object for peft models).
    Adapters that cannot be merged (prompts, bottleneck adapters) raise ``ValueError``.
    """
    for name, module in model.named_modules():
        if isinstance(module, AdapterModule) and not callable(getattr(module, "merged", None)):
            raise ValueError(f"adapter module {name!r} ({type(module).__name__}) cannot be merged")
    if callable(getattr(model, "merge_and_unload", None)):
        model = model.merge_and_unload()
    mergeable: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, AdapterModule) and not any(name.startswith(m + ".") for m, _ in mergeable):
            mergeable.append((name, module))
    for name, module in mergeable:
        replace_module(model, name, module.merged())
    if hasattr(model, RECORD_ATTR):
        delattr(model, RECORD_ATTR)
    return model
