"""Trace a model once with torch.fx and find which channel dimensions must stay equal.

Every layer attribute that sizes a channel dimension is a *slot* (``("layer1.0.conv1", "out")``).
Walking the graph, slots and intermediate tensors whose channels must match are joined in one
group: a producer's output with its consumers' inputs, both sides of a residual add, a norm layer
with the tensor it normalizes. An operation the walk does not understand freezes the channels it
touches, as do the model's inputs and outputs, so the engine never slices what it cannot follow.
The shapes of one dummy forward are recorded alongside, for the cost model and the depth rule.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.ops import stochastic_depth

from nascli.errors import UserInputError
from nascli.space import trace_aten
from nascli.space.export_graph import OPAQUE, SHAPE, export_model
from nascli.space.kinds import convertible_kind, kind_of, module_slots, qualified_name

Element = tuple  # ("slot", module_name, attr, segment_index) or ("node", node_name)

_PASSTHROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)  # fmt: skip
_PASSTHROUGH_FUNCTIONS = {
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, F.softplus, torch.relu, torch.relu_, torch.sigmoid,
    torch.tanh, torch.clamp, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate,
    stochastic_depth,  # scales whole samples or rows (torchvision's EfficientNet and ConvNeXt blocks)
}  # fmt: skip
_PASSTHROUGH_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "contiguous", "clone",
    "detach", "float", "double", "half", "bfloat16", "to", "type_as",
}  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
}  # fmt: skip
_ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_FLATTEN_FUNCTIONS = {torch.flatten, torch.reshape}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}


class ChannelGroups:
    """Union-find over slots and tensors; a group remembers its size and why it is frozen.

    A group chunked into equal parts along the channels is made of ``copies`` runs of one part
    group: its channels then follow the part's hparam in each run (``repeat_of``). A group split
    into parts of different sizes (q, k and v of one projection with fewer key/value heads) is
    made of one run of each piece group, each with its own hparam (``pieces_of``).
    """

    def __init__(self) -> None:
        self._parent: dict[Element, Element] = {}
        self._size: dict[Element, int] = {}
        self._frozen: dict[Element, str] = {}
        self._repeat: dict[Element, tuple[Element, int]] = {}  # root -> (part element, copies)
        self._scaled: dict[Element, tuple[Element, int]] = {}  # root -> (base element, entries per base channel)
        self._pieces: dict[Element, tuple[Element, ...]] = {}  # root -> its runs' groups, in order

    def add(self, element: Element, size: int) -> Element:
        if element not in self._parent:
            self._parent[element] = element
            self._size[element] = size
        return element

    def find(self, element: Element) -> Element:
        root = element
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[element] != root:
            self._parent[element], element = root, self._parent[element]
        return root

    def union(self, a: Element, b: Element) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self._parent[rb] = ra
        if rb in self._frozen:
            self.freeze(ra, self._frozen[rb])
        if self._size[ra] != self._size[rb]:
            self.freeze(ra, f"joined channel dimensions of sizes {self._size[ra]} and {self._size[rb]}")
        if rb in self._repeat:
            self.set_repeat(ra, *self._repeat.pop(rb))
        if rb in self._scaled:
            self.set_scaled(ra, *self._scaled.pop(rb))
        if rb in self._pieces:
            self.set_pieces(ra, self._pieces.pop(rb))

    def set_repeat(self, element: Element, part: Element, copies: int) -> None:
        """``element``'s group is ``copies`` equal runs of ``part``'s group (a chunk along the channels)."""
        root = self.find(element)
        found = self._repeat.get(root)
        if found is None:
            self._repeat[root] = (part, copies)
        elif found[1] != copies:
            self.freeze(root, f"chunked into both {found[1]} and {copies} parts")
        else:
            self.union(found[0], part)  # two chunkings of the same channels have the same parts

    def repeat_of(self, element: Element) -> tuple[Element, int] | None:
        return self._repeat.get(self.find(element))

    def set_pieces(self, element: Element, pieces: tuple[Element, ...]) -> None:
        """``element``'s group is one run of each of ``pieces``' groups, in order (a split into unequal sizes).

        Two such splits of the same channels at the same sizes have the same pieces; at other
        sizes, or a group also chunked into equal runs, the channels stay fixed.
        """
        root = self.find(element)
        found = self._pieces.get(root)
        if root in self._repeat:
            self.freeze(root, "split both into equal and into unequal parts")
        elif found is None:
            self._pieces[root] = tuple(pieces)
            if root in self._frozen:
                self.freeze(root, self._frozen[root])  # the pieces of fixed channels are fixed
        elif [self.size(p) for p in found] != [self.size(p) for p in pieces]:
            self.freeze(root, "split into parts of different sizes twice")
        else:
            for a, b in zip(found, pieces, strict=True):
                self.union(a, b)

    def pieces_of(self, element: Element) -> tuple[Element, ...] | None:
        return self._pieces.get(self.find(element))

    def is_piece(self, element: Element) -> bool:
        """Whether ``element``'s channels are one run of a group split into runs of different sizes."""
        root = self.find(element)
        return any(self.find(piece) == root for pieces in self._pieces.values() for piece in pieces)

    def set_scaled(self, element: Element, base: Element, scale: int) -> None:
        """``element``'s channels are ``scale`` consecutive entries per channel of ``base`` (heads of a width).

        Splitting a projection's output into (heads, head size) makes the projection's group the
        heads group scaled by the head size: keeping fewer heads keeps whole heads.
        """
        root = self.find(element)
        found = self._scaled.get(root)
        if found is None:
            if self.find(base) == root:
                self.freeze(root, "channels scaled from themselves")
                return
            self._scaled[root] = (base, scale)
        elif found[1] != scale:
            self.freeze(root, f"split into blocks of both {found[1]} and {scale}")
        else:
            self.union(found[0], base)

    def scaled_of(self, element: Element) -> tuple[Element, int] | None:
        """(base root, total scale) when ``element``'s group is a scaled copy of another group, following chains."""
        root, scale, seen = self.find(element), 1, set()
        while root in self._scaled and root not in seen:
            seen.add(root)
            base, factor = self._scaled[root]
            root, scale = self.find(base), scale * factor
        return (root, scale) if scale != 1 or seen else None

    def scaled_chain(self, element: Element) -> list[tuple[Element, int]]:
        """The roots ``element``'s group is scaled from, nearest first, each with the total scale to it.

        ``scaled_of`` gives the last; a projection into grouped query heads passes the query heads
        (head size) on its way to the key/value heads (head size x query heads per group).
        """
        chain, root, scale, seen = [], self.find(element), 1, set()
        while root in self._scaled and root not in seen:
            seen.add(root)
            base, factor = self._scaled[root]
            root, scale = self.find(base), scale * factor
            chain.append((root, scale))
        return chain

    def scaled_groups(self) -> list[Element]:
        return [r for r in self._scaled if self.find(r) == r]

    def elements(self) -> list[Element]:
        return list(self._parent)

    def freeze(self, element: Element, reason: str) -> None:
        root = self.find(element)
        self._frozen.setdefault(root, reason)
        for piece in self._pieces.get(root, ()):
            if self.find(piece) not in self._frozen:
                self.freeze(piece, reason)

    def size(self, element: Element) -> int:
        return self._size[self.find(element)]

    def frozen_reason(self, element: Element) -> str | None:
        """Why a group's size is fixed; a scaled group shares its base's reason, and a base its scaled groups'."""
        root = self.find(element)
        if root in self._frozen:
            return self._frozen[root]
        scaled = self.scaled_of(root)
        if scaled is not None:
            return self._frozen.get(scaled[0]) or self._frozen_scaled(scaled[0])
        return self._frozen_scaled(root)

    def _frozen_scaled(self, base_root: Element) -> str | None:
        for root in self.scaled_groups():
            found = self.scaled_of(root)
            if found is not None and found[0] == base_root and root in self._frozen:
                return self._frozen[root]
        return None


@dataclass
class TraceResult:
    graph: fx.Graph
    groups: ChannelGroups
    # module name -> one (input node, output node) per call, for containers and leaves alike
    calls: dict[str, list[tuple[fx.Node | None, fx.Node | None]]]
    # tensor node -> (group elements of its channel segments, channel dim)
    channels: dict[fx.Node, tuple[tuple[Element, ...], int]]
    # leaf module name -> one (input shape, output shape) per call, batch size of the dummy input
    shapes: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = field(default_factory=dict)
    # modules that run in inference (eval mode); the graph is traced in train mode and may hold more
    inference_modules: set[str] = field(default_factory=set)
    # modules kept whole because fx cannot trace them -> why
    untraceable: dict[str, str] = field(default_factory=dict)
    # (layer, "in" | "features") -> sizes of the channel segments it reads (several for a concatenation)
    slot_segments: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    # (linear layer, "in") -> entries per channel, for a linear layer reading flattened feature maps
    slot_scales: dict[tuple[str, str], int] = field(default_factory=dict)
    # flattened tensor node -> entries per channel along its channel dim
    tensor_scales: dict[fx.Node, int] = field(default_factory=dict)
    # parameter read directly by the graph -> {its dim: group element}; exported models only. Most have
    # one such dim; the 3-d weights of mixture-of-experts layers two (their input and output channels)
    param_slots: dict[str, dict[int, Element]] = field(default_factory=dict)
    # parameter -> {its dim: the group elements of its segments}: a parameter meeting channels that are a
    # concatenation (a norm over the hidden state and the embeddings side by side; hyper-connections' copies)
    param_segments: dict[str, dict[int, tuple[Element, ...]]] = field(default_factory=dict)
    # (parameter, dim) whose channels a weight produces, as a layer's output: an expert's own width
    weight_outputs: set[tuple[str, int]] = field(default_factory=set)
    # (key/value head group element, attention module path, whether queries are whole groups of it,
    # entries per key head and sample: sequence length x head size)
    head_groups: list[tuple[Element, str, bool, int]] = field(default_factory=list)
    # (query head element, attention module path, query heads per key/value head) of grouped-query
    # attention: the query heads are a scaled copy of the key/value heads, whole groups of them
    query_groups: list[tuple[Element, str, int]] = field(default_factory=list)
    # (constant node, its dim, channel element) where a tensor made of no channels (ALiBi's slopes per head, built
    # by the model from its head count) meets tracked channels along a dim of theirs at their full size
    constants_along: list[tuple[fx.Node, int, Element]] = field(default_factory=list)
    # (module path, size of each part, part element) of a split of the channels into equal parts
    split_sizes: list[tuple[str, int, Element]] = field(default_factory=list)
    exported: bool = False  # traced with torch.export: sizes computed from shapes are constants in the graph
    real_values: bool = False  # and with real tensors alongside: the graph follows the dummy input's values
    # reshapes of tracked channels fx could not follow (a split into heads): the ATen graph may follow them
    unfollowed_reshapes: int = 0

    def node_shape(self, node: fx.Node | None) -> tuple[int, ...] | None:
        return _shape(node) if node is not None else None


class _RecordingTracer(fx.Tracer):
    """A tracer that records the input and output node of every module call.

    Modules named in ``leaves`` are kept whole (not traced into); when tracing fails, the stack
    of module calls at the failure is kept in ``failed_in``.
    """

    def __init__(self, leaves: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.leaves = leaves
        self.calls: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        self.stack: list[str] = []
        self.failed_in: list[str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Also a layer of a registered kind from outside torch.nn (its kind traces it as a whole)."""
        if module_qualified_name in self.leaves or super().is_leaf_module(m, module_qualified_name):
            return True
        kind = convertible_kind(m)
        return kind is not None and bool(kind.slots(m))

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        self.stack.append(self.path_of_module(m))
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = list(self.stack)
            raise
        finally:
            self.stack.pop()
        first = args[0] if args else None
        self.calls[self.path_of_module(m)].append(
            (first.node if isinstance(first, fx.Proxy) else None, out.node if isinstance(out, fx.Proxy) else None)
        )
        return out


_SHAPE = SHAPE  # node.meta key: a tensor's shape, or "structure" for tuples holding tensors
ARGS = "nascli_args"  # node.meta key: the actual arguments of a call to an untraceable module


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph once and records the shape of every tensor it produces.

    The arguments of calls to ``keep_args_of`` modules are kept too, so their cost can be counted.
    """

    def __init__(self, gm: fx.GraphModule, keep_args_of: frozenset[str]) -> None:
        super().__init__(gm)
        self.keep_args_of = keep_args_of

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        """A batch norm traced in train mode runs as in eval: the same shapes, and a batch of one works. One
        without running statistics (timm's weight standardization normalizing a weight) keeps its mode."""
        running_mean = args[1] if len(args) > 1 else kwargs.get("running_mean")
        if target is F.batch_norm and running_mean is not None:
            args, kwargs = args[:5], {**kwargs, "training": False}
        return super().call_function(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        if n.op == "call_module" and n.target in self.keep_args_of:
            args, _ = self.fetch_args_kwargs_from_env(n)
            n.meta[ARGS] = args
        value = super().run_node(n)
        if isinstance(value, torch.Tensor):
            n.meta[_SHAPE] = tuple(value.shape)
        elif isinstance(value, (tuple, list, dict)):
            found: list[bool] = []
            torch.utils._pytree.tree_map(lambda v: found.append(isinstance(v, torch.Tensor)), value)
            if any(found):
                n.meta[_SHAPE] = "structure"
        return value


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Run code on ``model`` and put its buffers back as they were (running statistics, counters).

    A graph traced in train mode calls a norm written in Python with ``training=True`` baked in,
    so running it would move the running statistics of the model being converted.
    """
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def node_shape(node: Any) -> tuple[int, ...] | None:
    """The recorded shape of a tensor-valued node (None for anything else)."""
    return _shape(node)


def _shape(node: Any) -> tuple[int, ...] | None:
    shape = node.meta.get(_SHAPE) if isinstance(node, fx.Node) else None
    return shape if isinstance(shape, tuple) else None


def _op_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def trace_model(
    model: nn.Module,
    dummy_input: tuple,
    converts: Callable[[str, nn.Module], bool],
    reads_flattened: Callable[[str, nn.Module], bool] = lambda name, module: False,
) -> TraceResult:
    """Trace ``model`` and group its coupled channel slots.

    ``converts(name, module)`` says whether a supported layer will become dynamic; a layer that
    will not is treated like any unknown operation and freezes the channels it touches.
    ``reads_flattened(name, linear)`` says whether a linear layer reading flattened feature maps
    follows their channels (its input features scale by the spatial size); otherwise those
    channels stay fixed.

    Where fx cannot trace the model, or part of it, the model is traced with ``torch.export``
    instead (``space/export_graph.py``); if that fails too, fx's partial trace is used.
    """
    try:
        graph, tracer, untraceable = _trace_with_leaves(model)
    except UserInputError as fx_error:
        try:
            return _trace_exported(model, dummy_input, converts, reads_flattened)
        except UserInputError as export_error:
            raise UserInputError(f"{fx_error}; {export_error}") from export_error
    if untraceable:
        try:
            return _trace_exported(model, dummy_input, converts, reads_flattened)
        except UserInputError:
            for culprit, reason in untraceable.items():
                warnings.warn(
                    f"{culprit} cannot be traced with torch.fx ({reason}); its channels stay fixed",
                    TraceWarning,
                    stacklevel=3,
                )
    was_training = model.training
    inference_modules = _modules_called_in_eval(model, frozenset(untraceable))
    if inference_modules is None:
        inference_modules = set(tracer.calls)
    gm = fx.GraphModule(model, graph)
    model.eval()
    try:
        with torch.no_grad(), buffers_kept(model):  # the graph may bake in train-mode norm updates
            _ShapeRecorder(gm, frozenset(untraceable)).run(*dummy_input)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in dummy_input if isinstance(t, torch.Tensor))
        raise UserInputError(
            f"the model's forward failed on a dummy input of shape {shapes}: {exc}".splitlines()[0]
        ) from exc
    finally:
        model.train(was_training)
    modules = dict(model.named_modules())
    result = TraceResult(graph, ChannelGroups(), dict(tracer.calls), {})
    result.untraceable = untraceable
    walker = ChannelWalker(result, modules, converts, reads_flattened)
    walker.params, walker.canonical = _tensors_by_path(model), _canonical_paths(model)
    for node in graph.nodes:
        walker.visit(node)
    result.tensor_scales = walker.scales
    result.inference_modules = inference_modules
    result.shapes = {name: [(_shape(i), _shape(o)) for i, o in calls] for name, calls in result.calls.items()}
    return _better_of(result, model, dummy_input, converts, reads_flattened) if not untraceable else result


def _better_of(
    fx_result: TraceResult, model: nn.Module, dummy_input: tuple, converts: Callable, reads_flattened: Callable
) -> TraceResult:
    """fx's trace, or torch.export's where that leaves fewer layer channels fixed.

    fx sees Python-level calls whose sizes come from module attributes (``reshape(B, N, 3,
    self.num_heads, self.head_dim)`` in timm's attention); the ATen graph names every size, so it
    can follow heads that fx must freeze. Export runs only when fx met such a reshape and fixed
    layer channels, and its trace is kept only when it found attention heads: a reshape to sizes
    written out (not heads) stays fixed either way, and convolutional nets keep fx's reading
    (flattened maps follow the ``couple_flatten`` rule; see docs/architecture.md).
    """
    if not fx_result.unfollowed_reshapes:
        return fx_result
    fixed = _fixed_slots(fx_result.groups)
    if not fixed:
        return fx_result
    try:
        exported = _trace_exported(model, dummy_input, converts, reads_flattened)
    except Exception:  # torch.export fails in many ways on models fx follows: fx's trace stands
        return fx_result
    better = exported.head_groups and len(_fixed_slots(exported.groups)) < len(fixed)
    return exported if better else fx_result


def _fixed_slots(groups: ChannelGroups) -> list[Element]:
    """Layer channel slots fixed for a reason other than being the model's input or output."""
    return [
        e for e in groups.elements()
        if e[0] == "slot" and groups.frozen_reason(e) not in (None, "model input", "model output")
    ]  # fmt: skip


def _trace_exported(model: nn.Module, dummy_input: tuple, converts: Callable, reads_flattened: Callable) -> TraceResult:
    """The channel groups of a model traced with torch.export (every module runs in eval mode)."""
    exported = export_model(model, dummy_input)
    result = TraceResult(exported.graph, ChannelGroups(), exported.calls, {})
    result.exported, result.real_values = True, exported.real_values
    walker = ChannelWalker(result, dict(model.named_modules()), converts, reads_flattened)
    walker.params, walker.canonical = _tensors_by_path(model), _canonical_paths(model)
    for node in exported.graph.nodes:
        walker.visit(node)
    result.tensor_scales = walker.scales
    result.inference_modules = exported.inference_modules
    result.shapes = {name: [(_shape(i), _shape(o)) for i, o in calls] for name, calls in result.calls.items()}
    return result


def _canonical_paths(model: nn.Module) -> dict[str, str]:
    """Every path of a parameter or buffer -> the first it is registered under. A module registered under two
    names (CoaT's shared MLPs) holds one tensor that a graph may read under either name; the engine slices
    it once, under the name ``named_modules`` lists."""
    first: dict[int, str] = {}
    found: dict[str, str] = {}
    for named in (model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)):
        for path, tensor in named:
            found[path] = first.setdefault(id(tensor), path)
    return found


def _tensors_by_path(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by path: the tensors a graph may read directly and the engine may slice."""
    return {**dict(model.named_buffers(remove_duplicate=False)), **dict(model.named_parameters(remove_duplicate=False))}


def _trace_with_leaves(model: nn.Module) -> tuple[fx.Graph, _RecordingTracer, dict[str, str]]:
    """Trace in train mode; a module whose forward fx cannot follow becomes a leaf, and we retry.

    Returns the graph, the tracer, and the untraceable modules with the reason fx gave.
    """
    untraceable: dict[str, str] = {}
    was_training = model.training
    model.train()  # branches active only in training (auxiliary heads) must be part of the space
    try:
        while True:
            tracer = _RecordingTracer(frozenset(untraceable))
            try:
                return tracer.trace(model), tracer, untraceable
            except Exception as exc:  # fx raises many types for untraceable Python
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                culprit = tracer.failed_in[-1] if tracer.failed_in else None
                if culprit is None or culprit in untraceable:
                    raise UserInputError(f"cannot trace {type(model).__name__} with torch.fx: {reason}") from exc
                untraceable[culprit] = reason
    finally:
        model.train(was_training)


class TraceWarning(UserWarning):
    """A part of the model was kept whole because torch.fx cannot trace it."""


def _modules_called_in_eval(model: nn.Module, leaves: frozenset[str]) -> set[str] | None:
    """Module paths the eval-mode forward calls, which inference flops count; None if fx cannot trace it.

    The graph is traced in train mode, where a model may call modules inference skips (an
    auxiliary head, a dropout path). When the eval-mode trace fails the train-mode calls are
    counted instead, so the flops may include training-only branches: a warning says so and why.
    """
    tracer = _RecordingTracer(leaves)
    was_training = model.training
    model.eval()
    try:
        tracer.trace(model)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"torch.fx cannot trace the eval-mode forward ({reason}); flops count the modules the train-mode"
            " forward calls, training-only branches included",
            TraceWarning,
            stacklevel=4,
        )
        return None
    finally:
        model.train(was_training)
    return set(tracer.calls)


class ChannelWalker:
    """Visits the graph in order, giving each tensor its channel segments and joining coupled ones.

    A tensor's channel dim is a tuple of segments, one per group, in order: one segment for most
    tensors, several for a concatenation along the channels. A layer reading a concatenation gets
    one input slot per segment, so each part keeps its own hparam.
    """

    def __init__(
        self, result: TraceResult, modules: dict[str, nn.Module], converts: Callable, reads_flattened: Callable
    ) -> None:
        self.result = result
        self.groups = result.groups
        self.chan = result.channels
        self.modules = modules
        self.converts = converts
        self.reads_flattened = reads_flattened
        # flattened tensor -> entries per channel along its channel dim (channel-major)
        self.scales: dict[fx.Node, int] = {}
        self.parts: list[Element] = []  # the part elements of chunked tensors
        self.sliced: dict[fx.Node, dict[tuple[int, int], Element] | None] = {}  # tensor -> its channel ranges' pieces
        # tuple-valued node -> {item index: (segments, channel dim)} for the items whose channels are known
        self.outputs: dict[fx.Node, dict[int, tuple[tuple[Element, ...], int]]] = {}
        self.output_lengths: dict[fx.Node, int] = {}
        # parameters read directly by the graph (an exported model's norms and tokens), by path
        self.params: dict[str, torch.Tensor] = {}
        self.canonical: dict[str, str] = {}  # a parameter's every path -> the one it is sliced under
        # node -> (parameter path, parameter dim of each node dim or None): a parameter whose channel
        # dim is decided by its first use (space/trace_aten.py)
        self.floating: dict[fx.Node, tuple[str, tuple[int | None, ...]]] = {}
        self.param_slots = result.param_slots  # parameter path -> (its channel dim, group element)
        self.param_segments = result.param_segments  # parameter path -> (its channel dim, segment elements)
        self.param_frozen: dict[str, str] = {}  # parameter path -> why its channels cannot change
        # (parameter path, axis) of which the code picks one entry (``self.bank[i]``): that axis keeps its size
        self.selected_axes: set[tuple[str, int]] = set()

    # -- helpers -------------------------------------------------------------------------------
    def new_tensor(self, node: fx.Node, dim: int, reason: str | None = None) -> None:
        """A tensor with channels of its own along ``dim``, frozen for ``reason`` if given."""
        shape = _shape(node)
        if shape is None or len(shape) <= dim:
            return
        element = self.groups.add(("node", node.name), shape[dim])
        if reason:
            self.groups.freeze(element, reason)
        self.chan[node] = ((element,), dim)

    def _default_dim(self, shape: tuple[int, ...]) -> int:
        return 1 if len(shape) >= 2 else 0

    def _tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n in self.chan else None)
        return found

    def _freeze_tensor(self, node: fx.Node, reason: str) -> None:
        for element in self.chan[node][0]:
            self.groups.freeze(element, reason)

    def opaque(self, node: fx.Node, reason: str) -> None:
        """Freeze everything an operation touches: its inputs' groups, parameters it reads, and its output."""
        for arg in self._tensor_inputs(node):
            self._freeze_tensor(arg, reason)
        for arg in node.all_input_nodes:
            if arg in self.floating:
                path = self.floating[arg][0]
                self.param_frozen.setdefault(path, reason)
                segments = [e for elements in self.param_segments.get(path, {}).values() for e in elements]
                for element in [*self.param_slots.get(path, {}).values(), *segments]:
                    self.groups.freeze(element, reason)
        shape = _shape(node)
        if shape is not None:
            self.new_tensor(node, self._likely_dim(node, shape), reason)

    def _likely_dim(self, node: fx.Node, shape: tuple[int, ...]) -> int:
        """The channel dim of an opaque operation's output: an input's, where the shapes agree there.

        A token tensor (batch, tokens, channels) keeps its channels last through an operation
        the tracer cannot follow, so what comes after it lines up with the rest of the stream.
        """
        for arg in self._tensor_inputs(node):
            dim, in_shape = self.chan[arg][1], _shape(arg)
            if in_shape is not None and len(in_shape) == len(shape) and in_shape[dim] == shape[dim]:
                return dim
        return self._default_dim(shape)

    def slot(self, name: str, attr: str, index: int = 0, size: int | None = None) -> Element:
        if size is None:
            size = module_slots(self.modules[name])[attr]
        return self.groups.add(("slot", name, attr, index), size)

    def sizes(self, segments: tuple[Element, ...]) -> tuple[int, ...]:
        return tuple(self.groups.size(e) for e in segments)

    def consume(self, name: str, attr: str, arg: Any, dim: int, per_position: bool = False) -> None:
        """Join a layer's input slots with the channel segments of the tensor it reads along ``dim``.

        ``per_position``: the layer works on ``dim`` alone and keeps every other dim as it is (a layer
        norm over the last dim): reading a tensor whose channels lie along another dim (Persimmon's
        norm over each head's entries, the heads tracked) leaves those channels free.
        """
        shape = _shape(arg)
        known = self.result.slot_segments
        tensor_reason = f"read by {name} along another dimension"
        if arg in self.scales and not self._follows_flattened(name, attr, arg):
            known.setdefault((name, attr), (module_slots(self.modules[name])[attr],))
            module = self.modules[name]
            kind = kind_of(module)
            key = kind.rule_key(qualified_name(type(module)))
            hint = f" (the {key} rule couple_flatten follows them)" if "couple_flatten" in kind.settings else ""
            reason = tensor_reason = f"{name} reads flattened feature maps{hint}"
        elif arg in self.chan and shape is not None and self.chan[arg][1] == dim % len(shape):
            segments = self.chan[arg][0]
            sizes = self.sizes(segments)
            if known.setdefault((name, attr), sizes) == sizes:
                for index, (element, size) in enumerate(zip(segments, sizes, strict=True)):
                    self.groups.union(element, self.slot(name, attr, index, size))
                return
            reason = f"{name} reads differently concatenated inputs in different calls"
        else:
            known.setdefault((name, attr), (module_slots(self.modules[name])[attr],))
            reason = f"{name} reads a dimension the tracer cannot follow"
            if per_position and shape is not None and arg in self.chan:
                reason = f"{name} reads {shape[dim]} entries per channel of another dimension"
                tensor_reason = ""
        for index, size in enumerate(known[(name, attr)]):
            self.groups.freeze(self.slot(name, attr, index, size), reason)
        if arg in self.chan and tensor_reason:
            self._freeze_tensor(arg, tensor_reason)

    def _follows_flattened(self, name: str, attr: str, arg: fx.Node) -> bool:
        """A linear layer that opted in reads flattened maps: its input slot scales by their spatial size."""
        if attr != "in" or not self.reads_flattened(name, self.modules[name]):
            return False
        scale = self.scales[arg]
        return self.result.slot_scales.setdefault((name, attr), scale) == scale

    def passthrough(self, node: fx.Node, arg: Any) -> None:
        shape, in_shape = _shape(node), _shape(arg)
        if arg in self.chan and shape is not None and in_shape is not None and len(shape) == len(in_shape):
            segments, dim = self.chan[arg]
            if shape[dim] == in_shape[dim]:
                self.chan[node] = (segments, dim)
                if arg in self.scales:
                    self.scales[node] = self.scales[arg]
                return
        self.opaque(node, f"{_op_name(node)} changes the channel dimension")

    # -- node kinds ----------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> None:
        name = trace_aten.aten_name(node) if node.op == "call_function" else None
        if name is not None:
            trace_aten.visit(self, node, name)
        elif node.op == "get_attr" and str(node.target) in self.params:
            path = self.canonical.get(str(node.target), str(node.target))
            self.floating[node] = (path, tuple(range(self.params[path].dim())))
        elif node.op == "call_module" and OPAQUE in node.meta:
            self.opaque(node, node.meta[OPAQUE])
        elif any(a in self.floating for a in node.all_input_nodes):
            self._visit_floating(node)
        elif node.op == "placeholder":
            shape = _shape(node)
            if shape is not None:
                self.new_tensor(node, self._default_dim(shape), "model input")
        elif node.op == "get_attr":
            shape = _shape(node)
            if shape is not None:
                self.new_tensor(node, self._default_dim(shape), f"tensor {node.target} is used directly")
        elif node.op == "output":
            for arg in self._tensor_inputs(node):
                self._freeze_tensor(arg, "model output")
            self._reads_whole_tuple(node)  # a tuple output returned as it is
        elif node.op == "call_function" and node.target is operator.getitem and node.args[0] in self.outputs:
            self._tuple_item(node)
        elif self._reads_whole_tuple(node):
            self.opaque(node, f"{_op_name(node)} of a whole chunked or attention output")
        elif node.op == "call_module":
            self._visit_module(node)
        elif (node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS) or (
            node.op == "call_method" and node.target in _FLATTEN_METHODS
        ):
            self._flatten(node)
        elif not self._passes_through(node) and any(a in self.scales for a in self._tensor_inputs(node)):
            self.opaque(node, f"{_op_name(node)} of flattened feature maps")
        elif self._passes_through(node):
            self.passthrough(node, node.args[0] if node.args else node.kwargs.get("input"))
        elif (node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ELEMENTWISE_METHODS
        ):
            self._elementwise(node)
        elif node.op == "call_function" and node.target in _CAT_FUNCTIONS:
            self._concatenate(node)
        elif (node.op == "call_method" and node.target == "chunk") or (
            node.op == "call_function" and node.target is torch.chunk
        ):
            self._chunk(node)
        elif (node.op == "call_method" and node.target in _REDUCE_METHODS) or (
            node.op == "call_function" and node.target in _REDUCE_FUNCTIONS
        ):
            self._reduce(node)
        elif (node.op == "call_method" and node.target in ("permute", "transpose", "swapaxes")) or (
            node.op == "call_function" and node.target in (torch.permute, torch.transpose, torch.swapaxes)
        ):
            self._reorder(node)
        elif node.meta.get(_SHAPE) is not None:
            self.opaque(node, f"unsupported operation {_op_name(node)}")

    def _visit_floating(self, node: fx.Node) -> None:
        """An fx operation reading a parameter or buffer directly.

        Elementwise operations and functional norms give the tensor its channel dim (see
        space/trace_aten.py); anything else that reads one freezes it and what it touches.
        """
        if (node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ELEMENTWISE_METHODS
        ):
            trace_aten.elementwise(self, node)
        elif (
            node.op == "call_method"
            and node.target in trace_aten.FLOATING_THROUGH
            and node.target != "permute"  # fx's permute takes the dims as varargs
            and node.args[0] in self.floating
        ):
            trace_aten.floating_through(self, node, node.target)  # a timm Scale's ``self.scale.view(self.shape)``
        elif node.op == "call_function" and (
            node.target is F.batch_norm or (node.target is F.group_norm and node.args[1:2] == (1,))
        ):
            trace_aten.channel_norm(self, node)
        elif node.op == "call_function" and node.target is F.layer_norm:
            trace_aten.layer_norm(self, node)
        else:
            self.opaque(node, f"{_op_name(node)} reads a parameter or buffer directly")

    def _visit_module(self, node: fx.Node) -> None:
        name = str(node.target)
        module = self.modules[name]
        arg = node.args[0] if node.args else None
        kind = kind_of(module)
        if kind is not None and kind.slots(module) and self.converts(name, module):
            kind.trace(self, node, name, module)
        elif isinstance(module, _PASSTHROUGH_MODULES):
            self.passthrough(node, arg)
        elif isinstance(module, nn.Flatten):
            self._flatten(node)
        elif name in self.result.untraceable:
            self.opaque(node, f"{name} cannot be traced with torch.fx")
        else:
            why = "excluded by the rules" if module_slots(module) else "not a searchable layer type"
            self.opaque(node, f"{name} ({type(module).__name__}) is {why}")

    # -- what layer kinds call -----------------------------------------------------------------
    def shape(self, node: Any) -> tuple[int, ...] | None:
        """The recorded shape of a tensor-valued node (None for anything else)."""
        return _shape(node)

    def set_tuple_output(self, node: fx.Node, items: dict[int, tuple[tuple[Element, ...], int]], length: int) -> None:
        """A layer call returning a tuple: the channels of the items that are known, by index."""
        self.outputs[node] = items
        self.output_lengths[node] = length

    def new_slot_output(self, node: fx.Node, name: str, dim: int) -> None:
        if _shape(node) is not None:
            self.chan[node] = ((self.slot(name, "out"),), dim)

    def tie_grouped(self, name: str, conv: nn.Module) -> None:
        """A grouped conv keeps its per-group width: in and out channels scale together."""
        single_input = len(self.result.slot_segments.get((name, "in"), ())) == 1
        if single_input and conv.in_channels // conv.groups == conv.out_channels // conv.groups:
            self.groups.union(self.slot(name, "in"), self.slot(name, "out"))
            return
        reason = f"{name} is a grouped convolution whose input and output widths cannot scale together"
        for index, size in enumerate(self.result.slot_segments.get((name, "in"), (conv.in_channels,))):
            self.groups.freeze(self.slot(name, "in", index, size), reason)
        self.groups.freeze(self.slot(name, "out"), reason)

    def _aligned(self, node: fx.Node, args: list[fx.Node]) -> list[tuple[tuple[Element, ...], int]] | None:
        """Each operand's segments and channel dim in the output's rank, skipping broadcast operands."""
        out_shape = _shape(node)
        aligned = []
        for arg in args:
            segments, dim = self.chan[arg]
            in_shape = _shape(arg)
            out_dim = len(out_shape) - len(in_shape) + dim
            if in_shape[dim] == 1 and out_shape[out_dim] != 1:
                continue  # broadcast along the channels: no coupling
            aligned.append((segments, out_dim))
        if not aligned or any(d != aligned[0][1] for _, d in aligned):
            return None
        if any(self.sizes(s) != self.sizes(aligned[0][0]) for s, _ in aligned):
            return None
        return aligned

    def _join(self, aligned: list[tuple[tuple[Element, ...], int]]) -> None:
        for segments, _ in aligned[1:]:
            for a, b in zip(aligned[0][0], segments, strict=True):
                self.groups.union(a, b)

    def _elementwise(self, node: fx.Node) -> None:
        """Operands whose channel dims line up (after broadcasting) must keep equal channels."""
        if _shape(node) is None:
            return
        aligned = self._aligned(node, self._tensor_inputs(node))
        if aligned is None:
            self.opaque(node, f"{_op_name(node)} combines tensors along different dimensions")
            return
        self._join(aligned)
        self.chan[node] = aligned[0]

    def _concatenate(self, node: fx.Node) -> None:
        """Along the channels the segments line up one after another; along another dim they join."""
        shape = _shape(node)
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if shape is None or not isinstance(parts, (list, tuple)) or not all(p in self.chan for p in parts):
            self.opaque(node, "cat of tensors the tracer cannot follow")
            return
        dim = dim % len(shape)
        dims = {self.chan[p][1] for p in parts}
        if dims == {dim} and all(len(_shape(p)) == len(shape) for p in parts):
            self.chan[node] = (tuple(e for p in parts for e in self.chan[p][0]), dim)
            return
        aligned = self._aligned(node, list(parts))
        if aligned is None or len(aligned) != len(parts):
            self.opaque(node, "cat of tensors whose channels do not line up")
            return
        self._join(aligned)
        self.chan[node] = aligned[0]

    def _reorder(self, node: fx.Node) -> None:
        """A permute or transpose moves the channel dim; the channels themselves are unchanged."""
        arg, dims = node.args[0], list(node.args[1:])
        shape, in_shape = _shape(node), _shape(arg)
        if arg not in self.chan or shape is None or in_shape is None:
            self.opaque(node, f"{_op_name(node)} of a tensor the tracer cannot follow")
            return
        if node.target in ("permute", torch.permute):
            order = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
            if "dims" in node.kwargs:
                order = list(node.kwargs["dims"])
        else:
            pair = dims if len(dims) == 2 else [node.kwargs.get("dim0"), node.kwargs.get("dim1")]
            order = list(range(len(in_shape)))
            if all(isinstance(d, int) for d in pair):
                a, b = (d % len(in_shape) for d in pair)
                order[a], order[b] = order[b], order[a]
            else:
                order = pair
        if not all(isinstance(d, int) for d in order) or len(order) != len(in_shape):
            self.opaque(node, f"{_op_name(node)} with dims the tracer cannot read")
            return
        segments, dim = self.chan[arg]
        self.chan[node] = (segments, [d % len(in_shape) for d in order].index(dim))

    def _reduce(self, node: fx.Node) -> None:
        """A mean or sum over other dims keeps the channels; over the channels it is opaque."""
        arg = node.args[0]
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        in_shape = _shape(arg)
        if arg not in self.chan or in_shape is None or _shape(node) is None or dims is None:
            self.opaque(node, f"{_op_name(node)} over every dimension")
            return
        reduced = {d % len(in_shape) for d in ([dims] if isinstance(dims, int) else dims)}
        segments, dim = self.chan[arg]
        if dim in reduced or not isinstance(keepdim, bool):
            self.opaque(node, f"{_op_name(node)} over the channels")
            return
        self.chan[node] = (segments, dim if keepdim else dim - sum(d < dim for d in reduced))

    def _tuple_item(self, node: fx.Node) -> None:
        """An item of a tuple output: a chunk or the attention output keeps its channels; others are new."""
        shape, items, index = _shape(node), self.outputs[node.args[0]], node.args[1]
        known = items.get(index % self.output_lengths[node.args[0]]) if isinstance(index, int) else None
        if shape is None:
            return
        if known is None:
            if not isinstance(index, int):  # a slice of the chunks: their channels cannot be followed
                self._freeze_items(node.args[0], f"{_op_name(node.args[0])} sliced as a tuple")
            self.new_tensor(node, self._default_dim(shape), f"item {index} of {_op_name(node.args[0])}")
            return
        segments, dim = known
        self.chan[node] = (segments, dim % len(shape))

    def _passes_through(self, node: fx.Node) -> bool:
        return (node.op == "call_function" and node.target in _PASSTHROUGH_FUNCTIONS) or (
            node.op == "call_method" and node.target in _PASSTHROUGH_METHODS
        )

    def _flatten(self, node: fx.Node) -> None:
        """(N, C, *spatial) to (N, C * spatial): each channel keeps its spatial values together.

        A flatten, or a view or reshape to that shape. Any other reshape is opaque.
        """
        arg = node.args[0] if node.args else node.kwargs.get("input")
        shape, in_shape = _shape(node), _shape(arg)
        if node.target in ("view", "reshape", torch.reshape):
            sizes = node.args[1:] if node.target != torch.reshape else node.args[1:2]
            sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else tuple(sizes)
            if len(sizes) != 2 or sizes[1] != -1:  # a size written out would not follow smaller channels
                self.result.unfollowed_reshapes += arg in self.chan
                self.opaque(node, f"{_op_name(node)} to a fixed size")
                return
        flattens = (
            arg in self.chan
            and arg not in self.scales
            and shape is not None
            and in_shape is not None
            and len(in_shape) >= 2
            and self.chan[arg][1] == 1
            and shape == (in_shape[0], math.prod(in_shape[1:]))
        )
        if not flattens:
            self.result.unfollowed_reshapes += arg in self.chan
            self.opaque(node, f"{_op_name(node)} reshapes the channels")
            return
        self.chan[node] = (self.chan[arg][0], 1)
        self.scales[node] = math.prod(in_shape[2:])

    def _chunk(self, node: fx.Node) -> None:
        """Equal chunks of the channels share one part group, repeated in the chunked tensor.

        ``chunk`` splits whatever channels are active into equal parts, so each part keeps the
        same share of its run of stored channels. ``split`` and ``narrow`` take fixed sizes and
        stay opaque.
        """
        arg = node.args[0] if node.args else node.kwargs.get("input")
        chunks = node.args[1] if len(node.args) > 1 else node.kwargs.get("chunks")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        in_shape = _shape(arg)
        if arg not in self.chan or in_shape is None or not isinstance(chunks, int) or not isinstance(dim, int):
            self.opaque(node, "chunk the tracer cannot follow")
            return
        segments, channel_dim = self.chan[arg]
        self.output_lengths[node] = chunks
        if dim % len(in_shape) != channel_dim:  # every chunk keeps all the channels
            self.outputs[node] = {i: (segments, channel_dim) for i in range(chunks)}
            return
        if len(segments) != 1 or in_shape[channel_dim] % chunks or self.is_part(segments[0]):
            self.opaque(node, f"chunk into {chunks} parts of channels that do not divide into equal runs")
            return
        part = self.groups.add(("node", f"{node.name}.part"), in_shape[channel_dim] // chunks)
        self.groups.set_repeat(segments[0], part, chunks)
        self.parts.append(part)
        self.outputs[node] = {i: ((part,), channel_dim) for i in range(chunks)}

    def is_part(self, element: Element) -> bool:
        """Channels that are already a chunk of others (a chunk of a chunk stays opaque)."""
        root = self.groups.find(element)
        return any(self.groups.find(part) == root for part in self.parts)

    def _reads_whole_tuple(self, node: fx.Node) -> bool:
        """Whether ``node`` uses a tuple output as a whole (``cat(x.chunk(2, 1))``), not item by item."""
        found: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n in self.outputs else None)
        for whole in found:
            self._freeze_items(whole, f"{_op_name(node)} reads {_op_name(whole)} as a whole")
        return bool(found)

    def _freeze_items(self, whole: fx.Node, reason: str) -> None:
        for segments, _ in self.outputs[whole].values():
            for element in segments:
                self.groups.freeze(element, reason)
