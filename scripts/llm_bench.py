"""What the language-model benchmarks share: the teacher and its data, perplexity, training, tables.

Imported by scripts/bench_llm_prune.py and scripts/bench_llm_autonas.py (run from the repository
root; each script's folder is on the import path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Subset

import nascli.nas as mtn
import nascli.opt as mto
from nascli.data import Splits, recipe_splits
from nascli.opt.checkpoint import read_checkpoint
from nascli.recipe.load import load_recipe
from nascli.recipe.schema import Recipe
from nascli.train.task import LanguageModeling
from nascli.train.trainer import SubnetTrainer


@dataclass
class Teacher:
    """A pretrained teacher as plain layers, the recipe it learned with and its data."""

    recipe: Recipe
    splits: Splits
    task: LanguageModeling
    model: torch.nn.Module
    val32: DataLoader  # what a search scores a candidate on
    test: DataLoader
    calib: DataLoader  # the importance pass's sequences
    dummy: tuple[torch.Tensor]


def load_teacher(path: str, recipe_path: str, test_sequences: int) -> Teacher:
    """train.pt of recipes/tiny_llama.yaml, with the fine-tuning settings of ``recipe_path``."""
    recipe = Recipe(**read_checkpoint(path)["recipe"])  # the data and model the teacher learned
    recipe = recipe.model_copy(update={"finetune": load_recipe(recipe_path).finetune})
    splits = recipe_splits(recipe)
    restored = mto.restore(None, path)
    mtn.sample(restored, "max")
    return Teacher(
        recipe, splits, LanguageModeling(splits.num_classes), mtn.export_copy(restored).eval(),
        DataLoader(Subset(splits.val, range(32)), batch_size=32),
        DataLoader(Subset(splits.test, range(test_sequences)), batch_size=64),
        DataLoader(Subset(splits.train, range(recipe.search.importance_samples)), batch_size=32),
        (torch.zeros(1, recipe.input_shape[0], dtype=torch.long),),
    )  # fmt: skip


def ppl(model: torch.nn.Module, task: LanguageModeling, loader: DataLoader) -> float:
    return task.evaluate(model, loader)["ppl"]


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def limited(teacher: Teacher, steps: int) -> Splits:
    """The teacher's splits with the first ``steps`` batches of training sequences."""
    s, batch = teacher.splits, teacher.recipe.data.batch_size
    return Splits(Subset(s.train, range(steps * batch)), s.val, s.test, s.num_classes, s.input_shape, s.task)


def train_subnet(student, teacher: Teacher, steps: int, seed: int, distill: bool, lr: float) -> tuple[float, int]:
    """Train ``student`` for ``steps`` batches with nascli's fine-tuning trainer, distilled from the
    teacher (the recipe's mix and teacher precision) or from the labels; returns (seconds, tokens)."""
    recipe = teacher.recipe
    spec = recipe.train.model_copy(update={"epochs": 1, "lr": lr, "warmup_epochs": 0.05})
    data = recipe.data.model_copy(update={"eval_batch_size": 64})
    mix = {"temperature": recipe.finetune.temperature, "distill_weight": recipe.finetune.distill_weight,
           "teacher_autocast": torch.bfloat16 if recipe.finetune.teacher_bf16 else None}  # fmt: skip
    trainer = SubnetTrainer(
        student, limited(teacher, steps), data, spec, seed, teacher=teacher.model if distill else None, **mix
    )
    trainer.val = DataLoader(Subset(teacher.splits.val, range(64)), batch_size=64)  # a short per-epoch check
    start = time.perf_counter()
    trainer.fit(lambda state: None, lambda record: None)
    return time.perf_counter() - start, steps * recipe.data.batch_size * recipe.input_shape[0]


def print_tables(header: str, tables: list[tuple[str, list[str], list[tuple]]], markdown: bool) -> None:
    console = Console()
    console.print(header)
    for title, columns, rows in tables:
        if markdown:
            print(f"\n{title}\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            table = Table(*columns, title=title)
            for row in rows:
                table.add_row(*row)
            console.print(table)
