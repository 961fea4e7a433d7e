"""nora: activation-space fine-tuning — group-wise rational activations, NoRA, NoRA++, LoRAN.

    import nora, peft, timm
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=100)
    cfg = nora.NoraConfig(groups=8, rank=3, alpha=6, degrees=(5, 4), target="gelu", trainable=["head"])
    model = peft.get_peft_model(model, cfg)      # or nora.apply_nora(model, cfg): the same layers in place

Importing nora registers NoRA (``NORA``) and NoRA++ (``NORA_PLUS``) as peft methods.

Two layers, one way (lab -> library):

    nora/               the library: rational.py (GroupRational), fit.py (fits, shipped inits),
                        kernels/ (C++, eager, Triton), adapters/ (NoRA, NoRA++, LoRAN, baselines),
                        inject.py, merge.py, io.py (save / load), counting.py, config.py
    nora/experiments/   the book's lab: data, training loop, backbones, one module per chapter,
                        theory, LLM corpus / pre-training / MMLU, profiles, results, book runner

The library imports nothing from ``nora.experiments`` and needs no book-only package.
"""

from nora import _torchvision

_torchvision.install()  # before anything imports timm / peft (see nora/_torchvision.py)

from nora.adapters import peft_shim  # noqa: E402

peft_shim.install()  # NORA / NORA_PLUS become peft methods when peft is imported (now, if it already is)

from nora.adapters import activations, bottleneck, prompts  # noqa: E402,F401  (register their kinds)
from nora.adapters.loran import LoRANConfig, Sinter, apply_loran, sinter  # noqa: E402
from nora.counting import ParameterCount, count_parameters  # noqa: E402
from nora.fit import RationalFit, fit_rational, shipped_inits  # noqa: E402
from nora.io import load_adapter, save_adapter  # noqa: E402
from nora.merge import merge  # noqa: E402
from nora.rational import GroupRational, rational  # noqa: E402

__version__ = "0.1.0"

# The peft methods' names, imported on first use (importing them imports peft, which takes seconds).
_LAZY = {
    "NoraActivation": "nora.adapters.nora", "NoraConfig": "nora.adapters.nora", "apply_nora": "nora.adapters.nora",
    "NoraModel": "nora.adapters.tuner", "convert_adapter": "nora.adapters.tuner",
    "NoraPlusConfig": "nora.adapters.plus", "NoraPlusModel": "nora.adapters.plus", "apply_nora_plus": "nora.adapters.plus",
    "load_nora_plus": "nora.adapters.plus", "save_nora_plus": "nora.adapters.plus",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nora' has no attribute {name!r}")

__all__ = [
    "GroupRational",
    "LoRANConfig",
    "NoraActivation",
    "NoraConfig",
    "NoraModel",
    "NoraPlusConfig",
    "NoraPlusModel",
    "ParameterCount",
    "RationalFit",
    "Sinter",
    "apply_loran",
    "apply_nora",
    "apply_nora_plus",
    "convert_adapter",
    "count_parameters",
    "fit_rational",
    "load_adapter",
    "load_nora_plus",
    "merge",
    "rational",
    "save_adapter",
    "save_nora_plus",
    "shipped_inits",
    "sinter",
]
