"""The tables helper: what its HTML holds (table, caption, mean ± std, the paper beside ours, the best in bold)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from nora.experiments import tables

METHODS = ["Full", "NoRA", "NoRA++"]


def _table1():
    means = pd.DataFrame({"CIFAR-10": [81.56, 58.72, 78.59], "CIFAR-100": [54.20, 42.77, 51.97]}, index=METHODS)
    stds = pd.DataFrame({"CIFAR-10": [1.45, 0.98, 1.07], "CIFAR-100": [1.97, 3.11, 0.06]}, index=METHODS)
    paper = pd.DataFrame({"CIFAR-10": [90.71, 90.88, 91.24], "CIFAR-100": [77.19, 77.46, 77.76]}, index=METHODS)
    params = pd.DataFrame({"trainable params": [2686292, 4328, 151784]}, index=METHODS)
    return tables.results_table(means, stds, paper, caption="Table 1, redone", units={"CIFAR-10": "%", "CIFAR-100": "%"},
                                extra=params, extra_formats={"trainable params": "{:,}"})


def _bold_cells(html: str) -> set[str]:
    """Ids of the cells the Styler's CSS makes bold."""
    rules = re.findall(r"([^{}]+)\{\s*font-weight: bold;\s*\}", html)
    return {cell.strip().lstrip("#") for rule in rules for cell in rule.split(",")}


def _cell(html: str, text: str) -> str:
    match = re.search(r'<td id="([^"]+)" class="data [^"]*" >' + re.escape(text) + "</td>", html)
    assert match, f"no cell {text!r}"
    return match.group(1)


def test_results_table_html_has_mean_std_paper_units_and_the_best_in_bold():
    table = _table1()
    html = table.to_html()
    assert "<table" in html and "<caption>Table 1, redone</caption>" in html
    assert "CIFAR-10 (%)" in html and ">ours<" in html and ">paper<" in html
    # ours and the paper's number side by side in one row
    row = re.search(r"<tr>\s*<th[^>]*>NoRA</th>(.*?)</tr>", html, re.S).group(1)
    cells = re.findall(r">([^<>]+)</td>", row)
    assert cells == ["4,328", "58.72 ± 0.98", "90.88", "42.77 ± 3.11", "77.46"]
    bold = _bold_cells(html)
    assert _cell(html, "81.56 ± 1.45") in bold and _cell(html, "54.20 ± 1.97") in bold  # our best: full fine-tuning
    assert _cell(html, "91.24") in bold and _cell(html, "77.76") in bold  # the paper's best: NoRA++
    assert _cell(html, "58.72 ± 0.98") not in bold and _cell(html, "4,328") not in bold


def test_results_table_plain_repr_and_stable_ids():
    table = _table1()
    text = repr(table)
    assert text.startswith("Table 1, redone\n") and "58.72 ± 0.98" in text and "<" not in text
    assert table.to_html() == _table1().to_html()  # deterministic ids: committed outputs do not churn
    assert table._repr_html_() == table.to_html()


def test_results_table_without_paper_has_one_header_row_and_no_bold_for_a_tie():
    means = pd.DataFrame({"ms": [8.1, 10.3], "saved MB": [18.47, 18.47]}, index=["GELU", "rational"])
    stds = means * 0 + 0.1
    html = tables.results_table(means, stds, caption="cost", best="min").to_html()
    assert ">ours<" not in html and "level1" not in html
    bold = _bold_cells(html)
    assert _cell(html, "8.10 ± 0.10") in bold
    assert not any(_cell(html, "18.47 ± 0.10") == b for b in bold)  # every row equal: nothing is "best"


def test_results_table_per_quantity_digits_and_text_paper_values():
    means = pd.DataFrame({"params": [73728, 936], "ms": [20.5, 19.2]}, index=["LoRA", "NoRA"])
    stds = pd.DataFrame({"ms": [0.89, 0.79]}, index=means.index)
    paper = pd.DataFrame({"params": ["37.24K", "2.10K"], "ms": ["5.30", "5.69"]}, index=means.index)
    html = tables.results_table(means, stds, paper, caption="t6", digits={"params": 0, "ms": 2}, best=None).to_html()
    for text in ("73,728", "936", "37.24K", "20.50 ± 0.89", "5.69"):
        assert f">{text}</td>" in html
    assert not _bold_cells(html)


def test_styled_formats_bold_mask_counts_and_flags():
    frame = pd.DataFrame({"error": [6.7e-1, 1.9e-3], "points": np.array([10, 12]), "converged": [True, False]},
                         index=pd.Index(["rational", "polynomial"], name="approximant"))
    mask = pd.DataFrame({"error": [False, True]}, index=frame.index)
    table = tables.styled(frame, "errors", formats="{:.1e}", bold=mask)
    html = table.to_html()
    assert ">6.7e-01</td>" in html and ">1.9e-03</td>" in html
    assert ">10</td>" in html and ">yes</td>" in html and ">no</td>" in html  # counts and flags ignore the float format
    assert _bold_cells(html) == {_cell(html, "1.9e-03")}
    # a named single index becomes the first column, headed by its name: no header row for the name alone
    assert "index_name" not in html and re.search(r'<th id="[^"]+" class="col_heading level0 col0" >approximant</th>', html)
    assert repr(table).splitlines()[1].split() == ["approximant", "error", "points", "converged"]
    with pytest.raises(TypeError, match="DataFrame"):
        tables.styled([[1, 2]], "not a frame")


def test_mean_std_and_splitting_an_aggregate():
    assert tables.mean_std(81.559, 1.449) == "81.56 ± 1.45"
    assert tables.mean_std(73728, float("nan"), 0) == "73,728"
    assert tables.mean_std(float("nan"), 1.0) == "—"
    runs = pd.DataFrame({"method": ["a", "a", "b", "b"], "acc": [1.0, 3.0, 5.0, 5.0]})
    means, stds = tables.mean_std_frames(runs.groupby("method").agg(["mean", "std"]))
    assert means.loc["a", "acc"] == 2.0 and stds.loc["b", "acc"] == 0.0
    with pytest.raises(ValueError, match="statistic"):
        tables.mean_std_frames(runs)


def test_tradeoff_plots_each_method_on_a_log_parameter_axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nora.experiments.figures import tradeoff

    fig, ax = plt.subplots()
    params = {"Full": 2_686_292, "LoRA": 40_724, "NoRA": 4_328}
    tradeoff(ax, params, {"Full": 81.56, "LoRA": 73.82, "NoRA": 58.72, "VPT": 60.9},
             {"Full": 1.45, "LoRA": 1.19, "NoRA": 0.98}, title="ours")
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("trainable parameters") and "%" in ax.get_ylabel()
    assert [t.get_text() for t in ax.texts] == ["Full", "LoRA", "NoRA"]  # VPT has no count: left out
    assert len(ax.containers) == 1 and len(ax.containers[0].lines[2][0].get_segments()) == 3  # one error bar each
    with pytest.raises(ValueError, match="positive"):
        tradeoff(ax, {"Full": 0}, {"Full": 1.0})
    plt.close(fig)
