"""The chapters' papermill parameters: settings(..., **parameters) and each notebook's parameters cell."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from nora.experiments import CHAPTERS, profiles, results

ROOT = Path(__file__).resolve().parents[2]


def test_settings_apply_parameters_and_name_the_bad_ones(tmp_path: Path):
    base = profiles.settings("04_vit_transfer", "book")
    cfg = profiles.settings("04_vit_transfer", "book", seeds=[7], epochs=2, lr_grid={"nora": [0.01, 1]}, batch_size=None)
    assert cfg["seeds"] == (7,) and cfg["epochs"] == 2 and cfg["batch_size"] == base["batch_size"]
    assert cfg["lr_grid"]["nora"] == (0.01, 1.0) and cfg["lr_grid"]["full"] == base["lr_grid"]["full"]
    assert profiles.settings("04_vit_transfer", "book") == base  # the profile itself is untouched
    assert profiles.parameters_used("04_vit_transfer") == {
        "profile": "book", "seeds": (7,), "epochs": 2, "lr_grid": cfg["lr_grid"], "batch_size": base["batch_size"]}
    for bad, match in (({"epoch": 3}, "'epoch' is not a setting of 04_vit_transfer"), ({"epochs": 2.5}, "epochs must be an int"),
                       ({"lr_grid": {"nroa": [1.0]}}, r"lr_grid\['nroa'\] is not a setting"),
                       ({"seeds": [-1]}, "seeds"), ({"search_task": 3}, "search_task must be a string")):
        with pytest.raises(ValueError, match=match):
            profiles.settings("04_vit_transfer", "book", **bad)
    results.record("04_vit_transfer", "book", {"x": 1}, out_dir=tmp_path)
    stored = json.loads((tmp_path / "book" / "04_vit_transfer.json").read_text())
    assert stored["_parameters"]["epochs"] == 2 and stored["_parameters"]["seeds"] == [7]
    assert results.load_all("book", out_dir=tmp_path)["04_vit_transfer"] == {"values": {"x": 1}, "paper": {}}


def _settings_call(nb, name: str) -> ast.Call:
    for cell in nb.cells:
        if cell.cell_type == "code" and f'settings("{name}"' in cell.source:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%")))
            return next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "settings")
    raise AssertionError(f"{name}: no settings({name!r}, ...) call")


@pytest.mark.parametrize("name", sorted(CHAPTERS))
def test_each_chapter_exposes_its_main_settings_as_parameters(name: str):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    declared = pm.inspect_notebook(str(path))  # what `papermill --help-notebook` shows
    assert list(declared)[:2] == ["profile", "seeds"] and len(declared) >= 5, name
    for param in declared.values():
        assert param["default"] == "None" and param["help"].strip(), (name, param)
    names = [k for k in declared if k != "profile"]
    for profile in profiles.PROFILE_NAMES:
        assert set(names) <= set(profiles.settings(name, profile)), (name, profile)
        assert profiles.settings(name, profile, **dict.fromkeys(names)) == profiles.settings(name, profile)
    call = _settings_call(nbformat.read(path, as_version=4), name)
    assert {k.arg: k.value.id for k in call.keywords} == {k: k for k in names}  # each parameter reaches settings
