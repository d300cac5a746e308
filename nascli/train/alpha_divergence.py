"""AlphaNet's adaptive alpha-divergence for in-place distillation (Wang et al., 2021).

KL(teacher || student) lets a small subnet spread its mass where the teacher has little
(it barely penalises overestimating) and, reversed, makes it collapse onto the teacher's mode.
AlphaNet takes, per sample, the larger of two alpha-divergences, one of each kind (alpha = -1
and alpha = 1 by default), so whichever error the student makes on that sample is the one
penalised. The divergence between teacher p and student q is

    D_a(p || q) = (sum_i p_i^a q_i^(1-a) - 1) / (a (a - 1)),      D_1 = KL(p || q).

Its gradient with respect to the student's parameters is ``-(1/a) sum_i p_i^a q_i^(1-a) grad log
q_i``: the student's log-probabilities weighted by a detached "mass". For a < 1 that mass holds
the ratio (p/q)^a, which explodes where the student puts far more probability than the teacher;
AlphaNet clips the ratio power at ``clip`` (5), which bounds the gradient's variance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alpha_divergence_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    alphas: tuple[float, float] = (-1.0, 1.0),
    clip: float = 5.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The mean over rows of logits (..., classes) of the larger alpha-divergence, scaled by T^2.

    Its value is the divergence; its gradient is the clipped estimator's (module docstring).
    """
    classes, dtype = student.shape[-1], torch.promote_types(student.dtype, torch.float32)
    log_q = F.log_softmax(student.reshape(-1, classes).to(dtype) / temperature, -1)
    log_p = F.log_softmax(teacher.reshape(-1, classes).to(dtype).detach() / temperature, -1)
    values, surrogates = [], []
    for a in alphas:
        if a == 1.0:
            mass = log_p.exp()
            value = (mass * (log_p - log_q.detach())).sum(-1)
        else:
            ratio = torch.exp(a * (log_p - log_q.detach())).clamp(max=clip)
            mass = log_q.detach().exp() * ratio
            value = (mass.sum(-1) - 1) / (a * (a - 1))
        values.append(value)
        surrogates.append(-(mass * log_q).sum(-1) / a)
    values_t, surrogates_t = torch.stack(values), torch.stack(surrogates)
    pick = values_t.argmax(0, keepdim=True)
    value, surrogate = values_t.gather(0, pick)[0], surrogates_t.gather(0, pick)[0]
    per_row = value + surrogate - surrogate.detach()  # the divergence's value, the estimator's gradient
    return per_row.mean() * temperature * temperature
