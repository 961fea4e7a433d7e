"""`python -m nora.book run` loses nothing and redoes only what changed: all-or-nothing runs, signals,
up-to-date chapters, stamps, --jobs, papermill parameters and the chapters' parameters cells."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from nora.experiments import CHAPTERS, book, execute, profiles, results, runcache

ROOT = Path(__file__).resolve().parents[2]
PARAMS = "profile = None\nseeds = None"


def _notebook(path: Path, cells: list[tuple[list[str], str]], markdown: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if markdown:
        nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    for tags, src in cells:
        cell = nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _project(tmp_path: Path) -> Path:
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    return tmp_path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _gone(pid: int, within: float = 5.0) -> bool:
    """True once ``pid`` has exited; a SIGKILLed process group can take a moment to die on a loaded machine."""
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ------------------------------------------------------------------------------ all or nothing


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_notebook_changes_nothing_and_leaves_no_kernel(tmp_path: Path, signum: int):
    root = _project(tmp_path)
    pids = tmp_path / "pids.json"
    src = _notebook(root / "notebooks" / "01_slow.ipynb", [
        (["parameters"], PARAMS),
        ([], "print('first cell done')"),
        ([], "import json, os, subprocess, time\n"
             "child = subprocess.Popen(['sleep', '300'])  # the kernel's own child goes too\n"
             f"open({str(pids)!r}, 'w').write(json.dumps([os.getpid(), child.pid]))\n"
             "time.sleep(300)"),
        ([], "print('never reached')"),
    ], markdown="# A slow chapter")
    committed = root / "results" / "book" / "01_slow.json"
    committed.parent.mkdir(parents=True)
    committed.write_text('{\n "values": {"from_the_committed_run": 1}\n}\n')
    before = (src.read_bytes(), committed.read_bytes())

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "nora.book", "--root", str(root), "run", "--profile", "book"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not pids.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert pids.is_file(), proc.communicate()[0]
    time.sleep(0.3)
    kernel, child = json.loads(pids.read_text())
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C: the terminal signals the whole foreground process group
    else:
        proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)

    assert proc.returncode == 128 + signum, out
    assert (src.read_bytes(), committed.read_bytes()) == before  # byte for byte
    assert _gone(kernel) and _gone(child), out
    name = signal.Signals(signum).name
    assert f"cell 3: 'import json, os, subprocess, time' (interrupted by {name})" in out  # cell 0 is markdown
    table = out[out.index("notebook  "):]
    assert re.search(r"01_slow\s+book\s+interrupted\s+\d+\.\d s", table) and f"stopped by {name}" in out
    assert "without encryption" not in out and "Traceback" not in out  # no kernel noise
    partial = nbformat.read(root / "runs" / "book" / "failed" / "01_slow.ipynb", as_version=4)
    code = [c for c in partial.cells if c.cell_type == "code"]
    assert any("first cell done" in o.get("text", "") for c in code for o in c.outputs)
    assert not any(execute.RUNNER_TAG in c.metadata.get("tags", []) for c in partial.cells)
    assert not (root / "runs" / "book" / ".work").exists()


def test_a_dead_kernel_changes_nothing_either(tmp_path: Path, capsys):
    root = _project(tmp_path)
    src = _notebook(root / "notebooks" / "01_dies.ipynb", [
        (["parameters"], PARAMS), ([], "print('alive')"), ([], "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    ])
    before = src.read_bytes()
    assert book.main(["--root", str(root), "run", "--profile", "book"]) == 1
    out = capsys.readouterr().out
    assert "cell 2: 'import os, signal' (DeadKernelError: Kernel died)" in out
    assert src.read_bytes() == before and not (root / "results").exists()
    assert (root / "runs" / "book" / "failed" / "01_dies.ipynb").is_file()


# ---------------------------------------------------------------------------------- up to date


def test_a_second_run_skips_what_is_up_to_date(tmp_path: Path, capsys, monkeypatch):
    root = _project(tmp_path)
    src = _notebook(root / "notebooks" / "01_pass.ipynb", [
        (["parameters"], PARAMS),
        ([], "from nora.experiments.results import record\nrecord('01_pass', profile, {'answer': 0.125})"),
    ], markdown="# Question")
    run = ["--root", str(root), "run", "--profile", "smoke"]
    assert book.main(run) == 0
    stored, executed = root / "results" / "smoke" / "01_pass.json", root / "runs" / "smoke" / "01_pass.ipynb"
    first = (stored.read_bytes(), executed.read_bytes())
    record = json.loads(stored.read_text())["_run"]
    files = record["inputs"]["files"]
    assert {"nora/__init__.py", "nora/experiments/results.py", "nora/experiments/profiles.py"} <= set(files)
    assert not any(f.startswith("nora/experiments/llm/") for f in files)  # a change there leaves this chapter alone
    assert record["wall_seconds"] > 0 and record["cpu_seconds"] > 0
    capsys.readouterr()

    assert book.main(run) == 0
    out = capsys.readouterr().out
    assert "01_pass: up to date (last run " in out and re.search(r"01_pass\s+smoke\s+up to date\s+—", out)
    assert (stored.read_bytes(), executed.read_bytes()) == first

    nb = nbformat.read(src, as_version=4)  # prose changes do not make it stale
    nb.cells[0].source = "# Question, reworded"
    nbformat.write(nb, src)
    assert book.main(run) == 0 and "up to date" in capsys.readouterr().out

    # what does make it stale (checked without running): its code, the parameters, a file it imported
    assert runcache.stale_reason(record, nb, "smoke", {}) is None
    changed = nbformat.read(src, as_version=4)
    changed.cells[-1].source += "\nprint('more')"
    assert runcache.stale_reason(record, changed, "smoke", {}) == "its code changed"
    assert runcache.stale_reason(record, nb, "smoke", {"seeds": [1]}) == "other parameters"
    real = runcache._hash
    monkeypatch.setattr(runcache, "_hash", lambda p: "edited" if p.name == "results.py" else real(p))
    assert runcache.stale_reason(record, nb, "smoke", {}) == "nora/experiments/results.py changed"
    # ... but not the claims registry or the ledger: the build re-renders the tables they make
    presentation = {"nora/experiments/claims.py": "old", "nora/experiments/ledger.py": "old"}
    older = {**record, "inputs": {**record["inputs"], "files": {**files, **presentation}}}  # as runs recorded them
    older["digest"] = execute.digest(older["inputs"])
    monkeypatch.setattr(runcache, "_hash", real)
    assert runcache.stale_reason(older, nb, "smoke", {}) is None
    assert not execute.BUILD_TIME & set(files)  # a run no longer records them

    assert book.main(run + ["--force"]) == 0
    assert "01_pass (profile smoke) started: --force" in capsys.readouterr().out


def test_stamp_records_todays_inputs_for_results_made_before(tmp_path: Path, capsys):
    root = _project(tmp_path)
    src = _notebook(root / "notebooks" / "01_pass.ipynb", [
        (["parameters"], PARAMS), ([], "from nora.experiments.results import record\nrecord('01_pass', profile, {'a': 1})"),
    ])
    nb = nbformat.read(src, as_version=4)
    executed = nbformat.read(src, as_version=4)
    for i, cell in enumerate(executed.cells, 1):
        cell.execution_count = i
    out = root / "runs" / "smoke" / "01_pass.ipynb"
    out.parent.mkdir(parents=True)
    nbformat.write(executed, out)
    results.record("01_pass", "smoke", {"a": 1}, out_dir=root / "results")  # as an older run left them

    stored = root / "results" / "smoke" / "01_pass.json"
    assert runcache.stale_reason(runcache.read_record(stored), nb, "smoke", {}) == "no record of a finished run"
    assert book.main(["--root", str(root), "stamp", "--profile", "smoke"]) == 0
    assert "stamped 1 notebook(s): 01_pass" in capsys.readouterr().out
    data = json.loads(stored.read_text())
    assert data["values"] == {"a": 1} and data["_run"]["how"] == "stamp"
    files = data["_run"]["inputs"]["files"]
    assert "nora/experiments/results.py" in files and "nora/experiments/profiles.py" in files  # a static closure
    assert any(f.startswith("nora/experiments/checkpoints/") for f in files)  # every shipped checkpoint
    assert not any(f.startswith("nora/experiments/llm/") for f in files)
    assert runcache.stale_reason(data["_run"], nb, "smoke", {}) is None
    assert book.main(["--root", str(root), "run", "--profile", "smoke"]) == 0
    assert "01_pass: up to date (stamped " in capsys.readouterr().out
    assert "last_run" not in data["_run"]  # nothing ran before the first stamp
    # restamping a real run's record keeps what the run cost
    run_facts = {"how": "run", "finished": "2026-12-04T09:12:13+00:00", "wall_seconds": 4906.2, "cpu_seconds": 9565.1,
                 "threads": 2, "jobs": 1, "versions": {"torch": "x"}}
    stored.write_text(json.dumps({**data, "_run": {**data["_run"], **run_facts}}))
    assert book.main(["--root", str(root), "stamp", "--profile", "smoke"]) == 0
    restamped = json.loads(stored.read_text())["_run"]
    assert restamped["how"] == "stamp" and restamped["last_run"]["wall_seconds"] == 4906.2
    assert restamped["last_run"]["finished"] == run_facts["finished"]
    assert book.main(["--root", str(root), "stamp", "--profile", "smoke"]) == 0  # and a stamp of a stamp too
    assert json.loads(stored.read_text())["_run"]["last_run"]["cpu_seconds"] == 9565.1
    capsys.readouterr()

    _notebook(root / "notebooks" / "02_never_run.ipynb", [(["parameters"], PARAMS)])
    assert book.main(["--root", str(root), "stamp", "--profile", "smoke", "--only", "02"]) == 2
    assert "no " in capsys.readouterr().err


def test_used_files_take_siblings_and_whole_checkpoints(tmp_path: Path):
    pkg = tmp_path / "nora"
    for rel in ("__init__.py", "inits.json", "kernels/__init__.py", "kernels/k.cpp", "llm/__init__.py", "llm/x.json",
                "experiments/checkpoints/vit-book.json", "experiments/checkpoints/vit-book.safetensors",
                "experiments/checkpoints/other.safetensors", "experiments/checkpoints/llm-1/config.json",
                "experiments/checkpoints/llm-1/model.safetensors"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(rel)
    used = execute.used_files(pkg, [str(pkg / "__init__.py"), str(pkg / "kernels" / "__init__.py"),
                                    str(pkg / "experiments/checkpoints/vit-book.json"), "/usr/lib/python3/os.py"])
    assert used == ["nora/__init__.py", "nora/experiments/checkpoints/vit-book.json",
                    "nora/experiments/checkpoints/vit-book.safetensors", "nora/inits.json", "nora/kernels/__init__.py",
                    "nora/kernels/k.cpp"]


def test_the_trace_counts_python_files_it_imported_not_ones_it_only_read(tmp_path: Path):
    """The run store hashes every module of the package: reading a .py file must not make it a run's input."""
    import json
    import sys

    package = tmp_path / "tracedpkg"
    package.mkdir()
    for name in ("imported_mod.py", "only_read.py", "table.json"):
        (package / name).write_text("x = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import tracedpkg.imported_mod  # noqa: F401  (a module the run really uses)

        trace = tmp_path / "trace.json"
        code = execute.TRACE_END.replace("TRACE_PATH", repr(str(trace))).replace("PACKAGE_DIR", repr(str(package)))
        exec(code, {"_nora_opened": {str(package / "only_read.py"), str(package / "table.json")}})
        paths = json.loads(trace.read_text())["paths"]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tracedpkg.imported_mod", None)
        sys.modules.pop("tracedpkg", None)
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["imported_mod.py", "table.json"]


# ------------------------------------------------------------------------------------ --jobs


def test_jobs_run_side_by_side_with_their_share_of_the_cores(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("NORA_THREADS", raising=False)
    root = _project(tmp_path)
    spans = tmp_path / "spans"
    spans.mkdir()
    for name in ("01_alone", "02_a", "03_b"):
        _notebook(root / "notebooks" / f"{name}.ipynb", [(["parameters"], PARAMS), ([], (
            "import os, time, json\nt0 = time.time(); time.sleep(2)\n"
            f"open({str(spans / name)!r}, 'w').write(json.dumps([t0, time.time(), os.environ['NORA_THREADS']]))"))])
    monkeypatch.setattr(book, "runs_alone", lambda name: name == "01_alone")  # as 08_efficiency says of itself
    assert book.main(["--root", str(root), "run", "--profile", "smoke", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    span = {p.name: json.loads(p.read_text()) for p in spans.iterdir()}
    overlap = lambda a, b: min(span[a][1], span[b][1]) - max(span[a][0], span[b][0])  # noqa: E731
    assert overlap("02_a", "03_b") > 0  # side by side
    assert overlap("01_alone", "02_a") < 0 and overlap("01_alone", "03_b") < 0  # alone
    assert {s[2] for s in span.values()} == {str(max(1, book.available_cores() // 2))}
    assert "2 at a time" in out and re.search(r"02_a\s+smoke\s+ok\s+\d+\.\d s\s+\d+\.\d s", out)
    assert "01_alone (profile smoke) started: no executed notebook yet (runs alone)" in out


def test_only_the_timing_chapter_runs_alone():
    assert [name for name in CHAPTERS if book.runs_alone(name)] == ["08_efficiency"]
    assert not book.runs_alone("99_not_a_chapter")


# -------------------------------------------------------------------------------- parameters


def test_a_parameter_override_reaches_the_notebook_and_its_results(tmp_path: Path, capsys):
    root = _project(tmp_path)
    src = _notebook(root / "notebooks" / "03_method.ipynb", [
        (["parameters", "hide-cell"], PARAMS + "\ngrid = None  # points of the error curves; None: the profile's"),
        ([], "from nora.experiments.profiles import settings\nfrom nora.experiments.results import record\n"
             "cfg = settings('03_method', profile, seeds=seeds, grid=grid)\nprint('grid', cfg['grid'])\n"
             "record('03_method', profile, {'grid_used': cfg['grid']})"),
    ])
    before = src.read_bytes()
    assert book.main(["--root", str(root), "run", "--profile", "book", "-p", "grid", "101", "-p", "seeds", "[5, 6]"]) == 0
    assert src.read_bytes() == before and not (root / "results").exists()  # never the committed notebook or results
    nb = nbformat.read(root / "runs" / "book" / "03_method.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"] == {"profile": "book", "grid": 101, "seeds": [5, 6]}
    assert any("grid 101" in o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    stored = json.loads((root / "runs" / "book" / "results" / "book" / "03_method.json").read_text())
    assert stored["values"] == {"grid_used": 101}
    assert stored["_parameters"] == {"profile": "book", "seeds": [5, 6], "grid": 101}
    assert stored["_run"]["inputs"]["parameters"] == {"grid": 101, "seeds": [5, 6]}
    capsys.readouterr()

    assert book.main(["--root", str(root), "run", "--profile", "book", "-p", "epochs", "3"]) == 2
    assert "'epochs' is in no selected notebook's parameters cell" in capsys.readouterr().err
    assert book.main(["--root", str(root), "run", "-p", "profile", "smoke"]) == 2


def test_parse_value_takes_literals_then_yaml():
    assert book.parse_value("50") == 50 and book.parse_value("1e-3") == 1e-3 and book.parse_value("None") is None
    assert book.parse_value("[0, 1]") == [0, 1] and book.parse_value("{nora: [0.01, 0.03]}") == {"nora": [0.01, 0.03]}
    assert book.parse_value("mnist20") == "mnist20"


def test_settings_apply_parameters_and_name_the_bad_ones(tmp_path: Path):
    base = profiles.settings("04_vit_transfer", "book")
    cfg = profiles.settings("04_vit_transfer", "book", seeds=[7], epochs={"hard": 2}, lr_grid={"nora": [0.01, 1]},
                            batch_size=None)
    assert cfg["seeds"] == (7,) and cfg["batch_size"] == base["batch_size"]
    assert cfg["epochs"] == {"easy": base["epochs"]["easy"], "hard": 2}  # a dict setting merges key by key
    assert cfg["lr_grid"]["nora"] == (0.01, 1.0) and cfg["lr_grid"]["full"] == base["lr_grid"]["full"]
    assert profiles.settings("04_vit_transfer", "book") == base  # the profile itself is untouched
    assert profiles.parameters_used("04_vit_transfer") == {
        "profile": "book", "seeds": (7,), "epochs": cfg["epochs"], "lr_grid": cfg["lr_grid"], "batch_size": base["batch_size"]}
    for bad, match in (({"epoch": 3}, "'epoch' is not a setting of 04_vit_transfer"), ({"epochs": 2}, "epochs must be a dict"),
                       ({"epochs": {"hard": 2.5}}, r"epochs\['hard'\] must be an int"),
                       ({"lr_grid": {"nroa": [1.0]}}, r"lr_grid\['nroa'\] is not a setting"),
                       ({"seeds": [-1]}, "seeds"), ({"search_task": 3}, "search_task must be a string")):
        with pytest.raises(ValueError, match=match):
            profiles.settings("04_vit_transfer", "book", **bad)
    results.record("04_vit_transfer", "book", {"x": 1}, out_dir=tmp_path)
    stored = json.loads((tmp_path / "book" / "04_vit_transfer.json").read_text())
    assert stored["_parameters"]["epochs"]["hard"] == 2 and stored["_parameters"]["seeds"] == [7]
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


def test_the_worker_imports_nothing_from_nora():
    tree = ast.parse(Path(execute.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m == "nora" or m.startswith("nora.") for m in imported)
