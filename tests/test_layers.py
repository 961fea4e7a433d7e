"""The two layers of ``nora``: the library never reaches into the lab (``nora.experiments``) or a book-only package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nora"
LAB = PACKAGE / "experiments"
# Top-level import names of packages only the book needs (plots, tables, notebook runs, the site, lab data).
BOOK_ONLY = ("matplotlib", "pandas", "sklearn", "papermill", "jupyter_book", "myst_nb", "nbformat", "pytorch_grad_cam",
             "mlxtend")
BOOK_ONLY_DISTRIBUTIONS = ("matplotlib", "pandas", "scikit-learn", "papermill", "jupyter-book", "myst-nb", "grad-cam",
                           "mlxtend")


def library_files() -> list[Path]:
    files = sorted(p for p in PACKAGE.rglob("*.py") if LAB not in p.parents)
    assert len(files) > 10 and PACKAGE / "rational.py" in files
    return files


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a relative import in this file is relative to."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``source``, at any depth (lazy ones too)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def test_no_library_module_imports_the_lab_or_a_book_only_package():
    offences = []
    for path in library_files():
        for line, name in imported_modules(path.read_text(), package_of(path)):
            top = name.split(".")[0]
            if name == "nora.experiments" or name.startswith("nora.experiments.") or top in BOOK_ONLY:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offences, "the library must not import the lab or book-only packages:\n" + "\n".join(offences)


def test_the_scan_sees_relative_lazy_and_from_package_imports():
    source = ("def f():\n    from ..experiments import profiles\n    import matplotlib.pyplot\n"
              "from nora import experiments\n")
    names = [name for _, name in imported_modules(source, "nora.adapters")]
    assert "nora.experiments.profiles" in names and "matplotlib.pyplot" in names and "nora.experiments" in names


def _fresh_modules(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_nora_loads_no_lab_module_and_no_book_only_package():
    loaded = _fresh_modules("import nora")
    assert "nora" in loaded and "nora.rational" in loaded and "nora.adapters.loran" in loaded
    # NoRA / NoRA++ (peft methods) load with peft, on first use or when peft is imported (seconds)
    assert "peft" not in loaded and "nora.adapters.nora" not in loaded
    assert not [m for m in loaded if m == "nora.experiments" or m.startswith("nora.experiments.")]
    assert not [m for m in loaded if m.split(".")[0] in BOOK_ONLY]


@pytest.mark.slow
def test_every_library_module_imports_without_the_lab():
    names = [module_name(p) for p in library_files()]
    loaded = _fresh_modules("import importlib\nfor n in %r:\n    importlib.import_module(n)" % names)
    assert set(names) <= set(loaded)
    assert not [m for m in loaded if m == "nora.experiments" or m.startswith("nora.experiments.")]
    assert not [m for m in loaded if m.split(".")[0] in BOOK_ONLY]


def test_core_dependencies_hold_no_book_only_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
            for req in project["dependencies"]}
    assert {"torch", "numpy", "safetensors", "peft"} <= core
    assert not core & set(BOOK_ONLY_DISTRIBUTIONS)
    assert "all" in project["optional-dependencies"]


def test_a_chapter_module_is_named_after_its_notebook():
    from nora.experiments import CHAPTERS
    from nora.experiments.profiles import PROFILE_NAMES, chapter_profiles

    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks and set(CHAPTERS) == notebooks
    for notebook, module in CHAPTERS.items():
        assert module == notebook.split("_", 1)[1] and (LAB / f"{module}.py").is_file(), notebook
        assert set(chapter_profiles(notebook)) == set(PROFILE_NAMES), notebook


# Packages outside the core install (extras only), by import name: the library's methods must run without them.
NOT_CORE = ("torchvision", "timm", "pytorch_grad_cam", "datasets", "lm_eval", "rouge_score", "mlxtend", "sklearn", "PIL",
            "jupyter_book", "myst_nb", "papermill", "nbformat", "matplotlib", "pandas", "bitsandbytes", "triton")
CORE_ONLY_RUN = """
import sys, tempfile
for name in %r:
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
import peft, torch
from torch import nn
import nora
from nora.adapters.activations import ActivationSwapConfig, apply_activation_swap
from nora.adapters.peft_baselines import LoraBaselineConfig, apply_lora_baseline

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2, self.head = nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.Linear(32, 4)
    def forward(self, x):
        return self.head(self.fc2(self.act(self.fc1(x))))

def net():
    torch.manual_seed(0)
    return Net()

x = torch.randn(3, 16)
cfg = nora.NoraConfig(groups=8, rank=2, target="gelu", trainable=["head"])
tuned = nora.apply_nora(net(), cfg)
with torch.no_grad():
    for name, param in tuned.act.named_parameters():
        param.add_(0.01 * torch.randn_like(param))  # a tuned (non-zero) delta
with tempfile.TemporaryDirectory() as folder:
    nora.save_adapter(tuned, folder)
    restored = nora.load_adapter(net(), folder)
    with torch.no_grad():
        assert torch.equal(nora.merge(restored)(x), tuned(x))
plus = nora.apply_nora_plus(net(), cfg, peft.LoraConfig(r=2, target_modules=["fc1", "fc2"]))
loran = nora.apply_loran(net(), nora.LoRANConfig(rank=2, targets=("fc1", "fc2"), trainable=("head",)))
lora = apply_lora_baseline(net(), LoraBaselineConfig(rank=2, targets=("fc1", "fc2")))
dora = apply_lora_baseline(net(), LoraBaselineConfig(rank=2, targets=("fc1", "fc2"), use_dora=True))
prelu = apply_activation_swap(net(), ActivationSwapConfig(kind="prelu"))
for model in (tuned, plus, loran, lora, dora, prelu):
    assert model(x).shape == (3, 4) and 0 < nora.count_parameters(model).trainable < nora.count_parameters(model).total
"""


@pytest.mark.slow
def test_the_methods_run_with_the_core_install_alone():
    loaded = _fresh_modules(CORE_ONLY_RUN % (NOT_CORE,))
    assert "peft" in loaded and "nora.adapters.loran" in loaded
    assert not [m for m in loaded if m == "nora.experiments" or m.startswith("nora.experiments.")]
