"""The search space that nascli and ModelOpt both search, for the benchmarks that compare them.

Shared by bench_search.py and bench_supernet.py: the ModelOpt rules that give ModelOpt the same
space nascli builds from a conv channel divisor, the check that both spaces agree, a score
function that counts the candidates a search scored, and uniform subnets (every hparam at one
share of its maximum), the baseline a searched subnet must beat.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.utils.data import DataLoader

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.train.trainer import accuracy

RATIOS = (0.5, 0.67, 1.0)


def modelopt_rules(divisor: int) -> list:
    """ModelOpt's autonas rules that give the search space nascli builds with this conv channel divisor.

    Given the conv's divisor alone, ModelOpt ties a conv's width to its batch norm's, whose default
    divisor (32) then wins, and lets a sequential stage shrink to depth 0 where nascli keeps one
    block: on ResNet-20 it would search 6 hparams where nascli searches 14. ``check_same_space``
    says whether the two spaces agree.
    """
    rules = {
        "nn.Conv2d": {"*": {"channels_ratio": RATIOS, "kernel_size": (), "channel_divisor": divisor}},
        "nn.BatchNorm2d": {"*": {"features_ratio": RATIOS, "feature_divisor": divisor}},
        "nn.Sequential": {"*": {"min_depth": 1}},
    }
    return [("autonas", rules)]


def check_same_space(ours: nn.Module, theirs: nn.Module) -> dict[str, tuple]:
    """The hparams and choices both engines search; exits when ModelOpt's differ from nascli's.

    A comparison on different spaces would compare the spaces, not the engines.
    """
    from modelopt.torch.opt.utils import named_hparams

    found = {name: tuple(hp.choices) for name, hp in named_hparams(theirs, configurable=True)}
    space = {name: tuple(hp.choices) for name, hp in cost_model(ours).space.hparams.items()}
    if found != space:
        raise SystemExit(f"ModelOpt's search space differs from nascli's: {found} against {space}")
    return space


class CountedScore:
    """A search's ``score_func`` (top-1 on ``loader``) that counts its calls: the candidates a search scored.

    ModelOpt's search reports samples, not scores; this is how both engines' searches are compared.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.calls = loader, 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        return accuracy(model, self.loader)


def uniform_configs(
    model: nn.Module, vary: Callable[[str], bool] = lambda name: True
) -> list[tuple[float, dict[str, int]]]:
    """(share, config) for each share of the maximum, smallest first: each hparam ``vary`` accepts
    takes its choice nearest that share (the larger one on a tie), the others their maximum."""
    space = cost_model(model).space
    hparams = {name: space.hparams[name] for name in mtn.get_subnet_config(model, configurable=True)}
    varied = [name for name in hparams if vary(name)]
    shares = sorted({c / max(hparams[n].choices) for n in varied for c in hparams[n].choices})

    def nearest(name: str, share: float) -> int:
        top = max(hparams[name].choices)
        return min(hparams[name].choices, key=lambda c: (abs(c / top - share), -c))

    return [
        (share, {name: nearest(name, share) if name in varied else max(hp.choices) for name, hp in hparams.items()})
        for share in shares
    ]
