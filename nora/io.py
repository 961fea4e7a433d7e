"""Saving and loading adapters as safetensors + JSON (never pickles), with checks on load.

NoRA and NoRA++ are peft methods: ``save_adapter`` / ``load_adapter`` hand them to peft's format
(``adapter_config.json`` with their ``peft_type`` + ``adapter_model.safetensors``, what
``PeftModel.save_pretrained`` writes; see ``nora.adapters.tuner``), so a directory written either
way loads either way.  A NoRA adapter in the format below (``format_version`` 1, before NoRA was
a peft method) is refused with the ``nora.convert_adapter`` call that rewrites it.

The other kinds (LoRAN, VPT, bottleneck, learnable activations) keep this format.  Saved: the state of every :class:`~nora.adapters.base.AdapterModule` in the model (less the frozen
layers it wraps, which it names in ``base_children``) plus the
parameters of the modules the config lists as ``trainable`` (e.g. the new head), and a JSON file
with the adapter kind, its config and the name, shape and dtype of every tensor.  Loading checks
the JSON, the tensor file and the model against each other; on any mismatch it raises a
``ValueError`` and the model is left exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nora.adapters.base import ADAPTER_KINDS, AdapterModule, get_record, register_adapter
from nora.inject import resolve_modules, unwrap

__all__ = ["CONFIG_FILE", "TENSORS_FILE", "adapter_state", "load_adapter", "read_legacy", "register_adapter", "save_adapter"]

CONFIG_FILE = "adapter_config.json"
TENSORS_FILE = "adapter_model.safetensors"
FORMAT = "nora-adapter"
FORMAT_VERSION = 1
# register_adapter (re-exported here) and its table ADAPTER_KINDS live in nora.adapters.base, so
# that the adapter modules register their kinds without importing this module.

def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors of ``model`` by state-dict name: adapter modules whole, plus ``trainable`` modules."""
    base = unwrap(model)
    record = get_record(model)
    adapters = [(n, m) for n, m in base.named_modules() if isinstance(m, AdapterModule)]
    prefixes = [n for n, _ in adapters]
    # An adapter wrapping a frozen layer (e.g. LoRAN's base_layer) names it in base_children: not saved.
    skipped = [f"{n}.{child}." for n, m in adapters for child in getattr(m, "base_children", ())]
    trainable = getattr(record.config, "trainable", ()) if record else ()
    if trainable:
        prefixes += resolve_modules(base, trainable)
    state = {}
    for key, value in base.state_dict(keep_vars=True).items():
        if any(key.startswith(p + ".") for p in prefixes) and not any(key.startswith(s) for s in skipped):
            state[key] = value
    return state


def _peft_nora_config(model: nn.Module):
    """The NoRA / NoRA++ config of a peft-adapted model (PeftModel or adapted in place), else None."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    from nora.adapters.nora import NoraConfig

    name = getattr(model, "active_adapter", "default")
    config = configs.get(name if isinstance(name, str) else "default")
    return config if isinstance(config, NoraConfig) else None


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` under directory ``path``.

    NoRA / NoRA++ models are saved in peft's format (``PeftModel.save_pretrained`` for a PeftModel).
    """
    if _peft_nora_config(model) is not None:
        from peft import PeftModel

        from nora.adapters.tuner import save_inplace

        if isinstance(model, PeftModel):
            model.save_pretrained(str(path))
            return Path(path)
        return save_inplace(model, path)
    record = get_record(model)
    if record is None:
        raise ValueError("model carries no nora adapter (apply one first, e.g. nora.apply_nora)")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in adapter_state(model).items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": record.kind,
        "config": record.config.to_dict(),
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()},
    }
    save_file(tensors, str(out / TENSORS_FILE), metadata={"format": FORMAT, "kind": record.kind})
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def read_legacy(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The JSON and tensors of an adapter in this module's format (checked against each other)."""
    return _read(Path(path))


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config_path, tensor_path = path / CONFIG_FILE, path / TENSORS_FILE
    for p in (config_path, tensor_path):
        if not p.is_file():
            raise ValueError(f"adapter file {p} does not exist")
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"adapter file {config_path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"adapter file {config_path} is not a {FORMAT} file (field 'format')")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"adapter file {config_path}: unsupported format_version {meta.get('format_version')!r}")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"adapter file {tensor_path} is corrupt or not safetensors: {err}") from err
    listed = meta.get("tensors")
    if not isinstance(listed, dict) or set(listed) != set(tensors):
        raise ValueError(f"{config_path} field 'tensors' does not list exactly the tensors in {tensor_path}")
    for key, t in tensors.items():
        if list(t.shape) != listed[key].get("shape"):
            raise ValueError(f"tensor {key!r}: shape {list(t.shape)} in {tensor_path} but {listed[key].get('shape')} in {config_path}")
    return meta, tensors


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Apply the saved adapter to a fresh copy of its base ``model`` and load its tensors exactly.

    A NoRA adapter is applied in place (as ``nora.apply_nora`` does); a NoRA++ adapter returns the
    ``PeftModel`` of ``peft.PeftModel.from_pretrained``.  All or nothing: on failure ``model`` is unchanged.
    """
    path = Path(path)
    config_path = path / CONFIG_FILE
    if config_path.is_file():
        try:
            head = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"adapter file {config_path} is not valid JSON: {err}") from err
        if isinstance(head, dict) and ("peft_type" in head or head.get("kind") == "nora"):
            from nora.adapters.tuner import load_inplace

            return load_inplace(model, path)
    meta, tensors = _read(path)
    kind = meta.get("kind")
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"adapter kind {kind!r} (field 'kind') is not one of {sorted(ADAPTER_KINDS)}")
    config_cls, inject = ADAPTER_KINDS[kind]
    config = config_cls.from_dict(meta.get("config"))
    base = unwrap(model)
    injection = inject(base, config)
    try:
        expected = adapter_state(base)
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"adapter {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, target in expected.items():
            if target.shape != tensors[key].shape:
                raise ValueError(f"tensor {key!r}: shape {tuple(tensors[key].shape)} in {path}, model has {tuple(target.shape)}")
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(tensors[key].to(target.dtype))
    except BaseException:
        injection.undo()
        raise
    return model
