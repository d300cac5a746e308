"""Helpers of the NAS API that work on any model: inputs, flops, the hparams of a converted one, and the
switch of what converted models do on their own in train and eval mode (ModelOpt's patches)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ContextDecorator, contextmanager
from typing import Any

import torch
from torch import nn

from nascli.cost.constraints import resolve_constraints
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.errors import UserInputError
from nascli.space.export import export_model
from nascli.space.hparam import Hparam
from nascli.space.patches import patches_enabled, set_patches_enabled
from nascli.space.space import check_not_pending, get_space, is_converted, is_pending


def as_inputs(dummy_input: Any) -> tuple[torch.Tensor, ...]:
    """A dummy input given as one tensor or a tuple of forward arguments, as a tuple.

    ModelOpt also takes a trailing dict of keyword arguments; an empty one adds nothing, so
    ``(*args, kwargs)`` from a ModelOpt script works when the model takes no keyword inputs.
    """
    inputs = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    if inputs and isinstance(inputs[-1], dict):
        if inputs[-1]:
            raise UserInputError("dummy_input: keyword inputs are not supported; pass the inputs positionally")
        inputs = inputs[:-1]
    return inputs


def inference_flops(
    network: nn.Module,
    dummy_input: torch.Tensor | tuple | None = None,
    data_shape: Sequence[int] | None = None,
    unit: float = 1e6,
    return_str: bool = False,
) -> float | str:
    """Flops of one forward pass of the whole dummy batch, in ``unit`` (millions by default), as ModelOpt counts.

    ModelOpt's utility of this name counts two flops per multiply-accumulate over the whole
    batch, and code moving from ModelOpt reads its numbers that way, so this one does too.
    nascli's own costs (``profile``, ``search``, ``flops`` constraints) count multiply-accumulates
    per sample: divide by 2 and by the batch size to compare (docs/migrating-from-modelopt.md).
    A converted model is counted at its active subnet. The input is ``dummy_input`` or random
    values of ``data_shape``; ``return_str`` gives the number as text, as ModelOpt does.
    """
    if dummy_input is None:
        if data_shape is None:
            raise UserInputError("inference_flops: pass dummy_input or data_shape")
        dummy_input = torch.randn(*data_shape)
    inputs = as_inputs(dummy_input)
    model = export_model(network) if is_converted(network) else network
    flops = 2 * fvcore_flops(model, inputs) * inputs[0].shape[0] / unit
    return f"{flops:.2f}" if return_str else flops


def plain_model_stats(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], constraints: dict[str, Any] | None
) -> tuple[bool, dict[str, Any]]:
    """``profile``'s answer for a model that was not converted: its own costs under ``"full"``."""
    full = {"flops": fvcore_flops(model, inputs), "params": count_params(model)}
    bounds = resolve_constraints(constraints, full)
    checks = {key: {"upper_bound": bound, "satisfiable": full[key] <= bound} for key, bound in bounds.items()}
    return all(c["satisfiable"] for c in checks.values()), {"full": full, "constraints": checks}


def is_dynamic(model: nn.Module) -> bool:
    """Whether the model or any module in it was converted (and not exported since)."""
    return any(is_converted(module) or is_pending(module) for module in model.modules())


def converted_module(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(name, module) of the one converted module in ``model`` (``""`` for the model itself), None if none.

    ModelOpt's calls take the model holding a converted submodule as well as the submodule
    itself; a model with two converted modules is ambiguous and an error.
    """
    if is_converted(model):
        return "", model
    found = [(name, module) for name, module in model.named_modules() if is_converted(module)]
    if len(found) > 1:
        names = ", ".join(repr(name) for name, _ in found)
        raise UserInputError(f"{type(model).__name__} holds several converted modules ({names}); pass one of them")
    if not found:
        for module in model.modules():
            check_not_pending(module)  # converted without an input: no search space yet
    return found[0] if found else None


def named_hparams(model: nn.Module, configurable: bool | None = None) -> Iterator[tuple[str, Hparam]]:
    """(name, hparam) of every listed attribute (None), of the search dimensions (True), or of the
    fixed ones (False); ``hparam.choices`` and ``hparam.active`` read as in ModelOpt."""
    space = get_space(model)
    if configurable:
        yield from space.hparams.items()
    else:
        yield from ((n, hp) for n, hp in space.entries if configurable is None or not hp.is_configurable)


# -- ModelOpt's patch switch ---------------------------------------------------------------------
# A converted model samples a subnet per train-mode forward and calibrates BN on eval()
# (nascli/space/patches.py). ModelOpt calls that its "patches" and offers one global switch,
# used like torch.set_grad_enabled; these are its four names.


def is_modelopt_patches_enabled() -> bool:
    """Whether converted models sample in train mode and calibrate BN on ``eval()`` right now."""
    return patches_enabled()


class set_modelopt_patches_enabled:  # noqa: N801 (ModelOpt's name; a class so ``with`` can restore)
    """Switch the patches on or off now; as a context manager, restore the previous setting on exit.

    ``set_modelopt_patches_enabled(False)`` alone changes the global setting (as
    ``torch.set_grad_enabled`` does); ``with set_modelopt_patches_enabled(False): ...`` limits the
    change to the block, so a forward pass there neither samples nor caches its batch.
    """

    def __init__(self, enabled: bool) -> None:
        self.prev = patches_enabled()
        self.enabled = bool(enabled)
        set_patches_enabled(self.enabled)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        set_patches_enabled(self.prev)


class _PatchSwitch(ContextDecorator):
    """Set the patches to ``_value`` for a block or a decorated call and restore them afterwards.

    Settings are kept on a stack, so one instance used as a decorator of a recursive function
    (or entered twice) restores each level correctly.
    """

    _value: bool

    def __init__(self) -> None:
        self._saved: list[bool] = []

    def __enter__(self) -> None:
        self._saved.append(patches_enabled())
        set_patches_enabled(self._value)

    def __exit__(self, *exc: object) -> None:
        set_patches_enabled(self._saved.pop())


class no_modelopt_patches(_PatchSwitch):  # noqa: N801 (ModelOpt's name)
    """Run a block or a decorated function (``@no_modelopt_patches()``) without the patches.

    The model's own behaviour: train-mode forwards keep the active subnet and cache nothing,
    ``eval()`` neither switches the subnet nor touches BN statistics.
    """

    _value = False


class enable_modelopt_patches(_PatchSwitch):  # noqa: N801 (ModelOpt's name)
    """Run a block or a decorated function (``@enable_modelopt_patches()``) with the patches on,
    also inside a ``no_modelopt_patches`` block."""

    _value = True


@contextmanager
def replace_forward(model: nn.Module, new_forward: Callable) -> Iterator[None]:
    """Replace the forward of ``model``'s type for the block, as ModelOpt's ``replace_forward``.

    ``new_forward`` is a function taking the model (``self``) first or a method bound to the
    model; inside the block the original is ``model.forward_original``. As in ModelOpt, the
    type's forward is replaced, so every instance of that type runs ``new_forward`` meanwhile.
    """
    cls = type(model)
    cls.forward_original = cls.forward
    cls.forward = getattr(new_forward, "__func__", new_forward)
    try:
        yield
    finally:
        cls.forward = cls.forward_original
        del cls.forward_original
