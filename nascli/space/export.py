"""Export the active subnet of a converted model as a plain model of native layers."""

from __future__ import annotations

import copy

from torch import nn

from nascli.space.kinds import DynamicModule
from nascli.space.space import SPACE_ATTR, get_space, sample_in_training


def export_model(model: nn.Module) -> nn.Module:
    """A new model holding only native layers with copied, smaller weights.

    The converted model is left untouched, so a search can export several candidates.
    """
    get_space(model)
    exported = copy.deepcopy(model)
    for module in list(exported.modules()):
        if isinstance(module, DynamicModule):
            module.export_native()
    delattr(exported, SPACE_ATTR)
    for key, hook in list(exported._forward_pre_hooks.items()):
        if hook is sample_in_training:
            del exported._forward_pre_hooks[key]
    return exported


def export_max(model: nn.Module) -> nn.Module:
    """The max subnet (the model as built) as plain layers; the active subnet and random sampling
    of ``model`` stay as they were."""
    space = get_space(model)
    active, sampling = space.config(), space.sample_in_train
    space.sample("max")
    try:
        return export_model(model)
    finally:
        space.select(active)
        space.sample_in_train = sampling
