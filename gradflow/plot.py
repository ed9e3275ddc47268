"""Figures saved as PNG: training curves and gradient flow.

    gradflow.plot.history(history, "curves.png")
    gradflow.plot.gradient_flow(monitor.record, "flow.png")

Uses matplotlib's object-oriented API with the Agg canvas directly, so it never changes the
global backend (safe in notebooks and on machines without a display). matplotlib is optional:
``pip install 'gradflow-nn[plot]'``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("gradflow.plot needs matplotlib: pip install 'gradflow-nn[plot]'") from error
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: "str | os.PathLike") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def history(history: Any, path: "str | os.PathLike", title: str | None = None) -> Path:
    """One panel per quantity (loss, then each metric, then the learning rate), training and
    validation curves together. ``history`` is a :class:`gradflow.callbacks.History` or a dict
    of per-epoch lists. Returns the path.

    title: the figure's title (default: none).
    """
    values = {k: list(v) for k, v in dict(history).items()}
    if not values:
        raise ValueError("plot.history: the history is empty")
    epochs = list(getattr(history, "epochs", [])) or list(range(1, len(next(iter(values.values()))) + 1))
    bases = [k for k in values if not k.startswith("val_") and k != "lr"]
    bases += [k[4:] for k in values if k.startswith("val_") and k[4:] not in bases]
    if "lr" in values and len(set(values["lr"])) > 1:
        bases.append("lr")
    columns = min(3, len(bases))
    rows = math.ceil(len(bases) / columns)
    figure = _figure(4.2 * columns, 3.2 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, name in zip(axes.flat, bases):
        for key, style, label in ((name, "-o", "training"), (f"val_{name}", "--s", "validation")):
            if key in values:
                ax.plot(epochs[-len(values[key]):], values[key], style, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.grid(alpha=0.3)
        if name == "lr" or (name == "loss" and _positive(values.get(name, [])) and _spans_decades(values[name])):
            ax.set_yscale("log")
        if name != "lr":
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(bases):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _positive(series: list[float]) -> bool:
    finite = [v for v in series if math.isfinite(v)]
    return bool(finite) and min(finite) > 0


def _spans_decades(series: list[float]) -> bool:
    finite = [v for v in series if math.isfinite(v)]
    return max(finite) / min(finite) > 30


def gradient_flow(record: Any, path: "str | os.PathLike", title: str | None = None) -> Path:
    """Three panels from a :class:`gradflow.diagnostics.FlowRecord`: per layer (input to output),
    the gradient norm and the δ norm (median over steps, bars from min to max), and the
    update-to-weight ratio over the steps (log scale, with the 1e-3 rule-of-thumb line).
    Returns the path.

    Args:
        record: the ``FlowRecord`` of a :class:`gradflow.diagnostics.GradientFlowMonitor` (``monitor.record``).
        path: the PNG to write (its folder is created).
        title: the figure's title (default: none).
    """
    if not len(record):
        raise ValueError("plot.gradient_flow: the record holds no steps")
    layers = list(record.layers)
    positions = np.arange(len(layers))
    kinds = [desc.split("(")[0] for desc in record.descriptions]
    labels = [f"{name}\n{kind}" for name, kind in zip(layers, kinds)]
    # Long or many labels are turned, so that none is cut or runs into its neighbour.
    turned = len(layers) > 8 or max(len(name) for name in layers + kinds) > 12
    figure = _figure(max(9.0, 0.7 * len(layers) + 6), 8.0 if turned else 7.5)
    top, middle, bottom = figure.subplots(3, 1)
    middle.sharex(top)  # the two per-layer panels keep one x axis: layer i sits at the same place
    panels = ((top, record.grad_norm, "parameter gradient norm ‖∇θ‖ (median over steps; whiskers: min to max)",
               "tab:blue"),
              (middle, record.delta_norm, "norm of the δ each layer passes down ‖δ‖ (median; min to max)", "tab:orange"))
    for ax, table, name, color in panels:
        _range_bars(ax, positions, table, color)
        ax.set_title(name, fontsize=10)
        ax.set_xticks(positions, labels, fontsize=7, rotation=35 if turned else 0, ha="right" if turned else "center",
                      rotation_mode="anchor")
        ax.tick_params(axis="x", labelbottom=True)
        ax.set_xlim(-0.6, len(layers) - 0.4)  # every layer's slot, with or without a value
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    ratio = record.update_ratio
    steps = record.steps
    plotted = False
    for i, name in enumerate(layers):
        column = np.where(ratio[:, i] > 0, ratio[:, i], np.nan)  # log scale: drop zero updates
        if np.any(np.isfinite(column)):
            bottom.plot(steps, column, label=f"{name} {kinds[i]}", linewidth=1)
            plotted = True
    bottom.axhline(1e-3, color="grey", linestyle="--", linewidth=1, label="1e-3")
    if plotted:
        bottom.set_yscale("log")
    bottom.set_title("update-to-weight ratio ‖Δθ‖/‖θ‖ per step", fontsize=10)
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=7, ncol=1 if len(layers) <= 12 else 2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _range_bars(ax: Any, positions: np.ndarray, table: np.ndarray, color: str) -> None:
    """Median as a bar, min..max as an error bar; layers without values are left empty."""
    medians, low, high = [], [], []
    for i in range(table.shape[1]):
        column = table[:, i]
        column = column[np.isfinite(column) & (column > 0)]
        if column.size:
            m = float(np.median(column))
            medians.append(m)
            low.append(m - float(column.min()))
            high.append(float(column.max()) - m)
        else:
            medians.append(np.nan)
            low.append(0.0)
            high.append(0.0)
    ax.bar(positions, medians, color=color, alpha=0.75)
    ax.errorbar(positions, medians, yerr=[low, high], fmt="none", ecolor="black", capsize=3, linewidth=1)
    for position, median in zip(positions, medians):
        if not np.isfinite(median):
            ax.text(position, 0.5, "none", transform=ax.get_xaxis_transform(), ha="center", va="center",
                    fontsize=8, color="grey")


__all__ = ["history", "gradient_flow"]
