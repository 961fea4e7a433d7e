"""NoRA++: NoRA on the activations and LoRA (or DoRA) on the linear weights, as ONE peft method.

``NoraPlusConfig`` is :class:`~nora.adapters.nora.NoraConfig` plus LoRA's ``r``, ``lora_alpha``,
``lora_dropout``, ``target_modules`` and ``use_dora`` (same names and meaning as in
``peft.LoraConfig``); its ``peft_type`` is ``NORA_PLUS``.  One config, one tuner, one adapter
directory, so saving, loading, disabling, merging and counting always cover both parts::

    cfg = nora.NoraPlusConfig(groups=8, rank=3, alpha=6, trainable=["head"],
                              r=8, lora_alpha=16, target_modules=["attn.qkv", "mlp.fc1", "mlp.fc2"])
    model = peft.get_peft_model(model, cfg)       # NoRA layers + LoRA layers, one PeftModel
    model.save_pretrained("out/")                 # adapter_config.json (NORA_PLUS) + one safetensors
    model = peft.PeftModel.from_pretrained(fresh_base, "out/")
    merged = model.merge_and_unload()             # LoRA merged, NoRA folded into GroupRationals

``NoraPlusModel`` is peft's ``LoraModel`` (whose LoRA layers, merging and DoRA handling it
reuses) with NoRA's planning and sites from ``NoraModel``; NoRA's deltas are created before the
LoRA factors, in the order NoRA-then-peft used before, so a seed gives the same initial model.
``apply_nora_plus`` / ``save_nora_plus`` / ``load_nora_plus`` are thin wrappers kept for callers
that hold a ``(NoraConfig, peft.LoraConfig)`` pair.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig
from peft.tuners.lora import LoraLayer, LoraModel
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
from torch import nn

from nora.adapters import peft_shim
from nora.adapters.nora import NoraActivation, NoraConfig
from nora.adapters.tuner import NoraModel, example_input_for_injection, plan_nora, refuse_legacy

__all__ = ["NoraPlusConfig", "NoraPlusModel", "apply_nora_plus", "load_nora_plus", "save_nora_plus"]

# LoraConfig fields NoraPlusConfig carries (the rest must stay at LoraConfig's defaults in apply_nora_plus)
LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora")
_PEFT_BOOKKEEPING = ("peft_type", "peft_version", "auto_mapping", "base_model_name_or_path", "revision",
                     "inference_mode", "task_type", "runtime_config")


@dataclass
class NoraPlusConfig(NoraConfig):
    """NoRA++: every :class:`NoraConfig` field (NoRA on the activations) plus LoRA on the linears.

    Args:
        r: LoRA rank (``peft.LoraConfig.r``).
        lora_alpha: LoRA scale numerator, the update is ``lora_alpha / r · B A`` (``LoraConfig.lora_alpha``).
        lora_dropout: dropout on the LoRA input (``LoraConfig.lora_dropout``).
        target_modules: the linears LoRA adapts, peft's matching: names, name suffixes, a regex string
            or "all-linear"; None takes peft's default for transformers models (``LoraConfig.target_modules``).
        use_dora: DoRA instead of LoRA (``LoraConfig.use_dora``).
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    use_dora: bool = False

    _PEFT_TYPE = "NORA_PLUS"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"r must be an int >= 1, got {self.r!r}")
        if not isinstance(self.lora_alpha, (int, float)) or isinstance(self.lora_alpha, bool) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)
        if self.target_modules is not None and not (
            isinstance(self.target_modules, str)
            or (isinstance(self.target_modules, list) and all(isinstance(t, str) and t for t in self.target_modules))
        ):
            raise ValueError(f"target_modules must be None, a string or a list of module names, got {self.target_modules!r}")
        if not isinstance(self.use_dora, bool):
            raise ValueError(f"use_dora must be a bool, got {self.use_dora!r}")

    def lora_config(self) -> LoraConfig:
        """The ``peft.LoraConfig`` of the LoRA part (what peft's LoRA layers are built from)."""
        target = self.target_modules
        return LoraConfig(r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(target) if isinstance(target, (set, list)) else target,
                          use_dora=self.use_dora, modules_to_save=self.modules_to_save,
                          inference_mode=self.inference_mode, task_type=self.task_type)

    @classmethod
    def from_parts(cls, nora_config: NoraConfig, lora_config: LoraConfig) -> NoraPlusConfig:
        """The NoRA++ config of a ``(NoraConfig, peft.LoraConfig)`` pair; LoRA options it does not carry must be at their defaults."""
        if not isinstance(nora_config, NoraConfig) or isinstance(nora_config, NoraPlusConfig):
            raise TypeError(f"nora_config must be a NoraConfig, got {type(nora_config).__name__}")
        if not isinstance(lora_config, LoraConfig):
            raise TypeError(f"lora_config must be a peft.LoraConfig, got {type(lora_config).__name__}")
        default = LoraConfig()
        other = [f.name for f in dataclasses.fields(LoraConfig)
                 if f.name not in LORA_FIELDS + _PEFT_BOOKKEEPING + ("modules_to_save",)
                 and getattr(lora_config, f.name) != getattr(default, f.name)]
        if other:
            raise ValueError(f"lora_config sets {other}, which NoRA++ does not carry (it takes {list(LORA_FIELDS)})")
        if lora_config.modules_to_save:
            raise ValueError("lora_config.modules_to_save: give the trained modules as NoraConfig(trainable=[...])")
        keep = {f.name for f in dataclasses.fields(NoraConfig)} - set(_PEFT_BOOKKEEPING) - {"channels", "tensor_sha256", "modules_to_save"}
        nora_part = {name: getattr(nora_config, name) for name in keep}
        lora_part = {name: getattr(lora_config, name) for name in LORA_FIELDS}
        return cls(**nora_part, **lora_part, task_type=lora_config.task_type or nora_config.task_type)


class NoraPlusModel(NoraModel, LoraModel):
    """peft's tuner for NoRA++: NoRA sites (``NoraModel``) and LoRA linears (``LoraModel``) of one adapter."""

    prefix: str = "nora_plus_"
    tuner_layer_cls = (NoraActivation, LoraLayer)
    target_module_mapping = LoraModel.target_module_mapping

    def _prepare_adapter_config(self, peft_config, model_config):
        if peft_config.target_modules is None:
            found = self.target_module_mapping.get(model_config["model_type"])
            if found is None:
                raise ValueError("target_modules is needed: peft has no default LoRA targets for "
                                 f"model_type {model_config['model_type']!r}")
            peft_config.target_modules = found if isinstance(found, str) else sorted(found)
        return peft_config

    def _prepare_model(self, peft_config, model):
        plan = plan_nora(model, peft_config, self._example_input)
        lora = _maybe_include_all_linear_layers(peft_config.lora_config(), model)
        matched = [n for n, m in _lora_candidates(model) if n not in plan.sites and check_target_module_exists(lora, n)]
        if not matched:
            raise ValueError(f"target_modules={peft_config.target_modules!r} matches no linear module of "
                             f"{type(model).__name__} (NoRA++ needs LoRA targets as well as NoRA sites)")
        plan.extra["lora"] = lora
        self._plan = plan

    def _check_target_module_exists(self, peft_config, key):
        if self._plan is None:
            return False
        if key in self._plan.sites:
            return True
        return check_target_module_exists(self._plan.extra["lora"], key)

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if current_key in self._plan.sites:
            return NoraModel._create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key)
        return LoraModel._create_and_replace(self, self._plan.extra["lora"], adapter_name, target, target_name, parent,
                                             current_key, **kwargs)

    def _replace_module(self, parent, child_name, new_module, child):
        if isinstance(new_module, NoraActivation):
            return NoraModel._replace_module(self, parent, child_name, new_module, child)
        return LoraModel._replace_module(self, parent, child_name, new_module, child)


def _lora_candidates(model: nn.Module):
    from nora.adapters.tuner import _candidates

    return _candidates(model)


# ------------------------------------------------------------------------------------ thin wrappers


def apply_nora_plus(model: nn.Module, nora_config: NoraConfig, lora_config: LoraConfig | None = None, *,
                    example_input=None):
    """``peft.get_peft_model(model, config)`` for NoRA++; ``config`` is a :class:`NoraPlusConfig` or a
    ``(NoraConfig, peft.LoraConfig)`` pair (converted by :meth:`NoraPlusConfig.from_parts`).  Returns the PeftModel."""
    from peft import get_peft_model

    if isinstance(nora_config, NoraPlusConfig):
        if lora_config is not None:
            raise TypeError("give a NoraPlusConfig alone, or a (NoraConfig, peft.LoraConfig) pair")
        config = nora_config
    else:
        config = NoraPlusConfig.from_parts(nora_config, lora_config)
    with example_input_for_injection(example_input):
        return get_peft_model(model, config)


def save_nora_plus(model, path: str | Path) -> Path:
    """``model.save_pretrained(path)``: one adapter directory with both parts."""
    if not isinstance(getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", None)), NoraPlusConfig):
        raise ValueError("model is not a NoRA++ PeftModel; build it with peft.get_peft_model(model, NoraPlusConfig(...))")
    model.save_pretrained(str(path))
    return Path(path)


def load_nora_plus(base_model: nn.Module, path: str | Path, *, is_trainable: bool = False):
    """``peft.PeftModel.from_pretrained(base_model, path)``; a directory in the pre-peft format says how to convert it."""
    from peft import PeftModel

    refuse_legacy(path)
    return PeftModel.from_pretrained(base_model, str(path), is_trainable=is_trainable)


peft_shim.register("nora_plus", NoraPlusConfig, NoraPlusModel, prefix=NoraPlusModel.prefix)
