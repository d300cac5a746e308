"""What every layer kind shares: the ``LayerKind`` interface, its registry and the dynamic-layer mixin.

A layer kind is everything the engine knows about one family of layers (convolutions, linear
layers, norms, ...), in one file of this package: which rule settings it takes, which channel
slots it has and how the tracer couples them, the hparams of its own (a kernel size, a head
count), its dynamic forward and export, its flops and params terms, how the latency table times
it, and how its channels are ranked and reordered by importance. The generic machinery
(``trace``, ``convert``, ``cost.terms``, ``cost.latency``, ``importance``) asks the registered
kind of a module and never tests layer types itself. docs/architecture.md walks through adding
a kind.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nascli.space.hparam import Dim, Grouped, Hparam, Scaled, Segments, dim_parts
from nascli.space.settings import Validator

if TYPE_CHECKING:  # the engine's generic parts, handed to a kind's methods
    from torch import fx

    from nascli.cost.terms import TermBuilder
    from nascli.space.trace import ChannelWalker, TraceResult


class DynamicModule:
    """Mixin for a native layer whose sizes follow shared hparams.

    A dynamic layer is the original object with its class swapped for a subclass of its own
    class, so ``isinstance``, parameter names and ``state_dict`` keys stay as they were. Its
    forward slices the stored full-size tensors to the active sizes; at the full size it calls the
    native forward on the full tensors, without copies.
    """

    _native: type[nn.Module]
    # attribute name -> name of the instance field holding its Hparam, in summary order
    _hparam_fields: tuple[tuple[str, str], ...] = ()

    def nas_hparams(self) -> list[tuple[str, Hparam]]:
        """(attribute, hparam) pairs in the order a search-space summary lists them."""
        found = []
        for attr, field in self._hparam_fields:
            dim = getattr(self, field, None)
            dim = dim.base if isinstance(dim, Scaled) else dim  # listed by the channels it follows
            if isinstance(dim, (Segments, Grouped)):  # each part, or key/value groups then heads per group
                found.extend((f"{attr}[{i}]", part) for i, part in enumerate(dim_parts(dim)))
            elif dim is not None:
                found.append((attr, dim))
        return found

    def export_native(self) -> None:
        """Turn this layer, in place, into its native class at the active sizes with copied tensors."""
        self._shrink_to_active()
        for _, field in self._hparam_fields:
            self.__dict__.pop(field, None)
        self.__class__ = self._native

    def _shrink_to_active(self) -> None:
        raise NotImplementedError


_SHARING: contextvars.ContextVar[str] = contextvars.ContextVar("export_sharing", default="copies")


@contextlib.contextmanager
def _sharing(how: str) -> Iterator[None]:
    token = _SHARING.set(how)
    try:
        yield
    finally:
        _SHARING.reset(token)


def sharing_whole_tensors() -> contextlib.AbstractContextManager[None]:
    """Within this block, export keeps a tensor the active subnet uses whole instead of copying it.

    An export that replaces the converted model (in place) or only reads the max subnet (a frozen
    teacher) then costs no memory for the layers it does not shrink; an export that is trained
    on its own copies everything, so its updates never reach the converted model.
    """
    return _sharing("whole")


def sharing_active_views() -> contextlib.AbstractContextManager[None]:
    """Within this block, export gives each layer a view of its active slice (or the tensor itself when
    used whole) instead of a copy: a frozen subnet that costs no memory, whose in-place updates
    (merged adapters) land in the converted model's tensors."""
    return _sharing("views")


def copied_tensor(tensor: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """A compact copy of ``tensor`` (a slice of ``whole``); ``whole`` itself when it is all of it
    and ``sharing_whole_tensors`` is on; ``tensor`` uncopied with ``sharing_active_views``."""
    sharing = _SHARING.get()
    if sharing != "copies" and tensor.shape == whole.shape and tensor.data_ptr() == whole.data_ptr():
        return whole
    if sharing == "views":
        return tensor.detach()
    return tensor.detach().clone(memory_format=torch.contiguous_format)


def copied_parameter(tensor: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    """A parameter owning a compact copy of a (possibly sliced) tensor, or ``like`` itself where
    ``copied_tensor`` shares it."""
    data = copied_tensor(tensor, like)
    if data is like:
        return like
    return nn.Parameter(data.detach(), requires_grad=like.requires_grad)


def dynamic_class(mixin: type, native: type[nn.Module]) -> type[nn.Module]:
    """The dynamic version of ``native``: a subclass of both, so ``isinstance(m, native)`` still holds.

    Assign it to a module-level name equal to its own (``DynamicConv2d = dynamic_class(...)``), so
    pickled models find it.
    """
    return type(f"Dynamic{native.__name__}", (mixin, native), {"_native": native, "__module__": mixin.__module__})


_MOVED: contextvars.ContextVar[set | None] = contextvars.ContextVar("moved_channels", default=None)


@contextlib.contextmanager
def moving_each_tensor_once() -> Iterator[None]:
    """Within this block, ``move_channels`` reorders a tensor shared by several layers (tied weights) once."""
    token = _MOVED.set(set())
    try:
        yield
    finally:
        _MOVED.reset(token)


def move_channels(tensor: torch.Tensor | None, dim: int, perm: torch.Tensor, offset: int, scale: int = 1) -> None:
    """Reorder, in place, the run of ``len(perm)`` channels at ``offset`` along ``dim`` (``scale`` entries each)."""
    if tensor is None:
        return
    moved = _MOVED.get()
    if moved is not None:
        key = (tensor.data_ptr(), tensor.shape, dim, offset)
        if key in moved:
            return
        moved.add(key)
    perm = perm.to(tensor.device)
    runs = (perm[:, None] * scale + torch.arange(scale, device=tensor.device)).flatten() + offset * scale
    tensor.narrow(dim, offset * scale, len(runs)).copy_(tensor.index_select(dim, runs))


@dataclass(frozen=True)
class ModeDefaults:
    """What a search-space mode asks of every kind's default rules."""

    ratios: tuple[float, ...]  # width choices, as fractions of the layer as built
    divisor: int  # channel counts round to multiples of it
    depth: bool  # whether stacks of blocks get a depth hparam


class LayerKind:
    """One family of layers, registered with ``register``; the defaults suit a layer without channels.

    ``dynamic`` maps each native type of the family to its dynamic class. ``slots`` names the
    channel dimensions the engine may resize ("out", "in", "features"); a slot is one member of a
    channel group, which the tracer forms and ``convert`` gives one hparam.
    """

    dynamic: dict[type[nn.Module], type[nn.Module]] = {}
    # natives from an optional library, by "package.module.Class": resolved when a model holds one,
    # so the library is never imported for users who do not use it; ``mixin`` makes their dynamic class
    lazy_natives: tuple[str, ...] = ()
    mixin: type | None = None
    settings: dict[str, Validator] = {}  # rule setting -> its validator
    ratio_setting: str | None = None  # the settings that size the channels this kind produces
    divisor_setting: str | None = None
    owns_children: bool = False  # its submodules' parameters are its own (counted, resized and exported by it)
    timed: bool = False  # the latency table times it

    # -- rules ---------------------------------------------------------------------------------
    def rule_key(self, native: str) -> str:
        """The key in a rules dict of the native class named ``native`` ("torch.nn.modules.conv.Conv2d")."""
        return f"nn.{native.rpartition('.')[2]}"

    def rule_keys(self) -> list[str]:
        return [self.rule_key(qualified_name(t)) for t in self.dynamic] + [self.rule_key(n) for n in self.lazy_natives]

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any] | None:
        """The settings of the "*" pattern in a mode's default rules; None leaves the kind out."""
        return None

    def channel_settings(self, settings: dict[str, Any]) -> tuple[tuple[float, ...], int]:
        """(ratios, divisor) of the channels this layer produces."""
        return settings.get(self.ratio_setting, (1.0,)), settings.get(self.divisor_setting, 1)

    # -- tracing -------------------------------------------------------------------------------
    def slots(self, module: nn.Module) -> dict[str, int]:
        """The channel slots of ``module`` the engine can resize, with their full sizes."""
        return {}

    def slot_attr(self, module: nn.Module, slot: str) -> str:
        """The attribute a slot sizes (``out_channels``, ``in_features`` ...), naming its hparam."""
        raise NotImplementedError

    def searchable(self, module: nn.Module) -> bool:
        """Whether converting ``module`` can give it anything to search."""
        return bool(self.slots(module))

    def trace(self, walker: ChannelWalker, node: fx.Node, name: str, module: nn.Module) -> None:
        """Couple a converted layer's slots with the tensors it reads and give its output channels."""
        raise NotImplementedError

    def channel_multiple(self, module: nn.Module) -> int:
        """Every channel count of the layer's groups must be a multiple of this."""
        return 1

    def dummy_input(self, module: nn.Module) -> tuple[torch.Tensor, ...] | None:
        """A guess at a model's input when ``module`` is its first layer of a known kind."""
        return None

    # -- conversion ----------------------------------------------------------------------------
    def layer_hparam(self, name: str, module: nn.Module, settings: dict[str, Any], trace: TraceResult) -> Hparam | None:
        """The hparam of the layer's own beside its channels (kernel size, heads, depth, function)."""
        return None

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        """Give a freshly swapped dynamic layer the dims of its slots and its own hparam."""
        raise NotImplementedError

    def gates(self, name: str, module: nn.Module) -> dict[str, tuple[Hparam, int]]:
        """Submodules of a converted layer that run only while an hparam exceeds an index.

        A depth stage runs block ``i`` while its depth is above ``i``; costs and latencies of
        everything inside such a block count only then.
        """
        return {}

    # -- costs ---------------------------------------------------------------------------------
    def params(self, terms: TermBuilder, module: nn.Module, dims: dict[str, Dim], layer_hp: Any, path: list) -> None:
        """Parameter terms of a converted layer."""
        terms.add("params", sum(p.numel() for p in module.parameters(recurse=False)), [], path)

    def flops(
        self,
        terms: TermBuilder,
        node: fx.Node,
        module: nn.Module,
        dims: dict[str, Dim] | None,
        layer_hp: Any,
        path: list,
    ) -> None:
        """Flops terms of one call of the layer, converted (``dims``) or as built (None), as fvcore counts them."""

    def latency_layer(
        self, module: nn.Module, sizes: tuple[int, ...], in_shape: tuple[int, ...]
    ) -> tuple[nn.Module, torch.Tensor]:
        """A native layer at ``sizes`` (one per hparam field, 0 for none) and an input to time it on."""
        raise NotImplementedError

    # -- importance ----------------------------------------------------------------------------
    def channel_dims(self, module: nn.Module) -> list[tuple[str, Dim]]:
        """(slot, dim) of each channel dim of a dynamic layer."""
        roles = {"_hp_out": "out", "_hp_in": "in", "_hp_features": "features"}
        return [(roles[field], getattr(module, field)) for _, field in module._hparam_fields if field in roles]

    def scale_importance(self, module: nn.Module) -> torch.Tensor | None:
        """Per-channel importance a normalizing layer gives (|gamma| of a batch norm), if any."""
        return None

    #: the dim of a layer's first input that holds the channels its "in" slot reads
    input_channel_dim = -1

    def output_importance(self, module: nn.Module) -> torch.Tensor:
        """The L1 norm of the weights producing each output channel, summed in float32 whatever their dtype."""
        return module.weight.detach().abs().flatten(1).sum(1, dtype=torch.float32)

    def ordered_dims(self, module: nn.Module) -> list[Dim]:
        """Dims whose channels must keep their order: what the layer reads follows their position, not weights."""
        return []

    def permutation_block(self, module: nn.Module) -> int:
        """Channels that must move together when a group is reordered (one group of a grouped conv)."""
        return 1

    def permute(self, module: nn.Module, slot: str, perm: torch.Tensor, offset: int) -> None:
        """Reorder the channels of ``slot`` at ``offset`` by ``perm`` in every tensor they index."""
        raise NotImplementedError


def depth_hparam(name: str, stack: nn.Module, settings: dict[str, Any], trace: TraceResult) -> Hparam | None:
    """Depth choices of a stack of blocks (``nn.Sequential``, ``nn.ModuleList``), or None.

    Only trailing blocks that keep both the tensor shape and the channel group of their input
    (residual blocks) can be skipped, so every depth runs and the layers after the stack see the
    channels they were built for.
    """
    skippable = [_is_skippable(f"{name}.{key}", block, trace) for key, block in stack._modules.items()]
    first = len(skippable)
    while first > 0 and skippable[first - 1]:
        first -= 1
    low = max(first, settings.get("min_depth", 1))
    return Hparam(f"{name}.depth", range(low, len(stack) + 1)) if low < len(stack) else None


def _is_skippable(name: str, block: nn.Module | None, trace: TraceResult) -> bool:
    """Whether every call of ``block`` keeps its input's shape and channel group (a block run several
    times per forward, as a recurrent model's loop over its layers runs it, in each of them)."""
    calls = trace.calls.get(name, [])
    if block is None or not any(True for _ in block.children()) or not calls:
        return False
    return all(keeps_shape_and_group(trace, node_in, node_out) for node_in, node_out in calls)


def keeps_shape_and_group(trace: TraceResult, node_in: Any, node_out: Any) -> bool:
    """Whether ``node_out`` has ``node_in``'s shape and channel group: what runs between them may be skipped."""
    if node_in not in trace.channels or node_out not in trace.channels:
        return False
    if trace.node_shape(node_in) != trace.node_shape(node_out):
        return False
    groups = trace.groups
    return [groups.find(e) for e in trace.channels[node_in][0]] == [groups.find(e) for e in trace.channels[node_out][0]]


_KINDS: list[LayerKind] = []
_BY_NATIVE: dict[type[nn.Module], LayerKind] = {}
_BY_NAME: dict[str, LayerKind] = {}  # lazy natives not seen yet


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(kind: LayerKind) -> LayerKind:
    """Add a kind to the registry: its native types convert, and modules of them are costed by it."""
    for native in kind.dynamic:
        if native in _BY_NATIVE:
            raise ValueError(f"{native.__name__} is already registered")
        _BY_NATIVE[native] = kind
    for name in kind.lazy_natives:
        _BY_NAME[name] = kind
    _KINDS.append(kind)
    return kind


def _registered(cls: type) -> LayerKind | None:
    """The kind of exactly ``cls``, resolving a lazy native (and making its dynamic class) on first sight."""
    kind = _BY_NATIVE.get(cls)
    if kind is None and (kind := _BY_NAME.pop(qualified_name(cls), None)) is not None:
        kind.dynamic[cls] = dynamic_class(kind.mixin, cls)
        _BY_NATIVE[cls] = kind
    return kind


def registered_kinds() -> list[LayerKind]:
    return list(_KINDS)


def convertible_kind(module: nn.Module) -> LayerKind | None:
    """The kind that converts ``module``: only its exact native type (a subclass may change the forward)."""
    return _registered(type(module))


def kind_of(module: nn.Module) -> LayerKind | None:
    """The kind ``module`` belongs to: its own type or the nearest registered base (dynamic layers too)."""
    if (kind := type(module).__dict__.get("nas_kind")) is not None:
        return kind  # a module with sliced parameters (kinds/parameters.py)
    for cls in type(module).__mro__:
        if (kind := _registered(cls)) is not None:
            return kind
    return None


def module_slots(module: nn.Module) -> dict[str, int]:
    """The channel slots of any module (none for a module of no registered kind)."""
    kind = kind_of(module)
    return kind.slots(module) if kind else {}
