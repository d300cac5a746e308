"""The train stage: a converted model in, a trained supernet and ``train.pt`` out; resumable."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from nascli.data import recipe_splits
from nascli.errors import UserInputError
from nascli.opt.checkpoint import build_checkpoint, write_checkpoint
from nascli.recipe.schema import Recipe
from nascli.stages.rundir import append_metrics, run_dir_lock, write_recipe
from nascli.train.distributed import Ranks, parameters_agree
from nascli.train.trainer import SupernetTrainer


def train_stage(
    model: nn.Module,
    recipe: Recipe,
    trainer_state: dict[str, Any] | None = None,
    ranks: Ranks = Ranks(),
    console: Console | None = None,
    show_progress: bool = False,
) -> Path:
    """Train the supernet as the recipe says, writing ``train.pt`` (with trainer state while unfinished)."""
    with run_dir_lock(recipe.run_dir) if ranks.main else nullcontext():
        return _train(model, recipe, trainer_state, ranks, console, show_progress)


def _train(
    model: nn.Module,
    recipe: Recipe,
    trainer_state: dict[str, Any] | None,
    ranks: Ranks,
    console: Console | None,
    show_progress: bool,
) -> Path:
    splits = recipe_splits(recipe)
    seed = recipe.train.seed if recipe.train.seed is not None else recipe.seed
    try:
        trainer = SupernetTrainer(model, splits, recipe.data, recipe.train, seed, ranks, console, show_progress)
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    if trainer_state is not None:
        trainer.load_state_dict(trainer_state)
    run_dir = Path(recipe.run_dir)
    path = run_dir / "train.pt"
    last: dict[str, Any] = {}

    def save(state: dict[str, Any] | None) -> None:
        if ranks.main:
            checkpoint = build_checkpoint(
                model, "train", recipe.model_dump(mode="json"), recipe.model.model_dump(mode="json"), last, state
            )
            checkpoint["subnet"] = None  # the whole space is trained: restore samples subnets again
            write_checkpoint(checkpoint, path)

    def log(record: dict[str, Any]) -> None:
        last.update(record)
        if ranks.main:
            append_metrics(run_dir, {"stage": "train", **record})
            if console is not None:
                metric = trainer.task.metric
                measured = "  ".join(f"{k} {record[k]:.4f}" for k in (f"{metric}_max", f"{metric}_min") if k in record)
                console.print(
                    f"epoch {record['epoch']}: loss {record['loss']:.4f}  lr {record['lr']:.4f}  {measured}  "
                    f"{record[f'{trainer.task.unit}_per_s']:.0f} {trainer.task.unit}/s  {record['seconds']:.1f}s",
                    markup=False,
                )

    trainer.fit(save, log)
    if not parameters_agree(model, ranks):
        raise RuntimeError("parameters differ between processes after training")
    if ranks.world > 1 and ranks.main:
        append_metrics(run_dir, {"stage": "train", "ranks": ranks.world, "parameters_agree": True})
    if ranks.main:
        write_recipe(recipe)
    return path
