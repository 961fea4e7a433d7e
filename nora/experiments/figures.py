"""Figures the chapters share: the accuracy-against-parameters trade-off that Table 1's claim is about.

:func:`tradeoff` draws one panel: each method at (trainable parameters, accuracy) on a log x axis,
mean ± std over seeds as error bars, labelled; a chapter draws ours and the paper's side by side
(different backbones, so never on one axis).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["tradeoff"]


def tradeoff(ax, params: Mapping[str, float], means: Mapping[str, float], stds: Mapping[str, float] | None = None, *,
             title: str = "", xlabel: str = "trainable parameters (log scale)", ylabel: str = "accuracy (%)",
             highlight: tuple[str, ...] = ("NoRA", "NoRA++"), color: str = "C0"):
    """Accuracy against trainable parameters (log x), one labelled point per method, error bars where stds are given."""
    names = [n for n in means if n in params]
    if not names:
        raise ValueError("no method has both a parameter count and an accuracy")
    if any(params[n] <= 0 for n in names):
        raise ValueError(f"parameter counts must be positive on a log axis, got {dict((n, params[n]) for n in names)}")
    x = np.array([params[n] for n in names], dtype=float)
    y = np.array([means[n] for n in names], dtype=float)
    err = None if stds is None else np.array([stds.get(n, np.nan) for n in names], dtype=float)
    ax.set_xscale("log")
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor=color, elinewidth=1, capsize=3, alpha=0.8)
    for n, xi, yi in zip(names, x, y):
        mine = n in highlight
        ax.plot(xi, yi, "o" if mine else "s", ms=7 if mine else 5, color="C3" if mine else color)
    ax.set_xlim(x.min() / 2, x.max() * 3)
    ax.autoscale_view()
    for n, xi, yi, dy in zip(names, x, y, _label_offsets(ax, x, y)):
        ax.annotate(n, (xi, yi), xytext=(6, 3 + dy), textcoords="offset points", fontsize=8,
                    fontweight="bold" if n in highlight else "normal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def _label_offsets(ax, x, y, gap: float = 9.0) -> list[float]:
    """Vertical label offsets (points) that keep the labels of points at about the same place from overlapping."""
    xy = ax.transData.transform(np.column_stack([x, y]))
    scale = 72.0 / ax.figure.dpi  # pixels -> points
    placed: list[tuple[float, float]] = []
    offsets = [0.0] * len(x)
    for i in sorted(range(len(x)), key=lambda k: xy[k, 1]):
        px, py = xy[i, 0] * scale, xy[i, 1] * scale
        level = py
        for qx, qy in sorted(placed, key=lambda t: t[1]):
            if abs(qx - px) < 45 and abs(qy - level) < gap:
                level = qy + gap
        placed.append((px, level))
        offsets[i] = level - py
    return offsets
