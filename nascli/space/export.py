"""Export the active subnet of a converted model as a plain model of native layers.

Four forms, by who owns the weights afterwards (docs/architecture.md, Export):

- ``export_model``: a new model owning one compact copy of the subnet's weights, trained or
  changed without touching the converted model (a fine-tuned student, a scored candidate);
- ``export_in_place``: the converted model itself turns plain, each layer freeing its full tensors
  as it shrinks, so exporting a model as large as memory allows needs no second copy of it;
- ``export_max``: the max subnet as plain layers sharing the converted model's tensors (a
  frozen teacher, a model converted again), at no cost in memory;
- ``export_views``: the active subnet as plain layers holding views of the converted model's
  tensors: a frozen base for low-rank adapters, whose merge then lands in the converted model.
"""

from __future__ import annotations

import copy

from torch import nn

from nascli.space.kinds import DynamicModule
from nascli.space.kinds.base import sharing_active_views, sharing_whole_tensors
from nascli.space.patches import unpatch_train
from nascli.space.space import SPACE_ATTR, get_space, sample_in_training


def _structure_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are the same tensors as the original's."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=dict(shared))


def _make_native(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        if isinstance(module, DynamicModule):
            module.export_native()
    delattr(model, SPACE_ATTR)
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is sample_in_training:
            del model._forward_pre_hooks[key]
    unpatch_train(model)  # a plain model's train() and eval() are its class's again
    return model


def export_model(model: nn.Module) -> nn.Module:
    """A new model holding only native layers with copied, smaller weights.

    The converted model is left untouched, so a search can export several candidates. The
    module tree is copied without its tensors, then each layer copies only its active slice:
    one copy of the subnet, never one of the whole model.
    """
    get_space(model)
    return _make_native(_structure_copy(model))


def export_in_place(model: nn.Module) -> nn.Module:
    """Turn the converted ``model`` itself into the plain active subnet and return it.

    Layers the subnet uses whole keep their tensors; a shrunk layer's full tensors are freed as
    soon as its slice is copied (when nothing else holds them), so memory never holds the model
    twice.
    """
    get_space(model)
    with sharing_whole_tensors():
        return _make_native(model)


def export_max(model: nn.Module) -> nn.Module:
    """The max subnet (the model as built) as plain layers sharing the converted model's tensors; the
    active subnet and random sampling of ``model`` stay as they were. Not for training: an update
    of the export is an update of ``model``."""
    space = get_space(model)
    active, sampling = space.config(), space.sample_in_train
    space.sample("max")
    try:
        with sharing_whole_tensors():
            return _make_native(_structure_copy(model))
    finally:
        space.select(active)
        space.sample_in_train = sampling


def export_views(model: nn.Module) -> nn.Module:
    """The active subnet as plain layers whose tensors are views of the converted model's, at no cost
    in memory; ``model`` keeps its subnet and stays converted.

    Where a layer's active channels are not a leading slice (segments picked by index) its tensor
    is a copy. Not for training the weights themselves: an in-place update of a view is an update
    of ``model``, which is what merging adapters trained on a frozen view wants.
    """
    get_space(model)
    with sharing_active_views():
        return _make_native(_structure_copy(model))
