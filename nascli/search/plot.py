"""pareto.png, the search as a person reads it: candidates against flops, or a sensitivity search's map.

Both plots show the task's own metric rather than the number the search maximizes: a language
model's score is its negative perplexity, so its plots show perplexity, on a log axis because it
grows exponentially with the loss. A sensitivity search scores one subnet, a lone point against
flops; what it measured, the score of each hparam (or role) alone at each of its choices, is what
explains its choice, so that is what it plots.

Figures are drawn on an Agg canvas of their own: no display is needed, and no global backend of
the caller's (a notebook's) is switched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, MaxNLocator

from nascli.atomic import atomic_write
from nascli.search.uniform import role_of

COLUMNS = 3  # subplots per row of a sensitivity plot


@dataclass(frozen=True)
class Metric:
    """How a search score reads on a y axis: ``sign * score``, labelled, on a log scale or not."""

    label: str
    better: str
    sign: float = 1.0
    log: bool = False

    def of(self, scores: Iterable[float]) -> list[float]:
        return [self.sign * s for s in scores]


METRICS = {
    "acc": Metric("validation accuracy", "higher is better"),
    "ppl": Metric("validation perplexity", "lower is better", sign=-1.0, log=True),
    None: Metric("score", "higher is better"),
}


def search_plot(report: dict[str, Any], path: Path, metric: str | None) -> Path:
    """Write ``search_report``'s plot to ``path``: the sensitivity map of a sensitivity search that
    measured one, else every candidate against flops.

    ``metric`` is the task's metric the score stands for ("acc", or "ppl" for a language model,
    whose score is the negative perplexity); None for a ``search.score_func``'s own score.
    """
    shown = METRICS[metric]
    if report.get("sensitivity"):
        return save_figure(sensitivity_figure(report, shown), path)
    return save_figure(pareto_figure(report, shown), path)


def pareto_figure(report: dict[str, Any], metric: Metric) -> Figure:
    """Every scored candidate, the Pareto front, the chosen subnet and the flops bound (if any)."""
    candidates = report["candidates"]
    flops = [c["flops"] / 1e6 for c in candidates]
    values = metric.of(c["score"] for c in candidates)
    front = [candidates.index(p) for p in report["pareto"]]
    best = candidates.index(report["best"])
    figure = _figure((6.4, 4.2))
    axes = figure.subplots()
    axes.scatter(flops, values, s=10, alpha=0.4, label="candidates")
    axes.plot([flops[i] for i in front], [values[i] for i in front], "-o", ms=4, color="tab:orange",
              label="Pareto front")  # fmt: skip
    axes.scatter([flops[best]], [values[best]], marker="*", s=200, color="tab:red", zorder=5, label="chosen")
    bound = report["constraints"].get("flops")
    if bound is not None:
        axes.axvline(bound / 1e6, color="gray", linestyle="--", label="flops bound")
    _y_scale(axes, metric)
    axes.set_xlabel("flops (M multiply-accumulates per sample)")
    axes.set_ylabel(metric.label)
    axes.set_title(f"search candidates ({metric.better})", fontsize=10)
    axes.legend(loc="best")
    return figure


def sensitivity_figure(report: dict[str, Any], metric: Metric) -> Figure:
    """The measured map: each hparam's score with it alone at each choice, every other at its maximum.

    One subplot per role (``role_of``: an hparam's name with its block indices as ``*``), the
    choice on x in the role's own units (width, heads, depth), all subplots sharing one y axis so
    roles compare at a glance. A uniform search has one line per subplot; a per-layer search draws
    every layer's hparam of the role in its subplot, dark to light in model order, which stays
    legible with dozens of layers where one legend entry per hparam would not. A ring marks each
    hparam's chosen value; dotted and dashed lines give the unpruned model's and the chosen
    subnet's scores. The map is search.json's: drops never shrink as a choice grows, and choices
    above the first that dropped nothing were not scored and count as no drop.
    """
    groups: dict[str, list[str]] = {}
    for name in report["sensitivity"]:
        groups.setdefault(role_of(name), []).append(name)
    columns = min(COLUMNS, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure = _figure((3.6 * columns, 2.6 * rows + 1.0))
    grid = figure.subplots(rows, columns, sharey=True, squeeze=False)
    for axes, (role, names) in zip(grid.flat, groups.items(), strict=False):  # the last row may end early
        _role_axes(axes, role, names, report, metric)
    for axes in grid.flat[len(groups) :]:
        axes.set_visible(False)
    figure.suptitle(f"sensitivity: {metric.label} ({metric.better}) with each hparam alone at each value,"
                    " every other at its maximum", fontsize=10)  # fmt: skip
    figure.supylabel(metric.label, fontsize=9)
    figure.legend(handles=_sensitivity_legend(), loc="outside lower center", ncols=4, fontsize=8)
    return figure


def _role_axes(axes: Any, role: str, names: list[str], report: dict[str, Any], metric: Metric) -> None:
    """One role's subplot: a line per hparam of the role, its chosen value ringed."""
    top, config = report["original_score"], report["best"]["config"]
    for name, color in zip(names, _colors(len(names)), strict=True):
        drops = {int(choice): drop for choice, drop in report["sensitivity"][name].items()}
        choices = sorted(drops)
        axes.plot(choices, metric.of(top - drops[c] for c in choices), "-o", ms=3, lw=1.2, color=color, label=name)
        chosen = _chosen(name, config)
        axes.plot([chosen], metric.of([top - drops[chosen]]), linestyle="none", marker="o", ms=9, mfc="none",
                  mec="tab:red", mew=1.5, zorder=5, label=f"chosen {name}")  # fmt: skip
    axes.axhline(metric.of([top])[0], color="gray", linestyle=":", lw=1)
    axes.axhline(metric.of([report["best"]["score"]])[0], color="tab:red", linestyle="--", lw=0.8)
    _y_scale(axes, metric)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    many = f"\n{len(names)} hparams, dark to light in model order" if len(names) > 1 else ""
    axes.set_title(role + many, fontsize=8)
    axes.tick_params(which="both", labelsize=7)


def _y_scale(axes: Any, metric: Metric) -> None:
    """A log axis for perplexity, its ticks as plain numbers (a search's perplexities often span
    less than a decade, which the default labels as 5.2 x 10^2), with a grid to read values off."""
    if metric.log:
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    axes.grid(alpha=0.3, which="both")


def _chosen(name: str, config: dict[str, Any]) -> int:
    """The chosen subnet's value of an hparam, or of a role (its members', all alike)."""
    if name in config:
        return int(config[name])
    return int(next(value for hparam, value in config.items() if role_of(hparam) == name))


def _colors(count: int) -> list[str]:
    if count == 1:
        return ["tab:blue"]
    cmap = colormaps["viridis"]
    return [to_hex(cmap(0.85 * i / (count - 1))) for i in range(count)]


def _sensitivity_legend() -> list[Line2D]:
    return [
        Line2D([], [], color="tab:blue", marker="o", ms=3, label="measured (a line per hparam or role)"),
        Line2D([], [], linestyle="none", marker="o", ms=9, mfc="none", mec="tab:red", mew=1.5, label="chosen value"),
        Line2D([], [], color="gray", linestyle=":", label="unpruned model"),
        Line2D([], [], color="tab:red", linestyle="--", lw=0.8, label="chosen subnet"),
    ]


def _figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a png at ``path``, whole or not at all (``nascli.atomic``: a full disk is one line)."""
    return atomic_write(path, lambda f: figure.savefig(f, format="png"))
