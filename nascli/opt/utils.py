"""ModelOpt's ``opt.utils`` helpers that work on a converted model, under the same import path."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from nascli.nas.utils import is_dynamic, named_hparams
from nascli.space.hparam import Hparam
from nascli.space.kinds import DynamicModule
from nascli.space.space import get_space, is_converted

__all__ = ["get_hparam", "is_configurable", "is_dynamic", "named_dynamic_modules", "named_hparams", "search_space_size"]


def search_space_size(model: nn.Module) -> int:
    """How many subnets the model's search space holds: the product of its search dimensions' choices
    (1 for a model that is not converted, as ModelOpt counts an empty space)."""
    return get_space(model).size() if is_converted(model) else 1


def is_configurable(model: nn.Module) -> bool:
    """Whether the model has a search dimension (an attribute with more than one choice)."""
    return is_converted(model) and bool(get_space(model).hparams)


def get_hparam(model: nn.Module, name: str) -> Hparam:
    """The hparam of a listed attribute, by the name ``named_hparams`` gives it."""
    found = dict(named_hparams(model))
    if name not in found:
        raise KeyError(f"{name!r} is not an attribute of the model's search space")
    return found[name]


def named_dynamic_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of each layer the conversion made searchable."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, DynamicModule))
