import random

import pytest
import torch
from torch import nn

import nascli.nas as mtn
import nascli.train.sandwich as sandwich_module
from nascli.models import resnet20
from nascli.space.space import get_space
from nascli.train import recalibrate_bn, sandwich_step
from nascli.train.sandwich import student_rows

X, Y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))


def _model():
    return mtn.convert(resnet20(in_channels=1, width=32), dummy_input=X[:1])


class CountingSGD(torch.optim.SGD):
    steps = 0

    def step(self, closure=None):
        CountingSGD.steps += 1
        return super().step(closure)


def test_sandwich_runs_max_min_and_random_subnets_then_one_step(monkeypatch):
    model = _model()
    space = get_space(model)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(dict(space.config())))
    optimizer = CountingSGD(model.parameters(), lr=0.1)
    CountingSGD.steps = 0
    teachers = []
    real = sandwich_module.distillation_loss

    def spy(student, teacher, temperature=1.0):
        teachers.append(teacher)
        return real(student, teacher, temperature)

    monkeypatch.setattr(sandwich_module, "distillation_loss", spy)
    losses = sandwich_step(model, (X, Y), nn.CrossEntropyLoss(), optimizer, num_random=3, rng=random.Random(0))
    assert CountingSGD.steps == 1
    assert len(seen) == 5
    mtn.sample(model, "max")
    assert seen[0] == mtn.get_subnet_config(model, configurable=True)
    mtn.sample(model, "min")
    assert seen[1] == mtn.get_subnet_config(model, configurable=True)
    assert len({tuple(c.values()) for c in seen}) >= 3
    assert set(losses) == {"loss_max", "loss_min", "loss_random1", "loss_random2", "loss_random3"}
    assert len(teachers) == 4 and all(not t.requires_grad for t in teachers)
    assert all(torch.equal(t, teachers[0]) for t in teachers)


def test_without_distillation_every_subnet_learns_the_labels(monkeypatch):
    model = _model()
    calls = []
    monkeypatch.setattr(sandwich_module, "distillation_loss", lambda *a, **k: calls.append(1))
    labels = []

    def loss_fn(logits, targets):
        labels.append(targets)
        return nn.functional.cross_entropy(logits, targets)

    sandwich_step(model, (X, Y), loss_fn, torch.optim.SGD(model.parameters(), lr=0.1), num_random=1, distill=False)
    assert not calls and len(labels) == 3


def test_split_students_each_learn_their_own_rows_of_the_teachers_outputs(monkeypatch):
    """The min and 2 random subnets share the batch of 8 (2, 2 and 4 rows: even sizes), each distilled from the
    max's outputs on its rows; the max sees the whole batch."""
    model = _model()
    batches, outputs = [], []
    model.register_forward_pre_hook(lambda m, a: batches.append(a[0]))
    model.register_forward_hook(lambda m, a, out: outputs.append(out.detach()))
    pairs = []
    real = sandwich_module.distillation_loss

    def spy(student, teacher, temperature=1.0):
        pairs.append((student.shape[0], teacher))
        return real(student, teacher, temperature)

    monkeypatch.setattr(sandwich_module, "distillation_loss", spy)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sandwich_step(model, (X, Y), nn.CrossEntropyLoss(), optimizer, 2, rng=random.Random(0), split_students=True)
    assert [len(b) for b in batches] == [8, 2, 2, 4]
    assert torch.equal(torch.cat(batches[1:]), X)  # together the students read the batch once
    assert [rows for rows, _ in pairs] == [2, 2, 4]
    torch.testing.assert_close(torch.cat([t for _, t in pairs]), outputs[0], rtol=0, atol=0)


def test_split_students_refuse_outputs_whose_rows_are_not_the_batchs(monkeypatch):
    monkeypatch.setattr(sandwich_module, "logits_of", lambda out: out.repeat(2, 1))  # (batch x tokens, vocab)

    def flat_loss(logits, targets):
        return nn.functional.cross_entropy(logits, targets.repeat(2))

    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="outputs batch-first: 8 inputs gave 16 rows"):
        sandwich_step(model, (X, Y), flat_loss, optimizer, 1, rng=random.Random(0), split_students=True)


@pytest.mark.parametrize(
    "rows, students, sizes", [(128, 3, [42, 42, 44]), (128, 2, [64, 64]), (7, 3, [2, 2, 3]), (5, 3, [1, 2, 2]),
                              (2, 3, [1, 1, 1])],
)  # fmt: skip
def test_student_rows_are_even_where_the_batch_allows_and_never_empty(rows, students, sizes):
    shares = student_rows(rows, students)
    assert [s.stop - s.start for s in shares] == sizes
    assert shares[-1].stop == rows


def _weights_after_one_step(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(initial, stepped) flat weights of a fresh model after one sandwich step drawn with ``seed``."""
    torch.manual_seed(0)
    model = _model()
    initial = torch.cat([p.detach().flatten() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sandwich_step(model, (X, Y), nn.CrossEntropyLoss(), optimizer, rng=random.Random(seed))
    return initial, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_step_is_reproducible_for_a_seed():
    initial, first = _weights_after_one_step(5)
    _, again = _weights_after_one_step(5)
    _, other = _weights_after_one_step(6)
    assert not torch.equal(first, initial)  # the step trained
    assert torch.equal(first, again)  # the same seed, the same subnets and weights
    assert not torch.equal(first, other)  # another seed draws other random subnets


def test_bn_recalibration_is_the_average_over_batches():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    batches = [(torch.randn(5, 1, 6, 6) * (i + 1) + i,) for i in range(3)]
    model[1].running_mean.fill_(7.0)
    before = [p.clone() for p in model.parameters()]
    recalibrate_bn(model.eval(), batches, num_batches=3)
    with torch.no_grad():
        feats = [model[0](b[0]) for b in batches]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    variances = torch.stack([f.transpose(0, 1).flatten(1).var(1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, means)
    torch.testing.assert_close(model[1].running_var, variances)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not model.training and model[1].momentum == 0.1


def test_bn_recalibration_uses_the_active_subnet():
    model = _model()
    mtn.sample(model, "min")
    chosen = mtn.get_subnet_config(model)
    model.train()
    recalibrate_bn(model, [(X,)] * 2, num_batches=2)
    assert mtn.get_subnet_config(model) == chosen
    n = chosen["bn1.num_features"]
    assert model.bn1.running_mean[n:].abs().sum() == 0 and model.bn1.running_mean[:n].abs().sum() > 0


def test_bf16_autocast_runs_every_subnet_in_bfloat16_and_keeps_fp32_weights():
    model = _model()
    dtypes = []
    model.conv1.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = sandwich_step(model, (X, Y), nn.CrossEntropyLoss(), optimizer, num_random=1, autocast=torch.bfloat16)
    assert dtypes == [torch.bfloat16] * 3 and all(torch.isfinite(torch.tensor(list(losses.values()))))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _kl_and_kept_bytes(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(loss, the student's gradient, bytes autograd kept for backward) of the distillation loss."""
    student = student.detach().requires_grad_()
    kept = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = sandwich_module.distillation_loss(student, teacher, 2.0)
    loss.backward()
    return loss.detach(), student.grad, sum(kept)


def test_large_logits_are_distilled_chunk_by_chunk_to_the_same_loss_and_gradient(monkeypatch):
    """A language model's logits (tokens x vocabulary) reduced in chunks keep none of the float32
    temporaries of the whole: only the chunks' inputs, views of the logits themselves."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 32, 1000, generator=generator).bfloat16()
    teacher = torch.randn(4, 32, 1000, generator=generator).bfloat16()
    whole, whole_grad, whole_kept = _kl_and_kept_bytes(student, teacher)
    monkeypatch.setattr(sandwich_module, "KL_CHUNK_ELEMENTS", 10 * 1000)  # 13 chunks of up to 10 rows
    chunked, chunked_grad, chunked_kept = _kl_and_kept_bytes(student, teacher)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=0)
    torch.testing.assert_close(chunked_grad.float(), whole_grad.float(), rtol=0, atol=1e-6)
    assert whole_kept >= 2 * student.numel() * 4  # float32 log-softmaxes of the whole
    assert chunked_kept <= 2 * student.numel() * 2  # the bfloat16 logits' chunks, nothing more
