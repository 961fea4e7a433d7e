"""torchvision with CPU torch: `import nora` makes timm / peft / torchvision importable, only when needed.

Fresh interpreters of the running environment (`sys.executable`) check the real import; fake
torchvision packages check the finder's three cases.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nora import _torchvision as tv

SOURCE = Path(tv.__file__).resolve()
STRIP_HOOK = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, 'nora_torchvision_hook', False) is not True]\n"


def run(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300)


def test_without_the_hook_imports_after_nora_work_even_after_an_availability_probe():
    """As after a plain `pip install nora`: no start-up hook, `import nora` installs the finder."""
    code = STRIP_HOOK + (
        "import importlib.util, nora, nora._torchvision as tv\n"
        "assert importlib.util.find_spec('torchvision') is not None\n"  # a probe must not use up the hook
        "import timm, torchvision\n"  # timm imports torchvision: through nora's finder
        "from torchvision.datasets import CIFAR10\n"
        "print('declared' if tv.declared() else 'untouched')\n"
    )
    with_nora, plain = (
        subprocess.Popen([sys.executable, "-c", c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in (code, STRIP_HOOK + "import torchvision")
    )
    out, err = with_nora.communicate(timeout=300)
    plain.communicate(timeout=300)
    assert with_nora.returncode == 0, err[-2000:]
    # The schemas are declared exactly when the plain import fails on this machine.
    assert out.strip() == ("declared" if plain.returncode else "untouched")


FAKES = {
    # torch and torchvision match (CUDA builds): the import works, nothing is declared
    "works": "",
    # CPU torch: the first run fails on the missing op; declared, the retry works
    "missing_op": "if not getattr(sys, 'fake_declared', False):\n    raise RuntimeError('operator torchvision::nms does not exist')\n",
    # any other failure is torchvision's own: raised as it is, nothing declared
    "other_error": "raise RuntimeError('something else is broken')\n",
}


@pytest.mark.parametrize("case", FAKES)
def test_the_finder_acts_only_on_the_missing_op_error(tmp_path, case):
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "ops.py").write_text("import sys\nsys.fake_ops_runs = getattr(sys, 'fake_ops_runs', 0) + 1\n")
    (package / "__init__.py").write_text("import sys\nfrom torchvision import ops\n" + FAKES[case])
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.insert(0, {str(tmp_path)!r})
        spec = importlib.util.spec_from_file_location("tv", {str(SOURCE)!r})
        tv = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tv)
        tv._declare_schemas = lambda: setattr(sys, "fake_declared", True)  # the real one needs torch
        tv.install()
        assert importlib.util.find_spec("torchvision") is not None  # a probe leaves the finder in place
        try:
            import torchvision
        finally:
            left = [f for f in sys.meta_path if getattr(f, "nora_torchvision_hook", False)]
            loader = type(getattr(sys.modules.get("torchvision"), "__loader__", None)).__name__
            print(getattr(sys, "fake_declared", False), sys.fake_ops_runs, left, loader)
    """)
    result = run(code, "-S")  # no site-packages: no start-up hook, no real torchvision
    # ... and the imported package has its own loader, as if imported plainly (resources, get_data)
    expected = {"works": "False 1 [] SourceFileLoader", "missing_op": "True 2 [] SourceFileLoader",
                "other_error": "False 1 [] NoneType"}[case]
    assert result.stdout.strip() == expected, result.stderr[-2000:]
    assert (result.returncode == 0) == (case != "other_error")
    if case == "other_error":
        assert "something else is broken" in result.stderr
