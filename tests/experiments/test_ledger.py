"""The results page: the ledger generated from results JSON between the markers, and a chapter's own rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nora.experiments import claims, ledger, results
from nora.experiments.verdicts import VERDICTS


def _page(root: Path) -> Path:
    (root / "book").mkdir(parents=True, exist_ok=True)
    page = root / "book" / "results.md"
    page.write_text(f"# R\n\n{ledger.RESULTS_BEGIN}\nOLD-CONTENT\n{ledger.RESULTS_END}\n\ntail\n")
    return page


def test_results_page_is_the_ledger_then_every_key(tmp_path: Path):
    page = _page(tmp_path)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "04_vit_transfer.ipynb").write_text("{}")
    results.record("04_vit_transfer", "book", {"easy_acc_nora": 58.72, "easy_acc_nora_std": 0.98, "easy_acc_full": 81.56,
                                               "easy_acc_full_std": 1.45, "seeds": 3, "ratio": 0.12345678901234567,
                                               # the easy task's regime gates, all holding
                                               "easy_acc_scratch": 50.0, "easy_acc_probe": 75.0, "easy_ceiling": 85.0,
                                               "easy_acc_lora": 80.0},
                   out_dir=tmp_path / "results", paper={"easy_acc_nora": 90.88})
    results.record("04_vit_transfer", "paper", {"easy_acc_nora": 90.1}, out_dir=tmp_path / "results")
    stored = tmp_path / "results" / "book" / "04_vit_transfer.json"
    data = json.loads(stored.read_text())  # the runner's bookkeeping beside the values is not a result
    stored.write_text(json.dumps({**data, "_run": {"digest": "x", "wall_seconds": 3.0}, "_parameters": {"epochs": 6}}))
    assert ledger.write_results_page(tmp_path)
    text = page.read_text()
    assert "OLD-CONTENT" not in text and text.startswith("# R\n") and text.endswith("tail\n")
    body = text.split(ledger.RESULTS_BEGIN)[1].split(ledger.RESULTS_END)[0]
    # raw HTML blocks: MyST ends one at a blank line, so none may contain one
    for block in body.strip().split("\n\n"):
        assert block.lstrip().startswith(("<", "## ")), block[:80]
    assert body.index('class="nora-counts"') < body.index('class="nora-ledger"') < body.index("<details>")
    rows = re.findall(r'<tr id="claim-([^"]+)" data-verdict="([^"]+)">(.*?)</tr>', body)
    assert len(rows) == len(claims.CLAIMS)
    assert all(v in VERDICTS for _, v, _ in rows)
    nora = dict((i, (v, cells)) for i, v, cells in rows)["nora-vs-full-cifar10"]
    assert nora[0] == "fails" and "58.72 ± 0.98" in nora[1] and "90.88 vs 90.71" in nora[1]
    assert 'href="../notebooks/04_vit_transfer.html#fine-tuning-runs"' in nora[1]
    assert dict((i, v) for i, v, _ in rows)["b1-density"] == "not testable here"  # its chapter recorded nothing
    counted = re.search(r"(\d+) claims:", body).group(1)
    assert int(counted) == len(claims.CLAIMS)
    # the collapsed key table: formatted, both profiles, linked chapters
    keys = body.split("<details>")[1]
    assert "<code>ratio</code></td><td>—</td><td>0.1235</td><td>—</td>" in keys
    assert "<code>easy_acc_nora</code></td><td>90.88</td><td>58.72</td><td>90.1</td>" in keys
    assert '<a href="../notebooks/04_vit_transfer.html">04_vit_transfer</a>' in keys
    assert not re.search(r"\d\.\d{8,}", body)  # no raw 17-digit floats anywhere
    assert "digest" not in body and "wall_seconds" not in body


def test_results_page_needs_its_markers(tmp_path: Path):
    (tmp_path / "book").mkdir()
    assert not ledger.write_results_page(tmp_path)  # no page
    (tmp_path / "book" / "results.md").write_text("# R\n\nhand-written, no markers\n")
    assert not ledger.write_results_page(tmp_path)
    assert (tmp_path / "book" / "results.md").read_text() == "# R\n\nhand-written, no markers\n"


def test_the_build_re_renders_a_chapters_claim_table_from_todays_registry(tmp_path: Path):
    import nbformat

    results.record("08_efficiency", "smoke", {"lora_params_no_head": 73728, "nora_params_no_head": 936},
                   out_dir=tmp_path / "results")
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"parameters": {"profile": "smoke"}}})
    table_cell = nbformat.v4.new_code_cell('chapter_table("08_efficiency", profile)', execution_count=7)
    table_cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "[fails] an old verdict"},
                                                 execution_count=7)]
    other = nbformat.v4.new_code_cell('print(chapter_table("08_efficiency", profile))', execution_count=8)
    other.outputs = [nbformat.v4.new_output("stream", text="left alone\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# 08"), table_cell, other, nbformat.v4.new_code_cell("chapter_table('x', profile)")]
    path = tmp_path / "notebooks" / "08_efficiency.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    code = [c.source for c in nb.cells]

    assert ledger.refresh_chapter_tables(tmp_path) == ["08_efficiency"]
    new = nbformat.read(path, as_version=4)
    assert [c.source for c in new.cells] == code  # the code, and so the runner's record, is untouched
    (out,) = new.cells[1].outputs
    fresh = ledger.chapter_table("08_efficiency", "smoke", out_dir=tmp_path / "results")
    assert out.data["text/html"] == fresh.html and out.data["text/plain"] == fresh.text and out.execution_count == 7
    assert new.cells[2].outputs[0].text == "left alone\n" and new.cells[3].outputs == []
    before = path.read_bytes()
    assert ledger.refresh_chapter_tables(tmp_path) == [] and path.read_bytes() == before  # nothing to do: untouched


def test_chapter_table_shows_that_chapters_rows_only(tmp_path: Path):
    results.record("08_efficiency", "smoke", {"lora_params_no_head": 73728, "nora_params_no_head": 936},
                   out_dir=tmp_path)
    table = ledger.chapter_table("08_efficiency", "smoke", out_dir=tmp_path)
    html = table._repr_html_()
    expected = claims.by_chapter("08_efficiency")
    assert html.count('<tr id="claim-') == len(expected) and "smoke profile" in html
    assert 'id="claim-table6-parameters" data-verdict="holds"' in html
    assert "Shown in" not in html and 'class="full-width"' not in html  # the cell, not the table, is full-width
    assert repr(table).splitlines()[0].startswith("[holds] NoRA trains over 17 times fewer")
    assert "<" not in repr(table)
