"""Finding activations (or any modules) in timm / transformers / plain models, and their widths.

``find_targets`` resolves a target spec; ``infer_channels`` finds the width an activation sees;
``resolve_modules`` maps user-given module names (exact or regex) to modules.  All raise a
``ValueError`` naming the field before anything is changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

__all__ = [
    "KNOWN_TARGETS",
    "activation_kind",
    "find_targets",
    "infer_channels",
    "resolve_modules",
    "unwrap",
]

# Class names (timm / torch / transformers) of the activations each known target matches.
_GELU_EXACT = {"GELU", "GELUActivation"}
_GELU_TANH = {"NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "FastGELUActivation", "QuickGELUActivation"}
_SILU = {"SiLU", "SiLUActivation", "Swish"}
KNOWN_TARGETS = ("gelu", "silu", "rational")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a peft ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def activation_kind(module: nn.Module) -> str | None:
    """'gelu', 'gelu_tanh', 'silu' or 'rational' for modules we know how to replace, else None."""
    from nora.rational import GroupRational

    if isinstance(module, GroupRational):
        return "rational"
    name = type(module).__name__
    if name in _GELU_EXACT:
        return "gelu_tanh" if getattr(module, "approximate", "none") == "tanh" else "gelu"
    if name in _GELU_TANH:
        return "gelu_tanh"
    if name in _SILU:
        return "silu"
    return None


def find_targets(model: nn.Module, target) -> list[tuple[str, nn.Module]]:
    """Modules matched by ``target``: "gelu", "silu", "rational", a module class, or a name regex.

    A string that is not a known name is a regular expression matched in full against module
    names (e.g. ``r"blocks\\.[0-5]\\.mlp\\.act"``).
    """
    modules = [(n, m) for n, m in model.named_modules() if n]
    if isinstance(target, type):
        if not issubclass(target, nn.Module):
            raise ValueError(f"target class {target.__name__} is not an nn.Module subclass")
        return [(n, m) for n, m in modules if isinstance(m, target)]
    if not isinstance(target, str) or not target:
        raise ValueError(f"target must be 'gelu', 'silu', 'rational', a module class or a name regex, got {target!r}")
    key = target.lower()
    if key == "gelu":
        return [(n, m) for n, m in modules if activation_kind(m) in ("gelu", "gelu_tanh")]
    if key in ("silu", "rational"):
        return [(n, m) for n, m in modules if activation_kind(m) == key]
    try:
        pattern = re.compile(target)
    except re.error as err:
        raise ValueError(f"target {target!r} is neither a known activation {KNOWN_TARGETS} nor a valid regex: {err}")
    return [(n, m) for n, m in modules if pattern.fullmatch(n)]


def resolve_modules(model: nn.Module, names: Iterable[str], field: str = "trainable") -> list[str]:
    """Module names matching each entry of ``names`` exactly or as a full regex; unmatched entries raise."""
    all_names = [n for n, _ in model.named_modules() if n]
    found: list[str] = []
    for entry in names:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"{field} entries must be non-empty module names, got {entry!r}")
        if entry in all_names:
            hits = [entry]
        else:
            try:
                pattern = re.compile(entry)
            except re.error:
                hits = []
            else:
                hits = [n for n in all_names if pattern.fullmatch(n)]
        if not hits:
            raise ValueError(f"{field} entry {entry!r} matches no module of {type(model).__name__}")
        found.extend(h for h in hits if h not in found)
    return found


_WIDTH_SOURCES = ("gate_proj", "fc1", "c_fc", "dense_h_to_4h", "w1", "lin1", "up_proj")


def infer_channels(
    model: nn.Module, names: list[str], example_input: object | None = None
) -> dict[str, int]:
    """The last-dimension width each named module receives.

    With ``example_input`` one forward pass (no grad) records it exactly.  Without, it is read
    from the parent: the first of gate_proj / fc1 / c_fc / ... that is a Linear, else the
    nearest Linear registered before the activation.  A width that cannot be found raises.
    """
    if example_input is not None:
        return _widths_by_forward(model, names, example_input)
    widths = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        width = None
        for attr in _WIDTH_SOURCES:
            lin = getattr(parent, attr, None)
            if isinstance(lin, nn.Linear) or hasattr(lin, "out_features"):
                width = int(lin.out_features)
                break
        if width is None:
            previous = None
            for sub_name, sub in parent.named_children():
                if sub_name == child:
                    break
                if hasattr(sub, "out_features"):
                    previous = sub
            width = int(previous.out_features) if previous is not None else None
        if width is None:
            raise ValueError(
                f"cannot infer the number of channels of {name!r}; pass example_input=... so one "
                "forward pass can measure it"
            )
        widths[name] = width
    return widths


def _widths_by_forward(model: nn.Module, names: list[str], example_input) -> dict[str, int]:
    widths: dict[str, int] = {}
    hooks = []
    for name in names:
        module = model.get_submodule(name)

        def hook(_mod, args, _out, name=name):
            widths.setdefault(name, int(args[0].shape[-1]))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            elif isinstance(example_input, (tuple, list)):
                model(*example_input)
            else:
                model(example_input)
    finally:
        for h in hooks:
            h.remove()
    missing = [n for n in names if n not in widths]
    if missing:
        raise ValueError(f"example_input did not reach target modules {missing}")
    return widths
