"""torchvision with CPU torch: `import nora` makes timm / peft / torchvision importable, only when needed."""

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_imports_after_nora_even_after_an_availability_probe():
    code = (
        "import importlib.util, nora, nora._torchvision as tv\n"
        "assert importlib.util.find_spec('torchvision') is not None\n"  # a probe must not use up the hook
        "import timm, peft, torchvision\n"
        "from torchvision.datasets import CIFAR10\n"
        "plain_import_failed = tv._LIBRARY is not None\n"
        "print('declared' if plain_import_failed else 'untouched')\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    plain = run("import torchvision")
    # The schemas are declared exactly when the plain import fails on this machine.
    assert result.stdout.strip() == ("declared" if plain.returncode else "untouched")
