"""The search space of a converted model: its hparams, subnet configs, sampling and summary."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from nascli.errors import UserInputError
from nascli.space.hparam import Hparam
from nascli.space.patches import before_forward, default_patch_data

SPACE_ATTR = "_nascli_space"
#: a model converted without an input whose conversion waits for its first one (nascli/nas/deferred.py)
PENDING_ATTR = "_nascli_pending_conversion"


def on_meta_device(model: nn.Module) -> bool:
    """Whether the model holds shapes only: parameters on the meta device, no data to store or read."""
    return any(p.is_meta for p in model.parameters())


def parameter_device(model: nn.Module) -> Any:
    """The device of the model's parameters (None for a model without any): where its example inputs go."""
    return next((p.device for p in model.parameters()), None)


def example_inputs(
    shapes: list, dtypes: list[str] | None = None, batch: int | None = None, device: Any = None
) -> tuple:
    """Inputs of the recorded shapes and dtypes on ``device``: random floats, or zeros for integers (token ids)."""
    import torch

    found = []
    for i, shape in enumerate(shapes):
        dtype = getattr(torch, (dtypes or [])[i] if dtypes and i < len(dtypes) else "float32")
        size = (batch, *shape[1:]) if batch is not None else tuple(shape)
        floats = dtype.is_floating_point
        found.append(torch.randn(*size, device=device) if floats else torch.zeros(*size, dtype=dtype, device=device))
    return tuple(found)


class SearchSpace:
    """All hparams of a converted model, listed per layer attribute.

    ``entries`` names every resizable attribute (``layer1.0.conv1.out_channels``) and the hparam it
    follows; several attributes of one channel group share an hparam, which is named after the
    first of them. The configurable hparams (more than one choice) are the search dimensions.
    """

    def __init__(
        self,
        entries: list[tuple[str, Hparam]],
        modes: list[tuple[str, dict]],
        input_shapes: list[tuple[int, ...]],
        shapes: dict[str, list[tuple[Any, Any]]],
        cost_terms: list[Any],
        cost_unmodeled: list[str],
    ) -> None:
        self.entries = entries
        self.cost_terms = cost_terms
        self.cost_unmodeled = cost_unmodeled
        self.modes = modes
        self.input_shapes = input_shapes
        self.input_dtypes: list[str] = ["float32"] * len(input_shapes)  # "int64" for token ids
        # the dummy input itself, where the trace followed its values (sizes the data decides); else None
        self.input_values: list[Any] | None = None
        self.shapes = shapes
        self.sample_in_train = True
        # ModelOpt's per-model bookkeeping of train-mode sampling and BN calibration (space/patches.py)
        self.patch_data: dict[str, Any] = default_patch_data()
        # how the channels were last sorted ("weights", "activations"), None if never: a search sorts once
        self.sorted_by: str | None = None
        # every sort since conversion, each {hparam name: new order}: the weights as built, permuted
        # by these in turn, are the weights now if nothing trained them (space/importance.py)
        self.channel_orders: list[dict[str, list[int]]] = []
        # depth hparam -> each block's rank: a depth d keeps the blocks ranked below d (default: the first d)
        self.block_ranks: dict[str, list[int]] = {}
        self.fixed_reasons: dict[str, str] = {}  # fixed hparam name -> why it is fixed
        self.untraceable: dict[str, str] = {}  # module kept whole -> why fx could not trace it
        # entry -> entries per choice, for an attribute sized by whole heads or flattened maps
        self.entry_scales: dict[str, int] = {}
        # what the converted model was (``model_attributes``): a restore into another one is refused
        self.model_attributes: dict[str, Any] = {}
        # the conversions exported before this one, oldest first, each as a checkpoint records it
        # (plain data): a chain of modes such as autonas, export_nas, fastnas (nascli/opt/checkpoint.py)
        self.history: list[dict[str, Any]] = []
        self._by_name = dict(entries)
        self.hparams: dict[str, Hparam] = {name: hp for name, hp in entries if name == hp.name and hp.is_configurable}

    def block_rank(self, depth: str, index: int) -> int:
        """The rank of block ``index`` of the stack ``depth`` sizes: it runs while the depth exceeds it."""
        ranks = self.block_ranks.get(depth)
        return ranks[index] if ranks is not None else index

    # -- configs -------------------------------------------------------------------------------
    def config(self, configurable: bool | None = True) -> dict[str, Any]:
        """Active values: of the search dimensions (True), of every attribute (None), of fixed ones (False)."""
        if configurable:
            return {name: hp.active for name, hp in self.hparams.items()}
        if configurable is None:
            return {name: hp.active for name, hp in self.entries}
        return {name: hp.active for name, hp in self.entries if not hp.is_configurable}

    def select(self, config: dict[str, Any]) -> None:
        """Activate a subnet; keys may name any listed attribute, dependent ones included."""
        chosen: dict[int, tuple[str, Any]] = {}
        for name, value in config.items():
            hp = self._by_name.get(name)
            if hp is None:
                raise UserInputError(f"subnet config: {name!r} is not an hparam of this search space")
            if not _is_choice(value, hp.choices):
                raise UserInputError(f"subnet config: {name}={value!r} is not one of {list(hp.choices)}")
            earlier = chosen.get(id(hp))
            if earlier is not None and earlier[1] != value:
                raise UserInputError(
                    f"subnet config: {name}={value!r} contradicts {earlier[0]}={earlier[1]!r} (same hparam)"
                )
            chosen[id(hp)] = (name, value)
        for name, value in chosen.values():
            self._by_name[name].active = value
        self.sample_in_train = False

    def sample(self, how: str | Callable | dict[str, str | Callable] = random.choice) -> dict[str, Any]:
        """Activate a subnet chosen per hparam by "min", "max", "centroid", "random" or a callable.

        A dict maps fnmatch patterns on hparam names to one of those and the first pattern that
        matches an hparam wins, as in ModelOpt's ``SearchSpace.sample`` (so ``{"layer4.*": max,
        "*": "random"}`` keeps layer4 at its largest); unmatched hparams are drawn at random. A
        pattern that matches no hparam is an error: it is a typo or a name of another model.
        """
        if isinstance(how, dict):
            self._check_patterns(how)
        for name, hp in self.hparams.items():
            rule = _first_match(name, how) if isinstance(how, dict) else how
            hp.active = _choose(hp, rule)
        self.sample_in_train = False
        return self.config()

    def _check_patterns(self, rules: dict[str, Any]) -> None:
        for pattern in rules:
            if not any(fnmatchcase(name, pattern) for name in self.hparams):
                names = ", ".join(list(self.hparams)[:3])
                raise UserInputError(f"sample: pattern {pattern!r} matches no hparam (they are named like {names})")

    def size(self) -> int:
        return math.prod(len(hp.choices) for hp in self.hparams.values())

    def summary(self, verbose: bool = False, skipped: tuple[str, ...] = ()) -> str:
        """ModelOpt's summary layout; ``verbose`` adds each fixed dimension and why it is fixed.

        Attributes whose name ends with one of ``skipped`` are left out, as ModelOpt's
        ``skipped_hparams``; the counts below still cover the whole space.
        """
        lines = ["Search Space Summary:"]
        for name, hp in self.entries:
            if name.endswith(skipped):
                continue
            mark = "*" if name in self.hparams else " "
            scale = f" x {self.entry_scales[name]}" if name in self.entry_scales else ""  # heads x head size
            lines.append(f"{mark} {name:<80} {list(hp.choices)}{scale}")
        lines.append(f"Number of configurable hparams: {len(self.hparams)}")
        lines.append(f"Total size of the search space: {self.size():.2e}")
        if verbose:
            lines.extend(self._explain())
        return "\n".join(lines)

    def _explain(self) -> list[str]:
        tied: dict[str, int] = {}
        for _, hp in self.entries:
            tied[hp.name] = tied.get(hp.name, 0) + 1
        lines = ["Fixed dimensions and why (attributes tied to each in parentheses):"]
        for name, why in self.fixed_reasons.items():
            lines.append(f"  {f'{name} ({tied.get(name, 1)})':<60} {why}")
        for name, why in self.untraceable.items():
            lines.append(f"  {f'{name} (kept whole)':<60} fx cannot trace it: {why}")
        return lines


def _first_match(name: str, rules: dict[str, Any]) -> Any:
    """The rule of the first pattern matching ``name`` (random when none does)."""
    return next((rule for pattern, rule in rules.items() if fnmatchcase(name, pattern)), random.choice)


def _is_choice(value: Any, choices: Any) -> bool:
    """Whether ``value`` is one of ``choices``; ``True`` is not the choice 1 (``True == 1`` in Python)."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        return False
    return value in choices


def _choose(hp: Hparam, rule: Any) -> Any:
    if rule in ("min", min):
        return hp.min
    if rule in ("max", max):
        return hp.max
    if rule == "centroid":
        return hp.centroid
    if rule == "random":
        return random.choice(hp.choices)
    if callable(rule):
        value = rule(hp.choices)
        if value not in hp.choices:
            raise UserInputError(f"sample: {hp.name}: the sample function returned {value!r}, not a choice")
        return value
    raise UserInputError(f"sample: unknown sampling rule {rule!r} (use min, max, centroid, random or a function)")


def model_attributes(model: nn.Module) -> dict[str, Any]:
    """The class name and the name of the ``forward`` that a conversion of ``model`` traced.

    As ModelOpt records them: a checkpoint restored into a model of another class, or one whose
    ``forward`` was replaced on the instance, would rebuild the search space of other code.
    """
    return {"type": type(model).__name__, "forward": getattr(model.forward, "__name__", None)}


def get_space(model: nn.Module) -> SearchSpace:
    space = getattr(model, SPACE_ATTR, None)
    if space is None:
        check_not_pending(model)
        raise UserInputError(f"{type(model).__name__} is not a converted model: call nascli.nas.convert first")
    return space


def is_pending(model: nn.Module) -> bool:
    """Whether ``model`` was converted without an input and its search space waits for its first one."""
    return getattr(model, PENDING_ATTR, None) is not None


def check_not_pending(model: nn.Module) -> None:
    """The error for a call that needs the search space of a model whose conversion waits for an input."""
    if is_pending(model):
        raise UserInputError(
            f"{type(model).__name__} was converted without an input and its search space is built on the first one:"
            " run a forward on a batch, or pass dummy_input (to nascli.nas.convert, profile or search)"
        )


def is_converted(model: nn.Module) -> bool:
    return getattr(model, SPACE_ATTR, None) is not None


def sample_in_training(model: nn.Module, args: tuple, kwargs: dict[str, Any] | None = None) -> None:
    """Forward pre-hook: in train mode, each forward runs a freshly drawn random subnet.

    It also caches batches for BN calibration on ``eval()``, and does nothing while ModelOpt's
    patches are switched off (space/patches.py).
    """
    before_forward(model, getattr(model, SPACE_ATTR), args, kwargs)


class random_sampling:
    """Turn per-forward random subnets in train mode on or off.

    Called plainly it changes the setting; used as a context manager it restores the previous
    setting on exit.
    """

    def __init__(self, model: nn.Module, enabled: bool = True) -> None:
        self._space = get_space(model)
        self._previous = self._space.sample_in_train
        self._space.sample_in_train = enabled

    def __enter__(self) -> random_sampling:
        return self

    def __exit__(self, *exc: object) -> None:
        self._space.sample_in_train = self._previous
