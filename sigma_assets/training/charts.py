"""Small PNG charts for asset metadata: a histogram, a line, grouped bars.

Each returns PNG bytes; `markdown_image` embeds them in markdown metadata, which the Dagster UI renders.
Matplotlib's non-interactive backend: no display needed. No Dagster imports.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def histogram_png(values: Sequence[float], title: str, xlabel: str, bins: int = 20) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(list(values), bins=bins, color="#4477aa")
    ax.set(title=title, xlabel=xlabel, ylabel="samples")
    return _png(fig)


def line_png(points: Sequence[tuple[float, float]], title: str, xlabel: str, ylabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3))
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, color="#4477aa")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _png(fig)


def grouped_bars_png(
    values: Mapping[str, Mapping[str, float]],
    title: str,
    ylabel: str,
    errors: Mapping[str, Mapping[str, float]] | None = None,
) -> bytes:
    """`values[group][series]`: one cluster of bars per group (benchmark), one bar per series (model),
    with an error bar of `errors[group][series]` where given."""
    groups = list(values)
    series = sorted({s for g in values.values() for s in g}, key=str)
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(groups) + 2), 3))
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        yerr = [(errors or {}).get(g, {}).get(name, 0.0) for g in groups] if errors else None
        ax.bar(xs, [values[g].get(name, 0.0) for g in groups], width, label=name, yerr=yerr, capsize=3)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(title=title, ylabel=ylabel)
    ax.legend()
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
