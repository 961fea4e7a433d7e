"""prefill: a notebook's code cells run as a script fill the run store; skipped methods get stand-ins, never stored."""

import json

import pytest

from nora.experiments import parallel, prefill, profiles
from nora.experiments.run_store import RUN_CACHE_ENV, RunStore, job_key
from nora.experiments.train import TrainConfig, TrainResult
from nora.experiments.vit_transfer import mean_std, search_trial


def _notebook(path, cells):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# title"}]
                   + [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                      for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def test_the_cells_run_in_one_namespace_and_their_jobs_land_in_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_CACHE_ENV, str(tmp_path / "store"))
    for name, value in (("NORA_PROFILE", "book"), ("TQDM_DISABLE", "1"), ("MPLBACKEND", "Agg")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(parallel, "run_parallel", parallel.run_parallel)  # prefill.run replaces it
    monkeypatch.setattr(profiles, "DEFAULTS", {k: dict(v) for k, v in profiles.DEFAULTS.items()})
    nb = _notebook(tmp_path / "nb.ipynb", [
        "from myst_nb import glue\nfrom nora.experiments.parallel import run_parallel\n"
        "from nora.experiments.vit_transfer import mean_std",
        "r = run_parallel(mean_std, [{'values': [1.0, 3.0]}], workers=1)\nglue('r', r)\ndisplay(r)",
        "raise RuntimeError('a failing cell')",
        "from nora.experiments.profiles import DEFAULTS\nassert DEFAULTS['smoke']['device'] == 'meta'\nassert r[0][0] == 2.0",
    ])
    assert prefill.run(nb, profile="smoke", device="meta") == [2]     # the failing cell, and only it
    assert RunStore(tmp_path / "store").get(job_key(mean_std, {"values": [1.0, 3.0]})) == (True, mean_std([1.0, 3.0]))


def test_skipped_methods_get_stand_ins_and_the_others_run():
    calls = []

    def fake_run_parallel(fn, jobs, **kwargs):
        calls.append([j["method"] for j in jobs])
        return [f"ran {j['method']}" for j in jobs]

    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3)
    run = prefill.skipping(fake_run_parallel, ["qlora"])
    out = run(search_trial, [{"method": m, "config": cfg} for m in ("lora", "qlora", "full")])
    assert calls == [["lora", "full"]]
    assert out[0] == "ran lora" and out[2] == "ran full"
    assert out[1]["val_accuracy"] == 0.0 and not out[1]["diverged"] and out[1]["lr"] == 1e-3
    from nora.experiments.vit_transfer import fine_tune
    stand_in = run(fine_tune, [{"method": "qlora", "config": cfg}])[0]
    assert isinstance(stand_in, TrainResult) and stand_in.extra["stand_in"] and len(stand_in.test_curve) == 2
    assert calls == [["lora", "full"]]                                # nothing left to run: not called


def test_the_command_needs_a_store_and_a_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(RUN_CACHE_ENV, raising=False)
    with pytest.raises(SystemExit):
        prefill.main([str(tmp_path / "nb.ipynb")])
    assert RUN_CACHE_ENV in capsys.readouterr().err
    monkeypatch.setenv(RUN_CACHE_ENV, str(tmp_path))
    with pytest.raises(SystemExit):
        prefill.main([str(tmp_path / "missing.ipynb")])
    assert "does not exist" in capsys.readouterr().err
    assert parallel.run_parallel.__module__ == "nora.experiments.parallel"


def _boom_on_one(x):
    if x == 1:
        raise ValueError("no good")
    return x * 10


def test_a_failing_job_gets_a_stand_in_is_not_stored_and_the_others_are(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(RUN_CACHE_ENV, str(tmp_path))
    run = prefill.skipping(parallel.run_parallel, [])
    out = run(_boom_on_one, [{"x": i} for i in range(3)], workers=1)
    assert out[0] == 0 and out[2] == 20 and out[1].extra["stand_in"]
    assert "failed: ValueError: no good" in capsys.readouterr().out
    store = RunStore(tmp_path)
    assert store.get(job_key(_boom_on_one, {"x": 0})) == (True, 0)
    assert store.get(job_key(_boom_on_one, {"x": 1})) == (False, None)
    assert job_key(prefill.Guarded(_boom_on_one), {"x": 0}) == job_key(_boom_on_one, {"x": 0})
