"""What a model learns and how it is measured: classification (accuracy) or language modeling (perplexity).

Every stage that trains, scores or evaluates asks the task of its data (``Splits.task``) for the
loss, the metrics and the search score, so the loops stay the same for images and text. A model
may return a tensor of logits or a Hugging Face ``ModelOutput`` (its ``logits``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from nascli.errors import UserInputError
from nascli.train.device import model_device


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, a ModelOutput's ``logits``, or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else output[0]


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of the active subnet in eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    device = model_device(model)
    for inputs, targets in loader:
        correct += (logits_of(model(inputs.to(device))).argmax(-1).cpu() == targets).sum().item()
        total += len(targets)
    model.train(was_training)
    return correct / max(1, total)


class Classification:
    """Cross entropy on one label per sample; top-1 accuracy, higher is better."""

    metric = "acc"
    unit = "images"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, targets)

    def count(self, targets: torch.Tensor) -> int:
        """Samples in a batch, for the throughput shown."""
        return len(targets)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        return {"acc": accuracy(model, loader)}

    def score(self, metrics: dict[str, float]) -> float:
        """The number a search maximizes."""
        return metrics["acc"]

    def check_model(self, model: nn.Module) -> None:
        """Refuse (one line) a model that cannot learn this task, before any batch reaches it."""


class LanguageModeling(Classification):
    """Next-token cross entropy over every position; perplexity, lower is better (the score is its negative)."""

    metric = "ppl"
    unit = "tokens"

    def __init__(self, vocab_size: int, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        self.vocab_size = vocab_size

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check_vocabulary(logits)
        return self.loss_fn(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def count(self, targets: torch.Tensor) -> int:
        return targets.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Mean next-token loss (nats) over every token of ``loader``, and its exponential, the perplexity."""
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        device = model_device(model)
        for inputs, targets in loader:
            logits = logits_of(model(inputs.to(device)))
            self._check_vocabulary(logits)
            flat = logits.reshape(-1, logits.shape[-1]).float()
            total += F.cross_entropy(flat, targets.to(device).reshape(-1), reduction="sum").item()
            tokens += targets.numel()
        model.train(was_training)
        loss = total / max(1, tokens)
        return {"ppl": math.exp(min(loss, 50.0)), "nll": loss}

    def score(self, metrics: dict[str, float]) -> float:
        return -metrics["ppl"]

    @torch.no_grad()
    def check_model(self, model: nn.Module) -> None:
        """The model must read and predict every token id: a forward on the largest id, in eval mode."""
        was_training = model.training
        model.eval()
        try:
            ids = torch.full((1, 2), self.vocab_size - 1, dtype=torch.long, device=model_device(model))
            self._check_vocabulary(logits_of(model(ids)))
        except (IndexError, RuntimeError) as exc:
            raise UserInputError(
                f"model: it cannot read token id {self.vocab_size - 1} of the tokenizer's {self.vocab_size}"
                f" (data.tokenizer, or data.vocab_size for a trained one): {str(exc).splitlines()[0]}"
            ) from exc
        finally:
            model.train(was_training)

    def _check_vocabulary(self, logits: torch.Tensor) -> None:
        if logits.shape[-1] < self.vocab_size:
            raise UserInputError(
                f"model: it predicts {logits.shape[-1]} tokens, fewer than the tokenizer's {self.vocab_size}"
                " (data.tokenizer, or data.vocab_size for a trained one)"
            )


def task_of(splits: Any, label_smoothing: float = 0.0) -> Classification:
    """The task of a dataset (``nascli.data.Splits``)."""
    if splits.task == "language_modeling":
        return LanguageModeling(splits.num_classes, label_smoothing)
    return Classification(label_smoothing)
