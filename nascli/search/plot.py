"""The Pareto plot of a search: every candidate, the front, the chosen subnet and the budget."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pareto_plot(
    flops: list[int], scores: list[float], front: list[int], best: int, bound: float | None, path: Path
) -> Path:
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    axes.scatter([f / 1e6 for f in flops], scores, s=10, alpha=0.4, label="candidates")
    axes.plot([flops[i] / 1e6 for i in front], [scores[i] for i in front], "-o", ms=4, color="tab:orange",
              label="Pareto front")  # fmt: skip
    axes.scatter([flops[best] / 1e6], [scores[best]], marker="*", s=200, color="tab:red", zorder=5, label="chosen")
    if bound is not None:
        axes.axvline(bound / 1e6, color="gray", linestyle="--", label="flops bound")
    axes.set_xlabel("flops (M multiply-accumulates per sample)")
    axes.set_ylabel("score")
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    tmp.replace(path)
    return path
