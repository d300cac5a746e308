"""Tasks: per-token loss and perplexity for language models, accuracy for classifiers, logits of any output."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from nascli.errors import UserInputError
from nascli.train.sandwich import distillation_loss
from nascli.train.task import Classification, LanguageModeling, logits_of, task_of


class _Bigram(torch.nn.Module):
    """A language model that returns a Hugging Face-like output with ``logits``."""

    def __init__(self, vocab=11):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return SimpleNamespace(logits=self.table(ids))


def test_perplexity_is_the_exponential_of_the_mean_token_loss():
    torch.manual_seed(0)
    model = _Bigram()
    ids = torch.randint(0, 11, (6, 9))
    loader = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=4)  # batches of 4 and 2 sequences
    metrics = LanguageModeling(11).evaluate(model, loader)
    expected = F.cross_entropy(model(ids[:, :-1]).logits.reshape(-1, 11), ids[:, 1:].reshape(-1))
    assert metrics["nll"] == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(expected.item()), rel=1e-5)
    assert LanguageModeling(11).score(metrics) == -metrics["ppl"]


def test_the_training_loss_is_per_token_and_counts_tokens():
    task = LanguageModeling(11)
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    assert task.loss(logits, targets) == pytest.approx(F.cross_entropy(logits.reshape(10, 11), targets.reshape(10)))
    assert task.count(targets) == 10 and Classification().count(targets) == 2


def test_a_model_with_a_smaller_vocabulary_than_the_tokenizer_is_one_clear_line():
    with pytest.raises(UserInputError, match="predicts 8 tokens, fewer than the tokenizer's 11"):
        LanguageModeling(11).loss(torch.randn(1, 3, 8), torch.zeros(1, 3, dtype=torch.long))


def test_distillation_of_sequences_is_per_token():
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    flat = distillation_loss(student.reshape(10, 11), teacher.reshape(10, 11), 2.0)
    assert distillation_loss(student, teacher, 2.0) == pytest.approx(flat.item())
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_logits_of_tensors_model_outputs_and_tuples():
    x = torch.ones(2)
    assert logits_of(x) is x and logits_of(SimpleNamespace(logits=x)) is x and logits_of((x, None)) is x


def test_the_task_follows_the_data():
    assert isinstance(task_of(SimpleNamespace(task="language_modeling", num_classes=5)), LanguageModeling)
    assert type(task_of(SimpleNamespace(task="classification", num_classes=5))) is Classification
