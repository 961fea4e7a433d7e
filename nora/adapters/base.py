"""What every adapter shares: a marker class, a reversible injection, and the record on the model.

An adapter is applied in two phases: *plan* (validate the config against the model and build
every new module, touching nothing) and *commit* (swap modules and set ``requires_grad``), which
returns an :class:`Injection` that can undo itself.  ``nora.load_adapter`` uses the undo when the
file turns out not to match, so a failed call leaves the model exactly as it was.

Each adapter module registers its kind here (:func:`register_adapter`: name -> config class and
reversible inject); ``nora.io`` looks kinds up in :data:`ADAPTER_KINDS`, so io depends on the
adapters' base and no adapter module imports io at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["ADAPTER_KINDS", "AdapterModule", "AdapterRecord", "Injection", "get_record", "register_adapter", "RECORD_ATTR"]

RECORD_ATTR = "nora_adapter"


class AdapterModule(nn.Module):
    """Marker base class: the whole state (parameters and buffers) of such a module is adapter state.

    Subclasses may define ``merged() -> nn.Module``, the plain module that computes the same
    function with the adapter folded in; ``nora.merge`` swaps it in.  A subclass that wraps a
    frozen base layer lists that child's name in ``base_children`` so it is not saved.
    """

    base_children: tuple[str, ...] = ()


@dataclass
class AdapterRecord:
    """Which adapter a model carries and with which config (used by save/load/merge)."""

    kind: str
    config: Any


@dataclass
class Injection:
    """Module swaps and ``requires_grad`` changes made on ``model``, recorded so they can be undone."""

    model: nn.Module
    swapped: list[tuple[str, nn.Module]] = field(default_factory=list)
    grad_flags: dict[int, tuple[nn.Parameter, bool]] = field(default_factory=dict)
    had_record: bool = False
    old_record: Any = None
    attrs: list[tuple[Any, str, bool, Any]] = field(default_factory=list)

    @classmethod
    def begin(cls, model: nn.Module) -> Injection:
        return cls(model, had_record=hasattr(model, RECORD_ATTR), old_record=getattr(model, RECORD_ATTR, None))

    def set_requires_grad(self, param: nn.Parameter, flag: bool) -> None:
        self.grad_flags.setdefault(id(param), (param, param.requires_grad))
        param.requires_grad_(flag)

    def freeze_all(self) -> None:
        for p in self.model.parameters():
            self.set_requires_grad(p, False)

    def unfreeze(self, module: nn.Module) -> None:
        for p in module.parameters():
            self.set_requires_grad(p, True)

    def unfreeze_named(self, names: list[str]) -> None:
        """Make the modules at these dotted names trainable (the configs' ``trainable``)."""
        for name in names:
            self.unfreeze(self.model.get_submodule(name))

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        """``setattr`` that ``undo`` reverts (e.g. timm's ``num_prefix_tokens``)."""
        self.attrs.append((obj, name, hasattr(obj, name), getattr(obj, name, None)))
        setattr(obj, name, value)

    def swap(self, name: str, new: nn.Module) -> None:
        old = replace_module(self.model, name, new)
        self.swapped.append((name, old))

    def attach(self, kind: str, config: Any) -> None:
        setattr(self.model, RECORD_ATTR, AdapterRecord(kind, config))

    def undo(self) -> None:
        """Restore every swapped module, attribute, ``requires_grad`` flag and the previous record."""
        for obj, name, existed, old in reversed(self.attrs):
            if existed:
                setattr(obj, name, old)
            elif hasattr(obj, name):
                delattr(obj, name)
        for name, old in reversed(self.swapped):
            replace_module(self.model, name, old)
        for param, flag in self.grad_flags.values():
            param.requires_grad_(flag)
        if self.had_record:
            setattr(self.model, RECORD_ATTR, self.old_record)
        elif hasattr(self.model, RECORD_ATTR):
            delattr(self.model, RECORD_ATTR)
        self.swapped.clear()
        self.grad_flags.clear()
        self.attrs.clear()


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at dotted path ``name`` and return what was there."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def get_record(model: nn.Module) -> AdapterRecord | None:
    """The adapter record of ``model`` (or of the base model inside a peft wrapper)."""
    from nora.inject import unwrap

    return getattr(unwrap(model), RECORD_ATTR, None)


# kind -> (config class with to_dict/from_dict, inject(model, config) -> Injection)
ADAPTER_KINDS: dict[str, tuple[type, Callable[[nn.Module, Any], Injection]]] = {}


def register_adapter(kind: str, config_cls: type, inject: Callable[[nn.Module, Any], Injection]) -> None:
    """Make an adapter kind savable/loadable: its config class and its reversible inject function."""
    ADAPTER_KINDS[kind] = (config_cls, inject)
