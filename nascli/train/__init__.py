"""Supernet training: the sandwich rule with in-place distillation, BN recalibration, the trainer."""

from nascli.train.bn import recalibrate_bn
from nascli.train.sandwich import distillation_loss, sandwich_step

__all__ = ["distillation_loss", "recalibrate_bn", "sandwich_step"]
