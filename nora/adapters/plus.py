"""NoRA++: NoRA on the activations together with peft LoRA (or DoRA) on the linear weights.

The one documented way::

    model = nora.adapters.plus.apply_nora_plus(model, NoraConfig(..., trainable=["head"]),
                                               peft.LoraConfig(r=8, target_modules=["qkv", "fc1", "fc2"]))
    ... train: NoRA factors, LoRA factors and the ``trainable`` modules have requires_grad ...
    save_nora_plus(model, "out/")            # out/nora (safetensors + JSON), out/lora (peft's files)
    model = load_nora_plus(fresh_base, "out/")
    model = nora.merge(model)                # LoRA merged by peft, NoRA folded into the rationals

NoRA is injected first (it validates and freezes), then peft wraps the model; peft freezes every
non-LoRA parameter, so the NoRA factors and ``trainable`` modules are re-enabled afterwards.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from nora.adapters.nora import NoraConfig, enable_nora_training, inject_nora

__all__ = ["apply_nora_plus", "load_nora_plus", "save_nora_plus"]


def apply_nora_plus(model: nn.Module, nora_config: NoraConfig, lora_config, *, example_input=None):
    """NoRA on the activations + peft LoRA/DoRA (``lora_config``: a ``peft.LoraConfig``); returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    if not isinstance(lora_config, LoraConfig):
        raise TypeError(f"lora_config must be a peft.LoraConfig, got {type(lora_config).__name__}")
    injection = inject_nora(model, nora_config, example_input=example_input)
    try:
        peft_model = get_peft_model(model, lora_config)
    except BaseException:
        injection.undo()
        raise
    enable_nora_training(peft_model)
    return peft_model


def save_nora_plus(model, path: str | Path) -> Path:
    """Save the LoRA part with peft (``path/lora``) and the NoRA part with nora (``path/nora``)."""
    path = Path(path)
    if not callable(getattr(model, "save_pretrained", None)):
        raise ValueError("model is not a peft model; build it with apply_nora_plus")
    from nora.io import save_adapter  # io imports the adapters' base; adapters import io only when called

    save_adapter(model, path / "nora")
    model.save_pretrained(str(path / "lora"))
    return path


def load_nora_plus(base_model: nn.Module, path: str | Path, *, is_trainable: bool = False):
    """Rebuild a NoRA++ model on a fresh copy of its base: NoRA first, then peft's LoRA."""
    from peft import PeftModel

    from nora.io import load_adapter

    path = Path(path)
    if not (path / "lora").is_dir():
        raise ValueError(f"{path / 'lora'} does not exist (expected peft's adapter files)")
    load_adapter(base_model, path / "nora")
    model = PeftModel.from_pretrained(base_model, str(path / "lora"), is_trainable=is_trainable)
    if is_trainable:
        enable_nora_training(model)
    return model
