"""The book pipeline: `python -m nora.book run` on throwaway notebooks, profiles, results, TOC and site config."""

from __future__ import annotations

import json
import os
import posixpath
import re
import signal
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from nora.experiments import book, profiles, results

ROOT = Path(__file__).resolve().parents[2]

PARAMS = "profile = None\nseeds = None"
REPORT = (
    "import os, sys, json\n"
    "print(json.dumps({'profile': profile, 'env': os.environ.get('NORA_PROFILE'),"
    " 'prefix': sys.prefix, 'executable': sys.executable, 'cwd': os.getcwd(),"
    " 'tqdm': os.environ.get('TQDM_DISABLE'), 'threads': os.environ.get('NORA_THREADS')}))"
)


def _notebook(path: Path, cells: list[tuple[list[str], str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for tags, src in cells:
        cell = nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny book: a passing notebook, a failing one in the middle, and another passing one."""
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    nbs = tmp_path / "notebooks"
    _notebook(nbs / "01_pass.ipynb", [
        (["parameters"], PARAMS),
        ([], REPORT),
        ([], "from nora.experiments.results import record\nrecord('01_pass', profile, {'answer': 0.125, 'count': 3})"),
    ])
    _notebook(nbs / "02_fail.ipynb", [
        (["parameters"], PARAMS),
        ([], "x = 41 + 1\nprint('before the failure', x)"),
        ([], "# the failing cell\nraise RuntimeError('deliberate failure')"),
        ([], "print('never reached')"),
    ])
    _notebook(nbs / "03_after.ipynb", [(["parameters"], PARAMS), ([], REPORT)])
    (nbs / "README.md").write_text("not a notebook")
    return tmp_path


def _stdout_json(cell) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ run


def test_failure_does_not_stop_the_others_and_is_named(project: Path, capsys):
    sources = {p.name: p.read_bytes() for p in (project / "notebooks").glob("*.ipynb")}
    code = book.main(["--root", str(project), "run", "--profile", "smoke"])
    out = capsys.readouterr().out

    assert code == 1
    assert "cell 2: '# the failing cell'" in out and "RuntimeError: deliberate failure" in out
    table = out[out.index("notebook  "):]
    assert re.search(r"01_pass\s+smoke\s+ok\s+\d+\.\d s\s+\d+\.\d s", table)  # wall and CPU time
    assert re.search(r"02_fail\s+smoke\s+FAILED\s+\d+\.\d s", table)
    assert re.search(r"03_after\s+smoke\s+ok\s+\d+\.\d s", table)  # ran after the failure

    runs = project / "runs" / "smoke"
    assert not (runs / "02_fail.ipynb").exists()  # a failed run replaces nothing
    partial = nbformat.read(runs / "failed" / "02_fail.ipynb", as_version=4)
    code_cells = [c for c in partial.cells if c.cell_type == "code"]
    assert not any(book.execute.RUNNER_TAG in c.metadata.get("tags", []) for c in code_cells)
    assert any("before the failure 42" in o.get("text", "") for c in code_cells for o in c.outputs)
    failing = next(c for c in code_cells if c.source.startswith("# the failing cell"))
    assert [o.output_type for o in failing.outputs] == ["error"]
    assert next(c for c in code_cells if "never reached" in c.source).execution_count is None
    assert not (runs / ".work").exists()  # scratch folders are gone

    # non-book profiles never touch the sources
    assert {p.name: p.read_bytes() for p in (project / "notebooks").glob("*.ipynb")} == sources


def test_kernel_runs_this_interpreter_with_the_profile(project: Path, monkeypatch):
    monkeypatch.delenv("NORA_THREADS", raising=False)
    before = os.environ.get("NORA_PROFILE")
    book.main(["--root", str(project), "run", "--profile", "smoke", "--only", "03"])
    nb = nbformat.read(project / "runs" / "smoke" / "03_after.ipynb", as_version=4)
    assert [c.source for c in nb.cells if c.cell_type == "code"][-1] == REPORT  # the runner's cells are gone
    seen = _stdout_json(nb.cells[-1])
    assert seen["profile"] == "smoke" and seen["env"] == "smoke"
    assert seen["prefix"] == sys.prefix and seen["executable"] == sys.executable
    assert Path(seen["cwd"]) == (project / "notebooks").resolve()
    assert seen["tqdm"] == "1"  # stored outputs carry no progress bars
    assert seen["threads"] == str(max(1, book.available_cores()))  # one job: every core
    assert os.environ.get("NORA_PROFILE") == before  # the runner leaves the caller's environment alone


def test_book_profile_writes_in_place_and_cleans_up(project: Path, capsys):
    src = project / "notebooks" / "01_pass.ipynb"
    stale = project / "results" / "book" / "01_pass.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"values": {"from_an_older_run": 1}, "paper": {}}))
    code = book.main(["--root", str(project), "run", "--profile", "book", "--only", "01_*"])
    assert code == 0, capsys.readouterr().out
    nb = nbformat.read(src, as_version=4)

    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert not any("injected-parameters" in t or book.execute.RUNNER_TAG in t for t in tags)
    params = nb.cells[0]
    assert params.source == PARAMS  # the original, not papermill's values
    assert "parameters" in params.metadata["tags"] and "hide-cell" in params.metadata["tags"]
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert not any("papermill" in c.metadata or "execution" in c.metadata for c in nb.cells)
    assert nb.metadata["papermill"]["parameters"] == {"profile": "book"}
    assert nb.metadata["papermill"]["input_path"] == "01_pass.ipynb"  # no machine paths committed
    assert nb.metadata["papermill"]["output_path"] == "01_pass.ipynb"
    assert _stdout_json(nb.cells[1])["profile"] == "book"

    # results recorded at the project root, and glued for the book's prose
    stored = json.loads((project / "results" / "book" / "01_pass.json").read_text())
    assert stored["values"] == {"answer": 0.125, "count": 3}  # the older run's record was replaced
    assert stored["_run"]["how"] == "run" and stored["_run"]["inputs"]["profile"] == "book"
    assert "nora/experiments/results.py" in stored["_run"]["inputs"]["files"]  # what the kernel imported
    glued = {o.metadata["scrapbook"]["name"] for o in nb.cells[2].outputs if "scrapbook" in o.get("metadata", {})}
    assert glued == {"answer", "count"}
    assert not (project / "runs").exists()


def test_book_profile_failure_leaves_notebook_and_results_byte_for_byte(project: Path, capsys):
    src = project / "notebooks" / "02_fail.ipynb"
    committed = project / "results" / "book" / "02_fail.json"
    committed.parent.mkdir(parents=True)
    committed.write_text('{"values": {"kept": 1}}\n')
    before = (src.read_bytes(), committed.read_bytes())
    code = book.main(["--root", str(project), "run", "--profile", "book", "--only", "02"])
    out = capsys.readouterr().out
    assert code == 1
    assert "cell 2: '# the failing cell'" in out and "as they were" in out
    assert (src.read_bytes(), committed.read_bytes()) == before
    partial = nbformat.read(project / "runs" / "book" / "failed" / "02_fail.ipynb", as_version=4)
    assert any(o.output_type == "error" for c in partial.cells if c.cell_type == "code" for o in c.outputs)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in partial.cells)


def test_out_folder_and_unknown_pattern(project: Path, tmp_path: Path, capsys):
    out = tmp_path / "elsewhere"
    assert book.main(["--root", str(project), "run", "--profile", "paper", "--only", "03", "--out", str(out)]) == 0
    assert (out / "03_after.ipynb").is_file() and not (project / "runs").exists()
    assert book.main(["--root", str(project), "run", "--profile", "smoke", "--only", "99_nothing"]) == 2
    assert "matches no notebook" in capsys.readouterr().err


def test_progress_bar_outputs_are_stripped_and_other_stderr_kept():
    bar = "\rruns:  10%|█         | 3/30 [01:23<12:28, 27.74s/it]"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("work()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=bar + "\rruns: 100%|██████████| 30/30 [13:48<00:00,  2.1it/s]"),
        nbformat.v4.new_output("stream", name="stdout", text="30 runs done\n"),
        nbformat.v4.new_output("stream", name="stderr", text="\n"),  # tqdm's closing newline
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something real\n"),
        nbformat.v4.new_output("stream", name="stderr", text=bar + "\nUserWarning: mixed in\n"),
    ]
    nb.cells.append(cell)
    assert book.strip_progress_outputs(nb) == 2
    assert [o.get("text") for o in cell.outputs] == ["30 runs done\n", "UserWarning: something real\n", bar + "\nUserWarning: mixed in\n"]
    assert book.PROGRESS_RE.search(bar) and not book.PROGRESS_RE.search("3 seeds, 12 blocks, 50% of the images")


def test_find_notebooks_orders_and_filters(project: Path):
    names = [p.stem for p in book.find_notebooks(project)]
    assert names == ["01_pass", "02_fail", "03_after"]
    assert [p.stem for p in book.find_notebooks(project, "fail")] == ["02_fail"]
    assert [p.stem for p in book.find_notebooks(project, "0[13]_*")] == ["01_pass", "03_after"]
    assert [p.stem for p in book.find_notebooks(project, "0[1-2]")] == ["01_pass", "02_fail"]  # from the start
    assert book.find_notebooks(project, "[1-2]") == []


def test_summary_table_lists_failures():
    runs = [
        book.NotebookRun("01_a", "smoke", "ok", 1.25, Path("a"), cpu_seconds=2.5),
        book.NotebookRun("02_b", "smoke", "FAILED", 0.5, Path("b"), "cell 3: 'x = 1/0' (ZeroDivisionError: division by zero)"),
        book.NotebookRun("03_c", "smoke", "up to date", None, Path("c")),
    ]
    text = book.summary_table(runs)
    assert re.search(r"01_a\s+smoke\s+ok\s+1\.2 s\s+2\.5 s", text) and re.search(r"03_c\s+smoke\s+up to date\s+—\s+—", text)
    assert "2/3 ok (1 up to date)" in text and "1.8 s" in text
    assert text.rstrip().endswith("02_b: cell 3: 'x = 1/0' (ZeroDivisionError: division by zero)")
    elapsed = book.summary_table(book.BookRun(runs, 1200.0, None))
    assert re.search(r"total \(elapsed\)\s+2/3 ok \(1 up to date\)\s+20\.0 min\s+2\.5 s", elapsed)
    assert book.BookRun(runs, 1.0).exit_code == 1 and book.BookRun(runs[::2], 1.0).exit_code == 0
    assert book.BookRun(runs, 1.0, signal.SIGINT).exit_code == 130


# ------------------------------------------------------------------------------------- profiles


def test_resolve_profile(monkeypatch):
    monkeypatch.delenv("NORA_PROFILE", raising=False)
    assert profiles.resolve_profile(None) == "book"
    monkeypatch.setenv("NORA_PROFILE", "smoke")
    assert profiles.resolve_profile(None) == "smoke"
    assert profiles.resolve_profile("paper") == "paper"
    with pytest.raises(ValueError, match=r"profile.*'fast'"):
        profiles.resolve_profile("fast")
    monkeypatch.setenv("NORA_PROFILE", "huge")
    with pytest.raises(ValueError, match=r"NORA_PROFILE.*'huge'"):
        profiles.resolve_profile(None)


def test_seeds_and_settings():
    assert profiles.resolve_seeds("smoke") == (0,)
    assert profiles.resolve_seeds("book") == (0, 1, 2) == profiles.resolve_seeds("paper")
    assert profiles.resolve_seeds("book", [7, 8]) == (7, 8)
    with pytest.raises(ValueError, match="seeds"):
        profiles.resolve_seeds("book", [-1])
    smoke, paper = profiles.settings("03_method", "smoke"), profiles.settings("03_method.ipynb", "paper")
    assert smoke["profile"] == "smoke" and smoke["seeds"] == (0,) and smoke["download"] is False
    assert paper["download"] is True and paper["device"] == "cuda"
    assert smoke["grid"] < profiles.settings("03_method", "book")["grid"]
    assert profiles.settings("99_unknown", "book") == {"profile": "book", "seeds": (0, 1, 2), **profiles.DEFAULTS["book"]}
    with pytest.raises(ValueError, match="notebook"):
        profiles.settings("", "book")


def test_every_profile_entry_covers_the_three_profiles():
    for name, entry in profiles.all_profiles().items():
        assert set(entry) == set(profiles.PROFILE_NAMES), name


# -------------------------------------------------------------------------------------- results


def test_record_merges_sorts_and_keeps_floats(tmp_path: Path):
    import numpy as np
    import torch

    assert results.record("05_x", "smoke", {"b": np.float32(0.5), "a": 1 / 3}, out_dir=tmp_path, paper={"a": "0.33"}) is None
    path = tmp_path / "smoke" / "05_x.json"
    results.record("05_x", "smoke", {"c": torch.tensor(2), "a": 0.25}, out_dir=tmp_path)
    text = path.read_text()
    data = json.loads(text)
    assert data["values"] == {"a": 0.25, "b": 0.5, "c": 2}
    assert data["paper"] == {"a": "0.33"}
    assert list(data) == sorted(data) and list(data["values"]) == ["a", "b", "c"]
    assert results.load_all("smoke", out_dir=tmp_path) == {"05_x": {"values": data["values"], "paper": data["paper"]}}
    assert results.load_all("book", out_dir=tmp_path) == {}


def test_record_rejects_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="values\\['f'\\]"):
        results.record("05_x", "smoke", {"f": object()}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="profile"):
        results.record("05_x", "tiny", {"a": 1}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="notebook"):
        results.record("a/b", "smoke", {"a": 1}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="values"):
        results.record("05_x", "smoke", [1, 2], out_dir=tmp_path)


def test_mathjax_vendoring_is_a_no_op_once_done_and_names_npm_when_missing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(book.shutil, "which", lambda name: None)  # no npm on this "machine"
    with pytest.raises(RuntimeError, match="npm"):
        book.ensure_mathjax(tmp_path)
    target = tmp_path / book.MATHJAX_SITE_DIR
    target.mkdir(parents=True)
    (target / "tex-chtml.js").write_text("// vendored")
    (target / "NORA_VENDORED_VERSION").write_text(book.MATHJAX_VERSION + "\n")
    assert book.ensure_mathjax(tmp_path) == target  # stamp matches: npm is not needed


# ------------------------------------------------------------------------- the book's own files


def _toc_files(toc: dict) -> list[str]:
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part.get("chapters", [])]
        for ch in part.get("chapters", []):
            files += [s["file"] for s in ch.get("sections", [])]
    return files


def test_toc_entries_exist_and_every_notebook_is_listed():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = _toc_files(toc)
    for entry in files:
        assert any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), f"{entry} in _toc.yml does not exist"
    notebooks = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks <= set(files), f"not in _toc.yml: {sorted(notebooks - set(files))}"
    for part in toc["parts"]:
        assert part.get("chapters"), f"part {part.get('caption')!r} has no chapter"


def test_committed_notebooks_follow_the_conventions():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].cell_type == "markdown", f"{path.name}: first cell must state the question"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "hide-cell" in params[0].metadata["tags"], path.name
        assert "profile = None" in params[0].source and "seeds = None" in params[0].source, path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code), path.name
        assert all(c.execution_count is not None for c in code if c.source.strip()), f"{path.name}: unexecuted cells"
        assert not any(o.output_type == "error" for c in code for o in c.outputs), f"{path.name}: stored errors"
        assert nb.cells[-1].cell_type == "markdown", f"{path.name}: last cell must state what was found"
        glued: set[str] = set()
        for cell in code:
            for out in cell.outputs:
                shown = out.get("text", "") if out.output_type == "stream" else out.get("data", {}).get("text/plain", "")
                assert not book.PROGRESS_RE.search(shown), f"{path.name}: progress-bar text in an output: {shown[:80]!r}"
                name = out.get("metadata", {}).get("scrapbook", {}).get("name")
                text = out.get("data", {}).get("text/plain", "")
                # numpy 2 scalars glue as 'np.float64(...)', which {glue:text}`key:.2f` cannot format
                assert not (name and text.startswith("np.")), f"{path.name}: glue {name!r} is {text!r}; glue float(...)"
                # the strict site build fails on a key glued twice (record() glues every value it records)
                assert not (name and name in glued), f"{path.name}: glue key {name!r} is glued twice"
                if name:
                    glued.add(name)


def test_glued_numbers_match_the_recorded_book_results():
    """The prose (glue in committed notebooks) and results/book/*.json (the results page) agree."""
    recorded = results.load_all("book", out_dir=ROOT / "results")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        values = recorded.get(path.stem, {}).get("values", {})
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                name = out.get("metadata", {}).get("scrapbook", {}).get("name")
                if name in values and isinstance(values[name], int | float) and not isinstance(values[name], bool) and "text/plain" in out.get("data", {}):
                    glued = float(out["data"]["text/plain"])
                    assert glued == pytest.approx(values[name], rel=1e-9), f"{path.stem}:{name}"


def test_site_config_is_offline_and_strict():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"] and (ROOT / "book/references.bib").is_file()
    sphinx = cfg["sphinx"]["config"]
    assert "_static" not in sphinx.get("html_static_path", [])
    extra = sphinx["html_extra_path"]
    # The vendored MathJax, and book/_root's favicon.ico for the site root (index.html is a bare
    # redirect without <link rel=icon>, so browsers ask for /favicon.ico there).
    assert extra == [book.MATHJAX_SITE_DIR.parent.as_posix(), "book/_root"]
    assert (ROOT / "book/_root/favicon.ico").is_file()
    # Sphinx serves a relative script from "_static/<path>": it must land on <site>/mathjax/.
    assert posixpath.normpath(posixpath.join("_static", sphinx["mathjax_path"])) == "mathjax/tex-chtml.js"
    launch = cfg["launch_buttons"]
    assert not any(launch.get(k) for k in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url", "thebe"))
    assert "book/_vendor/" in (ROOT / ".gitignore").read_text().split()


def test_bibliography_has_the_cited_works():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for key in ("yin2025nora", "hu2022lora", "liu2024dora", "dettmers2023qlora", "jia2022vpt", "houlsby2019adapter",
                "molina2020pau", "yang2025kat", "raffel2026flashkat", "newman1964rational", "deng2025loran",
                "telgarsky2017rational"):
        assert key in keys
    cited = set()
    for page in list((ROOT / "book").glob("*.md")) + list((ROOT / "notebooks").glob("*.ipynb")):
        for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", page.read_text()):
            cited |= {k.strip() for k in group.split(",")}
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_nbval_sanitizers_normalise_run_dependent_text():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())

    def clean(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert clean("took 12.3 s and 45ms") == "took <DURATION> and <DURATION>"
    assert clean("saved /work/main/runs/smoke/03_method.ipynb") == "saved <PATH>"
    assert clean("<Tensor object at 0x7f3a2b1c9d10>") == "<Tensor object at <ADDRESS>>"
    assert clean("100%|██████████| 10/10 [00:01<00:00,  9.50it/s]") == "<PROGRESS>"
    assert clean("kernel 1b2c3d4e-1111-2222-3333-444455556666") == "kernel <UUID>"
    # numbers that matter are left alone
    for text in ("936 trainable of 5,543,716", "12 blocks, 3 seeds", "rank 3 (s = 2)", "ratio 12/100"):
        assert clean(text) == text


def test_ci_entry_point_and_workflow():
    ci = (ROOT / ".ci" / "run")
    assert os.access(ci, os.X_OK)
    text = ci.read_text()
    assert "set -euo pipefail" in text and re.search(r"^make test$", text, re.M)
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    uses = {s["uses"].split("@")[0] for s in steps if "uses" in s}
    assert {"actions/configure-pages", "actions/upload-pages-artifact", "actions/deploy-pages"} <= uses
    assert any(s.get("run", "").startswith("make book") for s in steps)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
