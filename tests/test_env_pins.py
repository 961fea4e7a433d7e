"""environment.yml and pyproject.toml must pin the same torch / torchvision (a drift would let pip swap torch builds)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("torch", "torchvision")


def _pins(requirements: list[str]) -> dict[str, str]:
    """Exact '==' pins of the named packages in a list of requirement strings."""
    out = {}
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;]+)\s*(;.*)?", req)
        if m and m.group(1).lower() in PINNED:
            out[m.group(1).lower()] = m.group(2)
    return out


def _conda_pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip section"
    return pip[0]


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return reqs


def test_environment_and_pyproject_pin_the_same_torch_and_torchvision():
    conda, pyproject = _pins(_conda_pip_section()), _pins(_pyproject_requirements())
    assert set(conda) == set(PINNED), f"environment.yml pins {conda}"
    assert set(pyproject) == set(PINNED), f"pyproject.toml pins {pyproject}"
    assert conda == pyproject


def test_conda_env_is_python_311_and_installs_the_package_with_all_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = _conda_pip_section()
    assert "-e .[all]" in pip
    # torch first: installed before anything that could ask for another build of it
    assert pip.index("torch==" + _pins(pip)["torch"]) < pip.index("-e .[all]")


def test_makefile_installs_the_pinned_torch_before_the_package():
    make = (ROOT / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION := (\S+)$", make, re.M)
    assert version and version.group(1) == _pins(_pyproject_requirements())["torch"]
    assert make.index('"torch==$(TORCH_VERSION)"') < make.index('-e ".[all]"')


@pytest.mark.parametrize("req, expected", [
    ("torch==2.13.0", {"torch": "2.13.0"}),
    ("torchvision == 0.28.0 ; platform_system != 'Windows'", {"torchvision": "0.28.0"}),
    ("torch>=2.0", {}),
    ("torchaudio==2.13.0", {}),
])
def test_pin_parser(req, expected):
    assert _pins([req]) == expected
