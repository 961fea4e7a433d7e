"""Result tables as a reader reads them: HTML tables with mean ± std in one cell and the paper's number beside ours.

:func:`styled` turns any DataFrame into a compact captioned HTML table (number formats, the best
cells in bold); :func:`results_table` builds the usual comparison from means, stds and the
paper's numbers (one "ours" and one "paper" column per quantity, units in the headers, the best
of each column in bold). Both return a :class:`Table`: HTML in a notebook, plain text elsewhere
(so nbval and terminals see a stable, readable repr), ``.styler`` for anything else pandas offers.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Table", "mean_std", "mean_std_frames", "results_table", "styled"]

Format = str | Callable[[Any], str]

_CSS = [
    {"selector": "", "props": "border-collapse: collapse; font-size: 0.82em; margin: 0.2em 0 1em 0;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; padding-bottom: 0.35em; font-size: 1.05em; "
                                     "min-width: 26em;"},
    {"selector": "th, td", "props": "padding: 0.15em 0.45em; border-bottom: 1px solid rgba(128, 128, 128, 0.25);"},
    {"selector": "thead th", "props": "text-align: center; white-space: normal; vertical-align: bottom;"},
    {"selector": "tbody th", "props": "text-align: left; font-weight: normal; min-width: 9em; max-width: 16em;"},
    {"selector": "td", "props": "text-align: right; white-space: nowrap;"},
]


class Table:
    """A styled table: ``_repr_html_`` for notebooks and the book, ``repr`` as plain text, ``styler`` for more."""

    def __init__(self, styler, text: str):
        self.styler, self.text = styler, text

    def to_html(self) -> str:
        return self.styler.to_html()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return self.text


def mean_std(mean: float, std: float | None, digits: int = 2) -> str:
    """``"81.56 ± 1.45"``; just the mean when the std is missing (one seed, a count), "—" when the mean is."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def mean_std_frames(summary: pd.DataFrame, mean: str = "mean", std: str = "std") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df.groupby(...).agg(["mean", "std"])`` (columns ``(quantity, stat)``) into means and stds."""
    if not isinstance(summary.columns, pd.MultiIndex):
        raise ValueError("summary needs (quantity, statistic) columns, as groupby(...).agg(['mean', 'std']) gives")
    stats = set(summary.columns.get_level_values(-1))
    if not {mean, std} <= stats:
        raise ValueError(f"summary's statistics are {sorted(map(str, stats))}; need {mean!r} and {std!r}")
    return summary.xs(mean, axis=1, level=-1), summary.xs(std, axis=1, level=-1)


def _uuid(caption: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", caption.lower()).strip("_")[:40] or "table"


def _formatter(fmt: Format | None) -> Callable[[Any], str]:
    def show(value):
        if isinstance(value, str):
            return value
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if callable(fmt):
            return fmt(value)
        if isinstance(value, numbers.Integral):
            return f"{value:,}"  # counts stay counts whatever the column's float format
        return f"{value:.4g}" if fmt is None else fmt.format(value)
    return show


def styled(frame: pd.DataFrame, caption: str, *, formats: Format | Mapping[Any, Format] | None = None,
           bold: pd.DataFrame | None = None, uuid: str | None = None, index: bool = True) -> Table:
    """A compact HTML table of ``frame`` with a caption, per-column ``formats`` and ``bold`` cells (a boolean frame)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    per_column = dict(formats) if isinstance(formats, Mapping) else {c: formats for c in frame.columns}
    if bold is not None:
        bold = bold.reindex(index=frame.index, columns=frame.columns, fill_value=False).astype(bool)
    if index and frame.index.nlevels == 1 and frame.index.name is not None:
        # a named single index becomes the first column, headed by its name (Styler gives a name a row of its own)
        name = frame.index.name
        frame = frame.reset_index()
        per_column[name] = None
        if bold is not None:
            bold = bold.reset_index(drop=True)
            bold.insert(0, name, False)
        index = False
    shown = frame.copy().astype(object)
    for col in frame.columns:
        shown[col] = [_formatter(per_column.get(col))(v) for v in frame[col]]
    styler = shown.style.set_uuid(uuid or _uuid(caption)).set_caption(caption).set_table_styles(_CSS)
    if bold is not None:
        css = bold.set_axis(shown.index, axis=0).map(lambda b: "font-weight: bold" if b else "")
        styler = styler.apply(lambda _: css, axis=None)
    if not index:
        styler = styler.hide(axis="index").set_table_styles(_CSS + [{"selector": "td.col0", "props": "text-align: left;"}])
    text = f"{caption}\n{shown.to_string(index=index)}"
    return Table(styler, text)


def _best_mask(values: pd.DataFrame, best: str | Mapping[Any, str | None] | None) -> pd.DataFrame:
    mask = pd.DataFrame(False, index=values.index, columns=values.columns)
    for col in values.columns:
        how = best.get(col) if isinstance(best, Mapping) else best
        numbers = pd.to_numeric(values[col], errors="coerce")
        if how not in ("max", "min") or numbers.notna().sum() < 2:
            continue
        target = numbers.max() if how == "max" else numbers.min()
        if (numbers == target).sum() < numbers.notna().sum():  # a tie of every row is no "best"
            mask[col] = numbers == target
    return mask


def results_table(means: pd.DataFrame, stds: pd.DataFrame | None = None, paper: pd.DataFrame | None = None, *,
                  caption: str, digits: int | Mapping[Any, int] = 2, units: Mapping[Any, str] | None = None,
                  best: str | Mapping[Any, str | None] | None = "max", extra: pd.DataFrame | None = None,
                  extra_formats: Mapping[Any, Format] | None = None, ours: str = "ours", paper_label: str = "paper",
                  uuid: str | None = None) -> Table:
    """Rows (methods) × quantities: ``mean ± std`` and the paper's number side by side, the best of each column in bold.

    ``means``/``stds``: numbers, one column per quantity; ``paper``: the paper's numbers (or text,
    shown as it is) for some of those quantities; ``digits``: decimals, for all or per quantity;
    ``units``: a unit per quantity for its header; ``best``: "max", "min" or None, for all columns
    or per quantity; ``extra``: leading columns shown as they are, formatted by ``extra_formats``.
    """
    if not isinstance(means, pd.DataFrame):
        raise TypeError(f"means must be a pandas DataFrame, got {type(means).__name__}")
    if stds is not None and (set(stds.columns) - set(means.columns)):
        raise ValueError(f"stds has quantities means lacks: {sorted(map(str, set(stds.columns) - set(means.columns)))}")
    units = dict(units or {})
    columns, cells, bold = [], {}, {}

    def head(q):
        return f"{q} ({units[q]})" if q in units else str(q)

    for name in ([] if extra is None else list(extra.columns)):
        fmt = _formatter((extra_formats or {}).get(name))
        columns.append((str(name), ""))
        cells[columns[-1]] = [fmt(v) for v in extra[name].reindex(means.index)]
        bold[columns[-1]] = [False] * len(means)
    best_ours = _best_mask(means, best)
    best_paper = _best_mask(paper, best) if paper is not None else None
    for q in means.columns:
        places = digits.get(q, 2) if isinstance(digits, Mapping) else digits
        std = stds[q] if stds is not None and q in stds.columns else pd.Series(float("nan"), index=means.index)
        columns.append((head(q), ours))
        cells[columns[-1]] = [mean_std(m, s, places) for m, s in zip(means[q], std.reindex(means.index))]
        bold[columns[-1]] = list(best_ours[q])
        if paper is not None and q in paper.columns:
            col = paper[q].reindex(means.index)
            columns.append((head(q), paper_label))
            cells[columns[-1]] = [_formatter(f"{{:.{places}f}}")(v) for v in col]
            bold[columns[-1]] = list(best_paper[q].reindex(means.index).fillna(False))
    if not any(sub == paper_label for _, sub in columns):  # nothing to set beside ours: one header row
        columns = [c for c, _ in columns]
        cells, bold = {c: v for (c, _), v in cells.items()}, {c: v for (c, _), v in bold.items()}
    index = pd.MultiIndex.from_tuples(columns) if isinstance(columns[0], tuple) else pd.Index(columns)
    frame = pd.DataFrame({c: cells[c] for c in columns}, index=means.index)
    frame.columns = index
    mask = pd.DataFrame({c: bold[c] for c in columns}, index=means.index)
    mask.columns = index
    frame.index.name = None
    return styled(frame, caption, bold=mask, uuid=uuid)
