"""Trace a model with ``torch.export`` where ``torch.fx`` cannot, into the graph form the walker reads.

Hugging Face transformers (since version 5) and many other models run Python that symbolic fx
tracing cannot follow, while ``torch.export`` runs the real forward on fake tensors and records
every ATen operation with the module stack it ran in (``nn_module_stack``). This module turns
that ATen graph into the graph ``space/trace.py`` walks for fx:

- every call of a layer of a registered kind (``nn.Linear``, ``nn.Embedding``, ...) collapses
  into one ``call_module`` node reading the tensors it got from outside, so its kind traces and
  costs it exactly as it does under fx;
- parameters and buffers become ``get_attr`` nodes named by their path in the model;
- every other operation stays an ATen ``call_function`` node (``aten.view``, ``aten.add``, ...),
  which ``space/trace_aten.py`` follows;
- each node records its shape, and each module call its input and output node;
- a region run under another grad mode (``with torch.no_grad():`` in the forward, a router's
  ``@torch.no_grad()``), which export records as a call of a subgraph, is inlined: grad mode
  changes no shape.

Export specializes shapes: a size the model computed from ``x.shape`` is a constant in the graph.
``space/convert.py`` therefore checks every hparam of an exported model by running it at that
hparam's smallest choice, and keeps fixed what the model's own code cannot shrink.
docs/architecture.md describes where this sits.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch._functorch import config as functorch_config
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from nascli.errors import UserInputError
from nascli.space.kinds import convertible_kind

_INNER = "inner"  # attribute of the export wrapper holding the model; stripped from every path
SHAPE = "nascli_shape"  # node.meta key shared with space/trace.py
OPAQUE = "nascli_opaque"  # node.meta key: a collapsed layer call the walker must not look into


class _TensorOutputs(nn.Module):
    """Calls the model and returns the tensors of its output, in order.

    Model outputs often hold objects export cannot return (a Hugging Face ``DynamicCache``);
    the walker only needs the tensors, which it keeps at their full size. Beside ``logits``, the
    hidden states and attention weights an output carries (Moshi returns ``last_hidden_state``
    with its logits) are activations inside the model, not what it computes: a subnet changes
    them, so they are left out.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        found: list[torch.Tensor] = []

        def collect(value: Any) -> None:
            if isinstance(value, torch.Tensor):
                found.append(value)
            elif isinstance(value, dict):
                internal = ("hidden_state", "attentions") if "logits" in value else ()
                for key, item in value.items():
                    if not any(word in str(key) for word in internal):
                        collect(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    collect(item)

        collect(self.inner(*args))
        return tuple(found)


@dataclass
class ExportedGraph:
    graph: fx.Graph
    # module name -> one (input node, output node) per call
    calls: dict[str, list[tuple[fx.Node | None, fx.Node | None]]]
    inference_modules: set[str]
    # exported with real tensors alongside: sizes the data decides are the dummy input's (``export_model``)
    real_values: bool = False


# reading a tensor's value into Python (``bool(x.sum() > 0)``, ``.item()``, ``.tolist()``): code branching on it may
# take another way for other inputs, so a graph of the dummy input's way is no trace of the model
_VALUE_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default}
_SHAPES_LOG = "torch.fx.experimental.symbolic_shapes"  # logs each data-dependent branch real values decided


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _size(size: int | torch.SymInt) -> int:
    """A dim's size; one that depends on the data, its value on the real tensors export ran alongside."""
    if not isinstance(size, torch.SymInt) or size.node.expr.is_number:
        return int(size)
    known = size.node.shape_env.real_tensor_prop_unbacked_vals
    value = size.node.expr.xreplace(known) if known else size.node.expr
    if not value.is_number:
        raise GuardOnDataDependentSymNode(f"size {size.node.expr} depends on the data")
    return int(value)


def _concrete(value: Any) -> Any:
    """``value`` with each size that depends on the data replaced by its value (sizes of a split by routing)."""
    if isinstance(value, torch.SymInt):
        return _size(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_concrete(v) for v in value)
    if isinstance(value, dict):
        return {k: _concrete(v) for k, v in value.items()}
    return value


def _concrete_val(value: Any) -> Any:
    """A node's value; a tensor sized by the data, a meta tensor of the sizes the dummy input gave."""
    if isinstance(value, torch.Tensor) and not all(isinstance(s, int) for s in value.shape):
        return torch.empty(_shape_meta(value), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_concrete_val(v) for v in value)
    return value


def _strip(path: str) -> str:
    if path == _INNER:
        return ""
    return path[len(_INNER) + 1 :] if path.startswith(_INNER + ".") else path


def _shape_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(_size(s) for s in value.shape)
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return "structure"
    return None


def _stack(node: fx.Node) -> list[tuple[str, str, str]]:
    """(call key, module path, type name) from the outermost module to the innermost, the root left out."""
    found = []
    for key, (path, type_name) in (node.meta.get("nn_module_stack") or {}).items():
        name = _strip(path if isinstance(path, str) else str(path))
        if name:
            call = key.rpartition("@")[2] if "@" in key else "0"
            found.append((f"{name}@{call}", name, str(type_name)))
    return found


def export_model(model: nn.Module, dummy_input: tuple) -> ExportedGraph:
    """Export ``model`` on ``dummy_input`` (in eval mode) and build the walker's graph from it.

    Sizes that depend on the data (the tokens a mixture of experts routes to each expert by
    ``nonzero``, an expert skipped when none is, Qwen4-Exp's token selection) have no value on fake
    tensors: where export or the graph's shapes need one, the model is exported again with real
    tensors run alongside (``torch.export``'s real tensor propagation), so each such size is the
    one ``dummy_input`` gives. Code reading tensor values into Python is refused then: its branches
    could go another way for another input.
    """
    try:
        return _exported_graph(model, dummy_input, real_values=False)
    except (GuardOnDataDependentSymNode, UserInputError) as error:
        if not isinstance(error, GuardOnDataDependentSymNode) and not isinstance(
            error.__cause__, GuardOnDataDependentSymNode
        ):
            raise
        try:
            found = _exported_graph(model, dummy_input, real_values=True)
        except GuardOnDataDependentSymNode as again:  # a size not even the real tensors decide
            raise UserInputError(
                f"cannot trace {type(model).__name__} with torch.export: a size depends on the data and"
                " running the dummy input does not decide it"
            ) from again
        if any(n.target in _VALUE_READS for n in found.graph.nodes):  # ``if x.sum() > 0``: a branch on values
            raise UserInputError(
                f"cannot trace {type(model).__name__} with torch.export: its code reads tensor values into Python"
                " (.item(), .tolist(), a branch on a tensor), so the graph of one input would not hold for others"
            ) from error
        found.real_values = True
        return found


def _exported_graph(model: nn.Module, dummy_input: tuple, real_values: bool) -> ExportedGraph:
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), _without_stack_traces():
            warnings.simplefilter("ignore")
            with (
                functorch_config.patch(fake_tensor_propagate_real_tensors=real_values),
                _quiet(_SHAPES_LOG),
                contextlib.redirect_stderr(io.StringIO()),  # export prints its partial graph on a data-dependent error
            ):
                program = torch.export.export(_TensorOutputs(model), tuple(dummy_input), strict=False)
    except Exception as exc:  # export raises many types for code it cannot run on fake tensors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"cannot trace {type(model).__name__} with torch.export: {reason}") from exc
    finally:
        model.train(was_training)
    _inline_grad_mode_regions(program.graph_module)
    return _rebuild(model, program)


def _inline_grad_mode_regions(module: fx.GraphModule) -> None:
    """Replace each ``wrap_with_set_grad_enabled`` call by the nodes of its subgraph, in place."""
    from torch._higher_order_ops.wrap import wrap_with_set_grad_enabled

    graph = module.graph
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target is wrap_with_set_grad_enabled]:
        region = getattr(module, str(node.args[1].target))
        _inline_grad_mode_regions(region)
        env: dict[fx.Node, Any] = dict(zip(region.graph.find_nodes(op="placeholder"), node.args[2:], strict=True))
        with graph.inserting_before(node):
            for inner in region.graph.nodes:
                if inner.op == "output":
                    results = fx.node.map_arg(inner.args[0], env.__getitem__)
                elif inner.op != "placeholder":
                    env[inner] = graph.node_copy(inner, env.__getitem__)
        for user in list(node.users):
            if user.op != "call_function" or user.target is not operator.getitem:
                raise UserInputError(f"cannot trace a grad-mode region used as {user.format_node()}")
            user.replace_all_uses_with(results[user.args[1]])
            graph.erase_node(user)
        subgraph = node.args[1]
        graph.erase_node(node)
        if not subgraph.users:
            graph.erase_node(subgraph)


@contextmanager
def _without_stack_traces() -> Iterator[None]:
    """No source stack per graph node: nothing here reads it, and capturing it was a sixth of an 80-layer trace."""
    config = torch.fx.config
    before = getattr(config, "do_not_emit_stack_traces", False)
    config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        config.do_not_emit_stack_traces = before


def _leaf_of(stack: list[tuple[str, str, str]], modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    """The outermost layer of a registered kind the node runs in: (call key, module path)."""
    for key, name, _ in stack:
        module = modules.get(name)
        kind = convertible_kind(module) if module is not None else None
        if kind is not None and kind.slots(module):
            return key, name
    return None


def _rebuild(model: nn.Module, program: torch.export.ExportedProgram) -> ExportedGraph:
    modules = dict(model.named_modules())
    state_names: dict[str, str] = {}  # placeholder name -> parameter, buffer or constant path
    for spec in program.graph_signature.input_specs:
        if spec.kind != torch.export.graph_signature.InputKind.USER_INPUT and spec.target is not None:
            state_names[spec.arg.name] = _strip(spec.target)
    old = program.graph
    leaf_of = {n: _leaf_of(_stack(n), modules) for n in old.nodes if n.op == "call_function"}
    members: dict[str, list[fx.Node]] = defaultdict(list)
    for node, leaf in leaf_of.items():
        if leaf is not None:
            members[leaf[0]].append(node)

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    attrs: dict[str, fx.Node] = {}
    calls: dict[str, list[tuple[fx.Node | None, fx.Node | None]]] = defaultdict(list)
    inference: set[str] = set()

    def new_node(op: str, target: Any, args: tuple, kwargs: dict, like: fx.Node, name_hint: str) -> fx.Node:
        node = graph.create_node(op, target, args, kwargs, name=name_hint)
        node.meta[SHAPE] = _shape_meta(like.meta.get("val"))
        node.meta["val"] = _concrete_val(like.meta.get("val"))
        node.meta["nn_module_stack"] = {key: (name, type_name) for key, name, type_name in _stack(like)}
        return node

    tensors = dict(model.named_parameters(remove_duplicate=False))
    aliases: dict[int, list[str]] = defaultdict(list)
    for path, tensor in tensors.items():
        aliases[id(tensor)].append(path)

    def owned_by_user(path: str, user: fx.Node) -> str:
        """A tied parameter by the name its user's module knows it (``wte.weight``, not ``lm_head.weight``)."""
        if path not in tensors:
            return path
        for _, module, _ in reversed(_stack(user)):
            for alias in aliases[id(tensors[path])]:
                if alias.rpartition(".")[0] == module:
                    return alias
        return path

    def mapped(value: Any, user: fx.Node | None = None) -> Any:
        def one(n: fx.Node) -> Any:
            if n in env:
                return env[n]
            path = state_names.get(n.name)
            if path is None:
                raise KeyError(n.name)
            path = owned_by_user(path, user) if user is not None else path
            if path not in attrs:
                attrs[path] = new_node("get_attr", path, (), {}, n, n.name)
            return attrs[path]

        return _concrete(fx.node.map_arg(value, one))

    done: set[str] = set()
    for node in old.nodes:
        if node.op == "placeholder":
            if node.name not in state_names:
                env[node] = new_node("placeholder", node.name, (), {}, node, node.name)
            continue
        if node.op == "output":
            graph.output(mapped(node.args[0]))
            continue
        for _, name, _ in _stack(node):
            inference.add(name)
        leaf = leaf_of.get(node)
        if leaf is None:
            args, kwargs = mapped(node.args, node), mapped(node.kwargs, node)
            env[node] = new_node(node.op, node.target, args, kwargs, node, node.name)
            continue
        key, name = leaf
        group = members[key]
        if key in done or node is not group[-1]:
            continue
        done.add(key)
        env[node] = _collapse(graph, name, group, state_names, env, new_node, calls)
    inference |= _container_calls(graph, calls)
    return ExportedGraph(graph, dict(calls), inference)


def _collapse(graph, name, group, state_names, env, new_node, calls) -> fx.Node:
    """One ``call_module`` node for one call of a layer: its inputs are the tensors it read from outside."""
    inside = set(group)
    inputs: list[fx.Node] = []
    for member in group:
        for arg in member.all_input_nodes:
            if arg not in inside and arg.name not in state_names and arg in env and env[arg] not in inputs:
                inputs.append(env[arg])
    used_outside = [m for m in group if any(u not in inside for u in m.users)]
    node = new_node("call_module", name, tuple(inputs), {}, group[-1], name.replace(".", "_"))
    if used_outside != [group[-1]]:
        node.meta[OPAQUE] = f"{name} returns several tensors"
    calls[name].append((inputs[0] if inputs else None, node))
    return node


def _container_calls(graph: fx.Graph, calls: dict[str, list]) -> set[str]:
    """Input and output node of each call of a module that holds layers (a block of a transformer).

    Its input is the first tensor from outside that it reads, its output the last of its nodes
    that is used outside it. Returns the names of all modules seen.
    """
    nodes_of: dict[str, list[fx.Node]] = defaultdict(list)
    for node in graph.nodes:
        for key in node.meta.get("nn_module_stack", {}):
            nodes_of[key].append(node)
    found: dict[str, list] = defaultdict(list)
    for key, nodes in nodes_of.items():
        name = key.rpartition("@")[0]
        if name in calls:
            continue
        inside = set(nodes)
        first_input = next(
            (a for n in nodes for a in n.all_input_nodes if a not in inside and a.op != "get_attr"), None
        )
        outputs = [n for n in nodes if any(u not in inside for u in n.users)]
        found[name].append((first_input, outputs[-1] if outputs else None))
    calls.update(found)
    return {key.rpartition("@")[0] for key in nodes_of}
