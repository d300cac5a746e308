"""Which hparams the model's own code can run at their smallest choice: the forward check of conversion.

``torch.export`` records sizes the model computes from its inputs' shapes as constants, so the
tracer cannot tell ``x.reshape(B, N, C)`` with ``C = x.shape[-1]`` from a truly fixed size.
Running the converted model tells: where the forward fails with an hparam at its smallest choice
(the others at their largest), that hparam keeps its full size.

Checking each hparam in a forward of its own costs one forward of the whole model per hparam:
for an 80-layer model of 161 hparams, 161 forwards through 80 layers. Hparams held in disjoint
module subtrees (layer 3's MLP width and layer 7's) are checked in the same forward instead, so
such a model takes three. This rests on what the tracer guarantees: channels that meet in an
operation (added, multiplied, concatenated) share one hparam, and every layer reading an
hparam's channels holds it. So the channels of an hparam held only inside subtree X never
leave X, code outside X sees the same shapes whether it shrinks or not, and a forward with
hparams of several disjoint subtrees at their min fails where one of them fails alone. Code
outside X that read a size off X's tensors and wrote it into a reshape of another subtree's
would escape this; it would be comparing two subtrees' internals by shape alone.

A round that fails is split in halves until each failing hparam is found alone, with its own
error message. Hparams of nested or equal subtrees (a layer's key/value groups and its query
heads per group, both held in its attention; the hidden width, held by the whole model) never
share a round: sizes the model's code writes out as constants can agree when both shrink and
fail when one does. docs/architecture.md ("Transformers") places this step in conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from nascli.space.hparam import Grouped, Hparam, Scaled, Segments, dim_parts
from nascli.space.kinds import DynamicModule
from nascli.space.kinds.module_list import indexing_as_exported
from nascli.space.space import on_meta_device
from nascli.space.trace import buffers_kept

Path = tuple[str, ...]
Freeze = Callable[[Hparam, str], None]


@torch.no_grad()
def keep_what_runs(model: nn.Module, hparams: Iterable[Hparam], dummy_input: tuple, freeze: Freeze) -> int:
    """Call ``freeze(hp, why)`` for each configurable hparam the model's forward fails with at its min.

    Returns the number of checking forwards run (the rounds, and the halves of those that failed).
    """
    was_training = model.training
    model.eval()
    try:
        with buffers_kept(model), indexing_as_exported():
            run = forward_runner(model, dummy_input)
            configurable = list({id(hp): hp for hp in hparams if hp.is_configurable}.values())
            rounds = disjoint_rounds(configurable, hparam_scopes(model))
            return sum(_check(run, members, freeze) for members in rounds)
    finally:
        model.train(was_training)


def hparam_scopes(model: nn.Module) -> dict[int, Path]:
    """By hparam id, the deepest module path holding every module that holds the hparam."""
    scopes: dict[int, Path] = {}
    for name, module in model.named_modules():
        if not isinstance(module, DynamicModule):
            continue
        path = tuple(name.split(".")) if name else ()
        for hp in _held(module):
            known = scopes.get(id(hp))
            scopes[id(hp)] = path if known is None else _common_prefix(known, path)
    return scopes


def disjoint_rounds(hparams: list[Hparam], scopes: dict[int, Path]) -> list[list[Hparam]]:
    """Hparams in rounds whose scopes are pairwise disjoint subtrees, in the order given.

    An hparam no module holds has the whole model as its scope and gets a round of its own.
    """
    rounds: list[tuple[list[Hparam], list[Path]]] = []
    for hp in hparams:
        scope = scopes.get(id(hp), ())
        for members, taken in rounds:
            if not any(_nested(scope, other) for other in taken):
                members.append(hp)
                taken.append(scope)
                break
        else:
            rounds.append(([hp], [scope]))
    return [members for members, _ in rounds]


def _check(run: Callable[[], Any], members: list[Hparam], freeze: Freeze) -> int:
    """Run with every member at its min; find the members that fail alone. Returns the forwards run."""
    message = _failure(run, members)
    return 1 + (_locate(run, members, message, freeze) if message else 0)


def _locate(run: Callable[[], Any], members: list[Hparam], message: str, freeze: Freeze) -> int:
    """``members`` fail together with ``message``: freeze those that fail alone. Returns the forwards run.

    Where exactly one half fails, the search goes on in it, so one failure among n costs about
    2 log2(n) forwards. Where both halves fail (failures are many: a layer kind failing in every
    layer) or neither does, every member is run alone, so the check never costs much more than
    running each hparam alone.
    """
    if len(members) == 1:
        _freeze(members[0], message, freeze)
        return 0
    half = len(members) // 2
    parts = [(part, _failure(run, part)) for part in (members[:half], members[half:])]
    failing = [(part, why) for part, why in parts if why]
    if len(failing) == 1:
        return 2 + _locate(run, *failing[0], freeze)
    forwards = 2
    for part, why in parts:
        if len(part) == 1:
            if why:
                _freeze(part[0], why, freeze)
            continue
        for hp in part:
            forwards += 1
            if why := _failure(run, [hp]):
                _freeze(hp, why, freeze)
    return forwards


def _freeze(hp: Hparam, error: str, freeze: Freeze) -> None:
    freeze(hp, f"the model's forward fails with {hp.min}: {error}")


def _failure(run: Callable[[], Any], members: list[Hparam]) -> str | None:
    """The first line of the error the forward raises with ``members`` at their min, or None where it runs."""
    for hp in members:
        hp.active = hp.min
    try:
        run()
        return None
    except Exception as exc:  # any failure of the model's own code at these sizes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return first
    finally:
        for hp in members:
            hp.active = hp.max


def _held(module: nn.Module) -> list[Hparam]:
    """Every hparam a dynamic module holds: its slots' dims, its layer hparam, the sizes it follows."""
    found: list[Hparam] = []
    for value in vars(module).values():
        items = value.values() if isinstance(value, dict) else (value,)
        for item in items:
            dim = item[1] if isinstance(item, tuple) and len(item) == 2 and _is_dim(item[1]) else item
            if _is_dim(dim):
                found.extend(dim_parts(dim))
    return found


def _is_dim(value: Any) -> bool:
    return isinstance(value, (Hparam, Scaled, Segments, Grouped))


def _common_prefix(a: Path, b: Path) -> Path:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _nested(a: Path, b: Path) -> bool:
    """Whether one subtree holds the other (or they are the same)."""
    return a[: len(b)] == b or b[: len(a)] == a


def forward_runner(model: nn.Module, dummy_input: tuple) -> Callable[[], Any]:
    """A forward of ``model`` at its current sizes, on the cheapest input and tensors it runs with as built.

    A long text input is cut to its first 8 token ids where the model runs on them: the checks
    cost less. A model on the meta device (built from a config alone) runs on meta tensors, which
    propagate shapes at a third of the cost of fake tensors; where its code reads a value (an
    attention-mask check calling ``.all()``), it runs on fake tensors instead, whose values read
    as traced and skip such checks, as under ``torch.export``. Each candidate is tried once at
    full size, in that order; the last, the input as given, is the one the trace ran on.
    """
    short = tuple(t[:, :8] if not t.is_floating_point() and t.dim() == 2 else t for t in dummy_input)
    inputs = [short, dummy_input] if any(a.shape != b.shape for a, b in zip(short, dummy_input, strict=True)) else []
    inputs = inputs or [dummy_input]
    modes = ["meta", "fake"] if on_meta_device(model) else ["plain"]
    candidates = [(given, mode) for given in inputs for mode in modes]
    for given, mode in candidates[:-1]:
        try:
            run_in_mode(model, given, mode)
        except Exception:  # this input or these tensors do not run the model: try the next
            continue
        return lambda given=given, mode=mode: run_in_mode(model, given, mode)
    given, mode = candidates[-1]
    return lambda: run_in_mode(model, given, mode)


def run_in_mode(model: nn.Module, inputs: tuple, mode: str) -> Any:
    """A forward on ``inputs`` as they are ("plain"), moved to the meta device ("meta"), or as fake tensors."""
    if mode == "plain":
        return model(*inputs)
    if mode == "meta":
        return model(*(t.to("meta") for t in inputs))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as fake:
        return model(*(fake.from_tensor(t) for t in inputs))
