"""NoraModel, NoRA's peft tuner (a ``BaseTuner``, like peft's ``LoraModel``), and safe saving and loading.

``peft.get_peft_model(model, NoraConfig(...))`` builds a ``NoraModel`` inside the ``PeftModel``;
``nora.apply_nora`` builds one on the bare model and keeps only the injected layers.

Injection plans everything before touching the model (``_prepare_model``): it finds the sites of
``config.target``, measures their widths (checked against ``config.channels`` when the config
records them), fits the base rationals, builds every :class:`~nora.adapters.nora.NoraDelta`
(in module order, so a seed gives the same factors as before NoRA was a peft method) and resolves
``trainable`` to exact ``modules_to_save`` names.  Any ``ValueError`` then names the field and
leaves the model as it was; a failure later in the injection restores a snapshot.

Safe loading (every load is all-or-nothing):

- ``save_pretrained`` writes the tensors, then :meth:`NoraConfig.save_pretrained` records each
  tensor's SHA-256 (``tensor_sha256``) and each site's channel count (``channels``) in
  ``adapter_config.json``;
- ``NoraConfig.from_pretrained`` (which ``PeftModel.from_pretrained`` and ``load_adapter`` call)
  re-hashes the local tensors before any model is touched;
- the injection refuses a model whose site widths differ from ``channels``;
- ``_remap_adapter_state_dict_for_load`` checks the loaded tensors (digests, every adapter key
  present, nothing unknown, shapes) before peft copies them in; on failure the injection made
  for this load is undone, so the base model is exactly as it was and a retry works.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    _filter_state_dict_by_key_prefixes,
    _get_tuner_state_dict_key_prefixes,
)
from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper
from torch import nn

from nora.adapters import peft_shim
from nora.adapters.nora import NoraActivation, NoraConfig, NoraDelta, base_coefficients
from nora.inject import activation_kind, infer_channels

__all__ = [
    "CONFIG_FILE",
    "NoraModel",
    "TENSORS_FILE",
    "convert_adapter",
    "load_inplace",
    "payload_digests",
    "save_inplace",
    "verify_payload",
]

CONFIG_FILE = "adapter_config.json"
TENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."
LEGACY_FORMAT = "nora-adapter"
_DELTA_LEAVES = frozenset({
    "base_numerator", "base_denominator", "num_A", "num_B", "den_A", "den_B", "num_delta", "den_delta",
    "num_coefficients", "den_coefficients", "a0_delta", "log_b0",
})


# ------------------------------------------------------------------------------ tensors and digests


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes (as stored: dtype and layout of the saved tensor)."""
    t = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()


def _payload_file(directory: str | Path) -> Path | None:
    for name in (TENSORS_FILE, PICKLE_FILE):
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None


def read_payload(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The tensors saved in ``directory`` (safetensors, else peft's ``.bin``), or None if there are none."""
    path = _payload_file(directory)
    if path is None:
        return None
    try:
        if path.name == TENSORS_FILE:
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors raises SafetensorError, torch pickle errors vary
        raise ValueError(f"adapter file {path} is corrupt or not readable: {err}") from err


def payload_digests(directory: str | Path) -> dict[str, str] | None:
    """{tensor name: SHA-256} of the tensors saved in ``directory`` (None if there are none)."""
    tensors = read_payload(directory)
    return None if tensors is None else {k: tensor_sha256(v) for k, v in sorted(tensors.items())}


def verify_payload(directory: str | Path, config: NoraConfig) -> None:
    """Raise ``ValueError`` unless the tensors in ``directory`` are exactly those ``config.tensor_sha256`` records."""
    path = _payload_file(directory)
    if path is None:
        return
    if config.tensor_sha256 is None:
        raise ValueError(
            f"{Path(directory) / CONFIG_FILE} records no SHA-256 of its tensors (field 'tensor_sha256'), so "
            f"{path.name} cannot be checked; re-save the adapter with save_pretrained / nora.save_adapter"
        )
    digests = payload_digests(directory)
    recorded = config.tensor_sha256
    missing, extra = sorted(set(recorded) - set(digests)), sorted(set(digests) - set(recorded))
    changed = sorted(k for k in set(recorded) & set(digests) if recorded[k] != digests[k])
    if missing or extra or changed:
        raise ValueError(
            f"{path}: the tensors do not match the SHA-256 recorded in {CONFIG_FILE} (field 'tensor_sha256'): "
            f"changed {changed[:5]}, missing {missing[:5]}, unexpected {extra[:5]}; the payload is corrupted or "
            "was changed after saving"
        )


def refuse_legacy(directory: str | Path) -> None:
    """A directory in nora's pre-peft adapter format raises ``ValueError`` saying how to convert it."""
    directory = Path(directory)
    config_file = directory / CONFIG_FILE
    legacy_plus = not config_file.is_file() and (directory / "nora" / CONFIG_FILE).is_file() and (directory / "lora").is_dir()
    legacy = legacy_plus
    if config_file.is_file():
        try:
            legacy = json.loads(config_file.read_text()).get("format") == LEGACY_FORMAT
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return
    if legacy:
        raise ValueError(
            f"{directory} holds a {'NoRA++' if legacy_plus else 'NoRA'} adapter in nora's pre-peft format "
            f"({LEGACY_FORMAT} v1{', nora/ + lora/' if legacy_plus else ''}); convert it once with "
            f"nora.convert_adapter({str(directory)!r}, new_dir, base_model) and load new_dir with "
            "peft.PeftModel.from_pretrained (or nora.load_adapter)"
        )


# ---------------------------------------------------------------------------------------- snapshots


class _Snapshot:
    """What injecting an adapter can change on modules (children, hooks, attributes, ``requires_grad``), to undo it."""

    def __init__(self, *objects: Any) -> None:
        self._items: list[tuple[Any, dict[str, tuple[Any, Any]]]] = []
        seen: set[int] = set()
        params: dict[int, nn.Parameter] = {}
        for obj in objects:
            for item in obj.modules() if isinstance(obj, nn.Module) else [obj]:
                if id(item) in seen:
                    continue
                seen.add(id(item))
                self._items.append((item, {k: (v, _contents(v)) for k, v in vars(item).items()}))
            if isinstance(obj, nn.Module):
                params.update((id(p), p) for p in obj.parameters())
        self._grads = [(p, p.requires_grad) for p in params.values()]

    def restore(self) -> None:
        for item, saved in self._items:
            current = vars(item)
            for key in [k for k in current if k not in saved]:
                del current[key]
            for key, (value, contents) in saved.items():
                if isinstance(value, dict):
                    value.clear()
                    value.update(contents)
                elif isinstance(value, list):
                    value[:] = contents
                elif isinstance(value, set):
                    value.clear()
                    value.update(contents)
                current[key] = value
        for param, flag in self._grads:
            param.requires_grad_(flag)


def _contents(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, set)):
        return type(value)(value)
    return None


# ------------------------------------------------------------------------------------------- planning


@dataclass
class _Site:
    width: int
    delta: NoraDelta
    device: torch.device


@dataclass
class _Plan:
    sites: dict[str, _Site] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific (NoRA++: the LoRA config)


def _wrapped_prefixes(model: nn.Module) -> list[str]:
    """Names of peft layers and wrappers whose insides are not candidates (their children are adapter internals)."""
    return [n for n, m in model.named_modules() if n and isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the model's own modules; an existing NoRA layer stands for its original activation."""
    wrapped = [p + "." for p in _wrapped_prefixes(model)]
    out = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p) for p in wrapped):
            continue
        out.append((name, module))
    return out


def _matches(name: str, module: nn.Module, target) -> bool:
    if isinstance(module, BaseTunerLayer) and not isinstance(module, NoraActivation):
        return False  # another method's layer (LoRA)
    base = module.get_base_layer() if isinstance(module, NoraActivation) else module
    if isinstance(target, type):
        return isinstance(base, target)
    key = target.lower()
    if key == "gelu":
        return activation_kind(base) in ("gelu", "gelu_tanh")
    if key in ("silu", "rational"):
        return activation_kind(base) == key
    return re.fullmatch(target, name) is not None


def _device_near(model: nn.Module, name: str) -> torch.device:
    parent_name = name.rpartition(".")[0]
    for scope in (model.get_submodule(parent_name) if parent_name else model, model):
        p = next(iter(scope.parameters()), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def plan_nora(model: nn.Module, config: NoraConfig, example_input=None) -> _Plan:
    """Sites, widths, base rationals and new deltas for ``config`` on ``model``; raises before changing anything."""
    config.validate()
    candidates = _candidates(model)
    targets = [(n, m) for n, m in candidates if _matches(n, m, config.target)]
    if not targets:
        raise ValueError(f"target={config.target!r} matches no module of {type(model).__name__}")
    names = [n for n, _ in targets]
    recorded = config.channels
    if recorded is not None and set(recorded) != set(names):
        raise ValueError(
            f"channels: the adapter was saved for the sites {sorted(recorded)[:4]}... ({len(recorded)}), but "
            f"target={config.target!r} matches {sorted(names)[:4]}... ({len(names)}) in this model"
        )
    widths: dict[str, int] = {}
    if example_input is not None:
        widths = infer_channels(model, names, example_input)
    for name, module in targets:
        if name in widths:
            continue
        if isinstance(module, NoraActivation):
            widths[name] = module.channels
            continue
        try:
            widths[name] = infer_channels(model, [name])[name]
        except ValueError:
            if recorded is None:
                raise
            widths[name] = recorded[name]  # unmeasurable here; the layer's forward refuses any other width
    if recorded is not None:
        for name in names:
            if widths[name] != recorded[name]:
                raise ValueError(
                    f"channels: {name!r} has {widths[name]} channels in this model but the adapter was saved for "
                    f"{recorded[name]} (field 'channels' of {CONFIG_FILE}); load it onto the model it was trained on"
                )
    for name in names:
        if widths[name] % config.groups:
            raise ValueError(f"groups={config.groups} does not divide the {widths[name]} channels of {name!r}")
    trainable = _resolve_trainable(model, config, candidates, names)
    plan = _Plan()
    fitted: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, module in targets:
        base = module.get_base_layer() if isinstance(module, NoraActivation) else module
        kind = activation_kind(base) or "custom"
        if kind == "rational":
            coefficients = base_coefficients(base, config, name)
        else:
            key = config.init or kind
            if key not in fitted:
                fitted[key] = base_coefficients(base, config, name)
            coefficients = fitted[key]
        device = _device_near(model, name)
        plan.sites[name] = _Site(widths[name], NoraDelta(*coefficients, config).to(device), device)
    config.modules_to_save = trainable or None
    return plan


def _resolve_trainable(model: nn.Module, config: NoraConfig, candidates, sites: list[str]) -> list[str]:
    """``trainable`` (exact names or full regexes) as exact module names that peft's suffix match finds alone."""
    if not config.trainable:
        return []
    all_names = [n for n, _ in candidates]
    found: list[str] = []
    for entry in config.trainable:
        if entry in all_names:
            hits = [entry]
        else:
            try:
                hits = [n for n in all_names if re.fullmatch(entry, n)]
            except re.error:
                hits = []
        if not hits:
            raise ValueError(f"trainable entry {entry!r} matches no module of {type(model).__name__}")
        found.extend(h for h in hits if h not in found)
    for name in found:
        inside = [s for s in sites if s == name or s.startswith(name + ".")]
        if inside:
            raise ValueError(f"trainable module {name!r} contains the NoRA site {inside[0]!r}; train one or the other")
    # peft wraps every module whose name *ends with* an entry; refuse names that would catch others
    caught = [n for n in all_names if n not in found and any(n.endswith(t) for t in found)]
    if caught:
        raise ValueError(
            f"trainable {found} would also make {caught[:3]} trainable (peft matches modules_to_save by name "
            "suffix); give full dotted names that no other module ends with"
        )
    return found


# -------------------------------------------------------------------------------------------- tuner

_EXAMPLE_INPUT: contextvars.ContextVar = contextvars.ContextVar("nora_example_input", default=None)


@contextlib.contextmanager
def example_input_for_injection(example_input):
    """Within the block, NoRA injections (also through ``peft.get_peft_model``) measure widths with this input."""
    token = _EXAMPLE_INPUT.set(example_input)
    try:
        yield
    finally:
        _EXAMPLE_INPUT.reset(token)



class NoraModel(BaseTuner):
    """peft's tuner for NoRA: plans (``_prepare_model``), matches and injects :class:`NoraActivation` layers."""

    prefix: str = "nora_"
    tuner_layer_cls = NoraActivation
    target_module_mapping: dict[str, list[str]] = {}

    def __init__(self, model, peft_config, adapter_name="default", low_cpu_mem_usage=False, state_dict=None, *,
                 example_input=None) -> None:
        self._example_input = example_input if example_input is not None else _EXAMPLE_INPUT.get()
        self._plan: _Plan | None = None
        self._undo: dict[str, _Snapshot] = {}
        super().__init__(model, peft_config, adapter_name, low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)

    # --- injection
    def inject_adapter(self, model, adapter_name, autocast_adapter_dtype=True, low_cpu_mem_usage=False, state_dict=None):
        snapshot = _Snapshot(model, self)
        try:
            super().inject_adapter(model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                                   low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)
            config = self.peft_config[adapter_name]
            if config.channels is None:
                config.channels = {name: site.width for name, site in self._plan.sites.items()}
        except BaseException:
            snapshot.restore()
            raise
        finally:
            self._plan = None
        if self.peft_config[adapter_name].tensor_sha256 is not None:
            self._undo[adapter_name] = snapshot  # this injection is part of a load: undone if the tensors are refused

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config

    def _prepare_model(self, peft_config, model):
        self._plan = plan_nora(model, peft_config, self._example_input)

    def _check_target_module_exists(self, peft_config, key):
        return self._plan is not None and key in self._plan.sites

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        site = self._plan.sites[current_key]
        if isinstance(target, NoraActivation):
            target.update_layer(adapter_name, site.delta)
            return
        layer = NoraActivation(site.width, base_layer=target, adapter_name=adapter_name, delta=site.delta)
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)  # an added adapter is not trainable until set active
        setattr(parent, target_name, layer)

    def _replace_module(self, parent, child_name, new_module, child):
        setattr(parent, child_name, new_module)

    def set_adapter(self, adapter_name, inference_mode: bool = False) -> None:
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        if len(names) > 1:
            raise ValueError(f"NoRA evaluates one adapter at a time; got {names}")
        super().set_adapter(adapter_name, inference_mode=inference_mode)

    def _rollback(self, adapter_name: str) -> None:
        snapshot = self._undo.pop(adapter_name, None)
        if snapshot is not None:
            snapshot.restore()

    # --- loading
    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        return checked_remap(model, config, adapter_name, state_dict, super()._remap_adapter_state_dict_for_load)


def checked_remap(model, config, adapter_name, state_dict, remap):
    """peft's key remapping for a load, after checking the tensors; on failure the load's injection is undone."""
    tuner = getattr(model, "base_model", None)
    tuner = tuner if isinstance(tuner, NoraModel) else None
    try:
        if config.tensor_sha256 is not None:
            _check_digests(state_dict, config.tensor_sha256)
        out = remap(model, config, adapter_name, state_dict)
        _check_against_model(model, adapter_name, out)
    except BaseException:
        if tuner is not None:
            tuner._rollback(adapter_name)
        raise
    if tuner is not None:
        tuner._undo.pop(adapter_name, None)
    return out


def _check_digests(state_dict: dict[str, torch.Tensor], recorded: dict[str, str]) -> None:
    have = {k: tensor_sha256(v) for k, v in state_dict.items()}
    unmatched = Counter(have.values())
    unmatched.subtract(Counter(recorded.values()))
    if any(unmatched.values()):
        bad = sorted(k for k, d in have.items() if unmatched[d] > 0)
        raise ValueError(
            f"the adapter's tensors do not match the SHA-256 recorded in {CONFIG_FILE} (field 'tensor_sha256'): "
            f"{bad[:5] or 'tensors are missing'}; the payload is corrupted or was changed after saving"
        )


def _adapter_keys(model: nn.Module, adapter_name: str) -> set[str]:
    state = model.state_dict()
    keys = set(_filter_state_dict_by_key_prefixes(state, _get_tuner_state_dict_key_prefixes(model, adapter_name)))
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            keys |= {f"{name}.modules_to_save.{adapter_name}.{k}" for k in module.modules_to_save[adapter_name].state_dict()}
    return keys


def _check_against_model(model: nn.Module, adapter_name: str, state_dict: dict[str, torch.Tensor]) -> None:
    model_state = model.state_dict()
    prefixed = any(k.startswith(PEFT_PREFIX) for k in model_state)
    loaded = {k if prefixed else k.removeprefix(PEFT_PREFIX): v for k, v in state_dict.items()}
    expected = _adapter_keys(model, adapter_name)
    missing = sorted(expected - set(loaded))
    unexpected = sorted(set(loaded) - set(model_state))
    wrong = [(k, tuple(v.shape), tuple(model_state[k].shape)) for k, v in loaded.items()
             if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)]
    if missing or unexpected:
        raise ValueError(f"the adapter does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if wrong:
        key, saved, have = wrong[0]
        raise ValueError(f"tensor {key!r}: shape {saved} in the adapter, the model has {have} ({len(wrong)} mismatched)")


# ------------------------------------------------------------------ saving and loading without PeftModel


def save_inplace(model: nn.Module, path: str | Path, adapter_name: str = "default") -> Path:
    """``save_pretrained`` for a model adapted in place (``nora.apply_nora``): the same two files peft writes."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = model.peft_config[adapter_name]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    tensors = {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(out / TENSORS_FILE), metadata={"format": "pt"})
    inference_mode, config.inference_mode = config.inference_mode, True  # as PeftModel.save_pretrained records it
    try:
        config.save_pretrained(str(out))
    finally:
        config.inference_mode = inference_mode
    return out


def load_inplace(model: nn.Module, path: str | Path, *, is_trainable: bool = True):
    """Apply the NoRA adapter saved in ``path`` to ``model`` in place and load its tensors exactly; all or nothing.

    A NoRA++ adapter needs the ``PeftModel``: it is returned by ``peft.PeftModel.from_pretrained``.
    """
    from peft import PeftModel
    from peft.utils import set_peft_model_state_dict

    path = Path(path)
    refuse_legacy(path)
    if not (path / CONFIG_FILE).is_file():
        raise ValueError(f"adapter file {path / CONFIG_FILE} does not exist")
    try:
        peft_type = json.loads((path / CONFIG_FILE).read_text()).get("peft_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"adapter file {path / CONFIG_FILE} is not valid JSON: {err}") from err
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if config_cls is None or not issubclass(config_cls, NoraConfig):
        raise ValueError(f"{path / CONFIG_FILE}: peft_type {peft_type!r} is not a nora method; use peft.PeftModel.from_pretrained")
    config = config_cls.from_pretrained(str(path))  # checks the tensors against the recorded SHA-256
    if type(config) is not NoraConfig:
        return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    if any(isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper)) for m in model.modules()):
        raise ValueError("model already carries peft layers; load onto a fresh copy of the base model")
    if _payload_file(path) is None:
        raise ValueError(f"adapter file {path / TENSORS_FILE} does not exist")
    tensors = {k.removeprefix(PEFT_PREFIX): v for k, v in read_payload(path).items()}
    config.inference_mode = not is_trainable
    snapshot = _Snapshot(model)
    try:
        NoraModel(model, config, "default")
        set_peft_model_state_dict(model, tensors, adapter_name="default")
    except BaseException:
        snapshot.restore()
        raise
    return model


# ------------------------------------------------------------------------------- the pre-peft format


def convert_adapter(src: str | Path, dst: str | Path, base_model: nn.Module) -> Path:
    """Rewrite a NoRA or NoRA++ adapter saved in nora's pre-peft format as a peft adapter directory.

    ``base_model`` is the model it was trained on (not changed: a copy is adapted, loaded, checked
    and saved); its widths go into ``channels``.  The result loads with ``peft.PeftModel.from_pretrained``
    (NoRA, NoRA++) or ``nora.load_adapter`` (NoRA).
    """
    from peft import LoraConfig, get_peft_model
    from peft.utils import set_peft_model_state_dict

    from nora.adapters.nora import apply_nora
    from nora.adapters.plus import NoraPlusConfig
    from nora.io import read_legacy

    src = Path(src)
    plus = not (src / CONFIG_FILE).is_file() and (src / "nora").is_dir() and (src / "lora").is_dir()
    meta, tensors = read_legacy(src / "nora" if plus else src)
    if meta.get("kind") != "nora":
        raise ValueError(f"{src}: kind {meta.get('kind')!r}; only NoRA and NoRA++ adapters changed format (the others load as before)")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(meta.get("config") or {}).items()}
    renamed = {}
    for key, value in tensors.items():
        site, _, leaf = key.rpartition(".")
        renamed[PEFT_PREFIX + (f"{site}.nora_delta.{leaf}" if leaf in _DELTA_LEAVES else key)] = value
    if plus:
        lora = LoraConfig.from_pretrained(str(src / "lora"))
        lora_tensors = read_payload(src / "lora") or {}
        config = NoraPlusConfig(**fields, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                target_modules=sorted(lora.target_modules) if isinstance(lora.target_modules, set)
                                else lora.target_modules, use_dora=lora.use_dora, task_type=lora.task_type)
        model = get_peft_model(copy.deepcopy(base_model), config)
        set_peft_model_state_dict(model, {**renamed, **lora_tensors})
        model.save_pretrained(str(dst))
    else:
        model = apply_nora(copy.deepcopy(base_model), NoraConfig(**fields))
        set_peft_model_state_dict(model, {k.removeprefix(PEFT_PREFIX): v for k, v in renamed.items()})
        save_inplace(model, dst)
    return Path(dst)


peft_shim.register("nora", NoraConfig, NoraModel, prefix=NoraModel.prefix)

import nora.adapters.plus  # noqa: E402,F401  (registers NORA_PLUS; it imports this module, so it comes last)
