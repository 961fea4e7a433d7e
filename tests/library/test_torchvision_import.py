"""torchvision with CPU torch: timm / peft / torchvision / transformers import in any order.

Two ways in (nora/_torchvision.py): the start-up hook that `make setup` writes into the virtual
environment, and `import nora` where no hook is installed. Fresh interpreters of the running
environment (`sys.executable`) check both; fake torchvision packages check the finder's three cases.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nora import _torchvision as tv
from nora import torchvision_hook as hook

SOURCE = Path(tv.__file__).resolve()
STRIP_HOOK = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, 'nora_torchvision_hook', False) is not True]\n"
HOOK_ACTIVE = "import sys; print('torch' in sys.modules, [type(f).__module__ for f in sys.meta_path if getattr(f, 'nora_torchvision_hook', False)])"
FIRST_IMPORTS = ("import peft", "import timm", "import torchvision", "from transformers import LlamaForCausalLM")


def run(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300)


def require_hook() -> None:
    """Fails, saying how to install it, unless a fresh interpreter starts with the hook's finder."""
    result = run(HOOK_ACTIVE)
    assert result.returncode == 0, result.stderr[-2000:]
    if not result.stdout.strip().endswith(" ['_nora_torchvision_hook']"):
        pytest.fail(
            f"the torchvision start-up hook is not active in {sys.prefix} ({hook.startup_hook_status()}): "
            f"install it with `{sys.executable} -m nora.torchvision_hook install` (`make setup` does)",
            pytrace=False,
        )


def test_the_startup_hook_is_active_and_imports_no_torch_at_startup():
    require_hook()
    result = run(HOOK_ACTIVE)
    assert result.stdout.strip() == "False ['_nora_torchvision_hook']", "torch was imported at start-up"


@pytest.mark.slow
def test_each_first_import_works_alone_then_with_nora():
    """What a new user types first, each in a fresh interpreter, then `import nora` after it."""
    require_hook()
    procs = {
        stmt: subprocess.Popen(
            [sys.executable, "-c", f"{stmt}\nimport nora\n"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for stmt in FIRST_IMPORTS
    }
    failed = {}
    for stmt, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode:
            failed[stmt] = err[-1500:]
    assert not failed, failed


def test_import_nora_adds_no_second_finder_to_the_hooks():
    require_hook()
    result = run("import nora\n" + HOOK_ACTIVE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True ['_nora_torchvision_hook']"  # nora imports torch, not torchvision


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


def test_install_status_uninstall_round_trip(tmp_path):
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    pth = site_dir / hook.PTH_NAME
    assert hook.startup_hook_status(site_dir) == f"not installed: {pth}"
    assert hook.install_startup_hook(site_dir) == pth
    assert hook.startup_hook_status(site_dir) == f"installed: {pth} loads {SOURCE}"
    lines = pth.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("#") and lines[1].startswith("import ")  # site.py runs it
    # A fresh interpreter that reads that directory gets the finder and still has not imported torch.
    active = run(f"import site; site.addsitedir({str(site_dir)!r})\n" + HOOK_ACTIVE, "-S")
    assert (active.returncode, active.stdout.strip(), active.stderr) == (0, "False ['_nora_torchvision_hook']", "")
    result = subprocess.run(
        [sys.executable, "-m", "nora.torchvision_hook", "uninstall", "--dir", str(site_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, f"removed {pth}", "")  # no runpy warning
    assert not pth.exists() and hook.uninstall_startup_hook(site_dir) is None


def test_a_hook_whose_file_is_gone_or_broken_never_stops_start_up(tmp_path):
    gone, broken = tmp_path / "moved" / "_torchvision.py", tmp_path / "broken.py"
    broken.write_text("raise ValueError('half-edited')\n")
    for source, stderr in ((gone, ""), (broken, "nora torchvision hook (nora_torchvision_hook.pth) failed: ValueError('half-edited')\n")):
        (tmp_path / hook.PTH_NAME).write_text(hook.pth_text(source))
        result = run(f"import site; site.addsitedir({str(tmp_path)!r})\n" + HOOK_ACTIVE, "-S")
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "False []", stderr)
    (tmp_path / hook.PTH_NAME).write_text(hook.pth_text(gone))
    assert hook.startup_hook_status(tmp_path).startswith("stale: ")


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


def test_the_set_up_and_the_conda_environment_install_the_hook():
    root = Path(__file__).resolve().parents[2]
    make = (root / "Makefile").read_text()
    assert f"/site-packages/{hook.PTH_NAME}\n" in make and "-m nora.torchvision_hook install" in make
    assert "$(TORCHVISION_HOOK)" in next(line for line in make.splitlines() if line.startswith("setup:"))
    assert "python -m nora.torchvision_hook install" in (root / "environment.yml").read_text()
