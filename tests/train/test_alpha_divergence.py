"""AlphaNet's alpha-divergence: its value is the divergence, its gradient the exact one where no ratio is clipped."""

import pytest
import torch

from nascli.train.alpha_divergence import alpha_divergence_loss


def _exact(student: torch.Tensor, teacher: torch.Tensor, a: float) -> torch.Tensor:
    """D_a(p || q) per row, written out (KL(p || q) at a = 1)."""
    log_q, log_p = student.log_softmax(-1), teacher.log_softmax(-1)
    if a == 1.0:
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    return ((a * log_p + (1 - a) * log_q).exp().sum(-1) - 1) / (a * (a - 1))


@pytest.mark.parametrize("alphas", [(-1.0, 1.0), (-0.5, 0.5)])
def test_value_and_gradient_are_the_larger_divergence_of_each_row(alphas):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    student = (teacher + 0.3 * torch.randn(6, 5, generator=generator, dtype=torch.float64)).requires_grad_()
    loss = alpha_divergence_loss(student, teacher, alphas, clip=1e9)
    (grad,) = torch.autograd.grad(loss, student)

    exact_student = student.detach().clone().requires_grad_()
    per_alpha = torch.stack([_exact(exact_student, teacher, a) for a in alphas])
    expected = per_alpha.max(0).values.mean()
    (expected_grad,) = torch.autograd.grad(expected, exact_student)
    assert (per_alpha[0] > per_alpha[1]).any() and (per_alpha[1] > per_alpha[0]).any()  # both kinds are picked
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_a_student_far_above_the_teacher_gets_a_bounded_gradient():
    teacher = torch.tensor([[10.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 10.0, 0.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(alpha_divergence_loss(student, teacher, (-1.0, 1.0), clip=5.0), student)
    assert torch.isfinite(grad).all() and grad.abs().max() <= 5.0
    assert alpha_divergence_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
