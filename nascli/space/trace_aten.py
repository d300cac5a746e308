"""Follow channels through the ATen operations of a graph built by ``torch.export``.

``space/export_graph.py`` leaves every operation outside a registered layer as an ATen node; this
module tells the ``ChannelWalker`` what each one does to the channel dimension it tracks:

- shape-preserving ops (activations, casts, dropout) keep it; elementwise ops join the channels
  of operands that line up after broadcasting, and an operand broadcast along them adds nothing;
- ``view``/``reshape`` that split the channel dim into (heads, head size) make the tensor's
  channels the *heads*, and the split group a scaled copy of them (``ChannelGroups.set_scaled``);
  a merge back makes a new group scaled from the heads. Keeping fewer heads keeps whole heads;
  a merge with the channels innermost (Swin's patch merging: 2 x 2 neighbours of C channels into
  4C) makes segments of the one group;
- ``roll`` and ``flip`` of other dims (Swin's shifted windows) and softmaxes over other dims keep it;
- ``scaled_dot_product_attention`` and batched ``matmul`` join the head groups of queries, keys
  and values; with grouped-query attention (fewer key/value heads) the query heads become a
  scaled copy of the key/value heads, so whole groups are kept;
- a mean or sum over the channels with ``keepdim`` (the statistic of an RMS or layer norm written
  by hand) leaves them free: a pruned norm normalizes over the channels it keeps;
- parameters used directly (an RMS norm's weight, a ViT's class token and position embedding)
  take the channel dim of what they meet (``floating`` until then), and are sliced with it; an
  expert's 3-d weight is sliced along its input and its output dims;
- tensors assembled in place (``new_empty`` shaped after a tracked tensor, then ``copy_`` into
  its slices) and ``stack`` along a new dim keep the channels of what they are made of;
- ``F.conv1d``/``conv2d`` with a weight the code reads, ``gather`` and ``index_add`` along other
  dims, and products whose channels lie along a kept dim (a learned query over stacked states)
  follow them too.

Anything else reading channels freezes what it touches, as under fx; a tensor made of none (``zeros``,
``arange``) is a constant. See docs/architecture.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import fx

if TYPE_CHECKING:
    from nascli.space.trace import ChannelWalker, Element

_UNARY = {
    "to", "_to_copy", "clone", "contiguous", "alias", "detach", "detach_", "lift_fresh_copy", "dropout",
    "native_dropout", "relu", "relu_", "gelu", "silu", "silu_", "tanh", "sigmoid", "neg", "rsqrt", "sqrt", "exp",
    "log", "erf", "abs", "hardtanh", "hardswish", "hardsigmoid", "leaky_relu", "elu", "mish", "softplus",
    "type_as", "clamp", "clamp_min", "clamp_max", "pow", "reciprocal", "square", "sin", "cos", "gelu_", "relu6",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "max_pool1d", "max_pool2d", "max_pool3d", "upsample_nearest2d", "upsample_bilinear2d", "expm1", "log1p",
    "log_sigmoid", "logit", "sign", "sgn", "floor", "ceil", "round", "trunc", "exp2", "tan", "atan", "sinh", "cosh",
    "asinh", "atanh", "nan_to_num", "softsign", "selu", "celu", "isnan", "isinf", "isfinite",
}  # fmt: skip
_BINARY = {
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "maximum", "minimum", "where",
    "eq", "ne", "lt", "le", "gt", "ge", "bitwise_and", "bitwise_or", "logical_and", "logical_or", "logical_not",
    "masked_fill", "masked_fill_", "bitwise_not",
}  # fmt: skip
_REDUCE = {"mean", "sum", "amax", "amin", "var", "std", "logsumexp", "prod"}
_RESHAPE = {"view", "reshape", "_unsafe_view"}
_SPLIT = {"split", "split_with_sizes", "chunk", "unbind", "tensor_split"}
# new tensors shaped after a tracked one (``x.new_empty(*x.shape[:-1], d)``, ``zeros_like(x)``)
_SHAPED_LIKE = {"new_empty", "new_zeros", "new_ones", "new_full", "empty_like", "zeros_like", "ones_like", "full_like"}
_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"}
# unary ops through which a parameter stays floating: its channel dim is still decided by its first real use
# (fx's methods of the same names too: ``self.scale.view(self.shape)``)
FLOATING_THROUGH = {"to", "_to_copy", "clone", "contiguous", "alias", "detach", "expand", "expand_as", "unsqueeze",
                    "squeeze", "select", "view", "reshape", "_unsafe_view", "transpose", "permute", "t",
                    "numpy_T"}  # fmt: skip
_TRANSPOSE = ("transpose", "permute", "t", "numpy_T")


def aten_name(node: fx.Node) -> str | None:
    """``view`` for ``aten.view.default``; None for anything that is not an ATen operator."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    return None


def visit(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """Follow one ATen node (``name`` is its operator's name)."""
    if not _reads_tracked(walker, node):
        return  # made of no channels (``zeros``, ``arange``, a mask or positions built from them): a constant
    if name in FLOATING_THROUGH and node.args and node.args[0] in walker.floating:
        floating_through(walker, node, name)
    elif name in _UNARY and node.args[0] in walker.floating:  # ``sigmoid(self.gate)``: still the parameter's dims
        walker.floating[node] = walker.floating[node.args[0]]
    elif name in _UNARY:
        walker.passthrough(node, node.args[0])
    elif name in _BINARY or name in ("max", "min") and len(node.args) > 1 and isinstance(node.args[1], fx.Node):
        elementwise(walker, node)  # ``torch.max(a, b)`` is elementwise
    elif name in _RESHAPE or name in ("flatten", "view_as"):
        _reshape(walker, node)
    elif name in _TRANSPOSE:
        _reorder(walker, node, name)
    elif name in ("unsqueeze", "squeeze", "expand", "expand_as", "slice", "select", "narrow"):
        _index_op(walker, node, name)
    elif name in _SHAPED_LIKE and node.args[0] in walker.chan:
        _shaped_like(walker, node)
    elif name in ("copy_", "copy"):
        _copy(walker, node)
    elif name in ("cat", "concat", "concatenate"):
        _cat(walker, node)
    elif name == "stack":
        _stack(walker, node)
    elif name in _SPLIT:
        _split(walker, node, name)
    elif name in _REDUCE:
        _reduce(walker, node)
    elif name in ("max", "min") and len(node.args) > 1 and isinstance(node.args[1], int):
        _reduce_with_indices(walker, node, name)
    elif name == "linalg_vector_norm":
        _vector_norm(walker, node)
    elif name == "repeat":
        _repeat(walker, node)
    elif name in ("pad", "constant_pad_nd"):
        _pad(walker, node, name)
    elif name in ("view_as_complex", "view_as_real"):
        _complex_pairs(walker, node, name)
    elif name in ("index_add", "index_add_", "index_copy", "index_copy_") and len(node.args) > 3:
        _index_add(walker, node)
    elif name == "gather" and len(node.args) > 2 and node.args[2] not in walker.chan:
        _gather(walker, node)
    elif name in _SOFTMAX:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        _along_other_dim(walker, node, dim)
    elif name == "repeat_interleave" and len(node.args) > 1 and isinstance(node.args[1], int):
        _along_other_dim(walker, node, node.args[2] if len(node.args) > 2 else node.kwargs.get("dim"))
    elif name in ("roll", "flip"):  # roll(x, shifts, dims), flip(x, dims)
        at = 2 if name == "roll" else 1
        _along_other_dim(walker, node, node.args[at] if len(node.args) > at else node.kwargs.get("dims", []))
    elif name == "scaled_dot_product_attention":
        _attention(walker, node)
    elif name in ("linear", "matmul", "bmm") and len(node.args) > 1 and node.args[1] in walker.floating:
        _parameter_linear(walker, node, name)
    elif name in ("matmul", "bmm"):
        _batched_matmul(walker, node, *node.args[:2])
    elif name in ("conv1d", "conv2d") and len(node.args) > 1 and node.args[1] in walker.floating:
        _parameter_conv(walker, node, name)
    elif name == "baddbmm":
        _batched_matmul_added(walker, node)
    elif name == "index" and node.args[0] in walker.chan:
        _index_rows(walker, node)
    elif name in ("grouped_mm_fallback", "_grouped_mm") and len(node.args) > 1 and node.args[1] in walker.floating:
        _grouped_mm(walker, node)
    elif name in ("layer_norm", "rms_norm"):
        layer_norm(walker, node)
    elif name == "batch_norm" or (name == "group_norm" and node.args[1] == 1):
        channel_norm(walker, node)  # one group normalizes over every channel kept, as a batch norm does
    elif name == "embedding" and node.args[0] in walker.floating:
        _lookup(walker, node, node.args[0])
    elif name == "index_select" and node.args[0] in walker.floating and node.args[1] == 0:
        _lookup(walker, node, node.args[0])  # rows of a position table: ``weights.index_select(0, positions)``
    elif name == "index" and node.args[0] in walker.floating and len(node.args[1]) == 1:
        _lookup(walker, node, node.args[0])  # ``self.weight[position_ids]`` (Whisper's positions)
    elif node.meta.get("val") is not None:  # None: an assertion, nothing to follow
        walker.opaque(node, f"unsupported operation aten.{name}")


def _reads_tracked(walker: ChannelWalker, node: fx.Node) -> bool:
    return any(a in walker.chan or a in walker.floating for a in node.all_input_nodes)


# -- parameters ----------------------------------------------------------------------------------
def pin(walker: ChannelWalker, node: fx.Node, dim: int) -> Element | None:
    """Give a floating parameter its channel dim (``dim`` of ``node``); None where ``node`` broadcasts it."""
    path, axes = walker.floating[node]
    if dim < 0 or dim >= len(axes) or axes[dim] is None:
        return None
    axis = axes[dim]
    if axis in walker.param_segments.get(path, {}):
        return None  # read in segments elsewhere
    size = walker.params[path].shape[axis]
    element = walker.groups.add(("param", path, axis), size)
    walker.param_slots.setdefault(path, {})[axis] = element
    if path in walker.param_frozen:
        walker.groups.freeze(element, walker.param_frozen[path])
    if (path, axis) in walker.selected_axes:
        walker.groups.freeze(element, f"aten.select picks entries of parameter {path}")
    return element


def pin_segments(walker: ChannelWalker, node: fx.Node, dim: int, sizes: tuple[int, ...]) -> tuple[Element, ...] | None:
    """``pin`` for channels that come in segments of ``sizes``: one group element per segment.

    Zamba's norm weighs the hidden state and the embeddings concatenated; a hyper-connection's
    weight reads four copies of the hidden state flattened. The parameter is sliced segment by
    segment (kinds/parameters.py). None where ``node`` broadcasts it, or where another use reads
    it in other segments.
    """
    if len(sizes) == 1:
        element = pin(walker, node, dim)
        return None if element is None else (element,)
    path, axes = walker.floating[node]
    if dim < 0 or dim >= len(axes) or axes[dim] is None:
        return None
    axis = axes[dim]
    if walker.params[path].shape[axis] != sum(sizes) or axis in walker.param_slots.get(path, {}):
        return None
    known = walker.param_segments.setdefault(path, {}).get(axis)
    if known is not None:
        return known if walker.sizes(known) == tuple(sizes) else None
    elements = tuple(walker.groups.add(("param", path, axis, i), size) for i, size in enumerate(sizes))
    walker.param_segments[path][axis] = elements
    for element in elements if path in walker.param_frozen else ():
        walker.groups.freeze(element, walker.param_frozen[path])
    for element in elements if (path, axis) in walker.selected_axes else ():
        walker.groups.freeze(element, f"aten.select picks entries of parameter {path}")
    return elements


def _parameter_linear(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """A module's own code applying a weight: ``F.linear(x, self.weight, self.bias)`` (a mixture of
    experts' router), ``x @ self.weight.T`` (Falcon's linear layers), or per expert ``bmm(x, self.weight)``
    with a 3-d weight (experts, in, out) (Llama 4's experts). The input's channels are the
    weight's input dim and the output's its output dim, each sliced with its group (kinds/parameters.py);
    the output dim is a weight output (``weight_outputs``), searched as a linear layer's is. Where
    the outputs cannot change (a router's experts), what they meet keeps them.
    """
    x, weight = node.args[0], node.args[1]
    bias = node.args[2] if name == "linear" and len(node.args) > 2 else node.kwargs.get("bias")
    shape, in_shape = walker.shape(node), walker.shape(x)
    path, axes = walker.floating[weight]
    if x not in walker.chan or shape is None or in_shape is None or len(axes) != (3 if name == "bmm" else 2):
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[x]
    if name != "bmm" and c < len(in_shape) - 1 and bias is None and shape[: c + 1] == in_shape[: c + 1]:
        # channels along a dim the product keeps (Inkling's per-head states @ its bias profiles): the weight meets
        # none of them
        walker.chan[node] = (segments, c)
        return
    # linear's weight is (out, in); a matmul's (in, out); a bmm's (experts, in, out)
    at_in, at_out = {"linear": (1, 0), "matmul": (0, 1), "bmm": (1, 2)}[name]
    columns, rows = pin_segments(walker, weight, at_in, walker.sizes(segments)), pin(walker, weight, at_out)
    if c != len(in_shape) - 1 or columns is None or rows is None:
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    for segment, column in zip(segments, columns, strict=True):
        walker.groups.union(segment, column)
    walker.result.weight_outputs.add((path, axes[at_out]))
    if bias is not None:
        if bias not in walker.floating or (element := pin(walker, bias, 0)) is None:
            walker.opaque(node, f"aten.{name} with a bias the tracer cannot follow")
            return
        walker.groups.union(rows, element)
    walker.chan[node] = ((rows,), len(shape) - 1)


def _parameter_conv(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """A module's own code convolving with a weight it holds: ``F.conv1d(x, conv.weight.squeeze(1).unsqueeze(1),
    groups=channels)`` (the short causal convolutions of Mamba-style and Inkling layers, which read their
    ``nn.Conv1d``'s weight instead of calling it). A depthwise convolution keeps the input's channels, its
    weight and bias sliced with them; a dense one (``groups=1``) reads them with the weight's input dim and
    makes its output dim a weight output, as ``F.linear`` does.
    """
    x, weight = node.args[0], node.args[1]
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    shape, in_shape, w_shape = walker.shape(node), walker.shape(x), walker.shape(weight)
    path, axes = walker.floating[weight]
    segments, c = walker.chan.get(x, ((), None))
    if shape is None or in_shape is None or w_shape is None or c != 1 or len(segments) != 1:
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    grouping = conv_grouping(node, in_shape, w_shape)
    if grouping == "other":
        walker.opaque(node, f"aten.{name} with {_conv_groups(node)} groups")
        return
    depthwise = grouping == "depthwise"
    columns, rows = (None, pin(walker, weight, 0)) if depthwise else (pin(walker, weight, 1), pin(walker, weight, 0))
    if rows is None or (not depthwise and columns is None):
        walker.opaque(node, f"aten.{name} of a parameter the tracer cannot follow")
        return
    walker.groups.union(segments[0], rows if depthwise else columns)
    if not depthwise:
        walker.result.weight_outputs.add((path, axes[0]))
    if bias is not None:
        if bias not in walker.floating or (element := pin(walker, bias, 0)) is None:
            walker.opaque(node, f"aten.{name} with a bias the tracer cannot follow")
            return
        walker.groups.union(rows, element)
    walker.chan[node] = ((rows,), 1)


def _conv_groups(node: fx.Node) -> int:
    return node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)


def conv_grouping(node: fx.Node, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str:
    """``"dense"`` (one group), ``"depthwise"`` (one group per channel, as many out as in) or ``"other"`` for an
    ``aten.conv1d``/``conv2d`` node: how the tracer follows it and the cost model prices it."""
    groups = _conv_groups(node)
    if groups == 1:
        return "dense"
    return "depthwise" if groups == in_shape[1] == w_shape[0] and w_shape[1] == 1 else "other"


def _grouped_mm(walker: ChannelWalker, node: fx.Node) -> None:
    """Experts' grouped matrix product ``(tokens, in) x (experts, in, out)`` (transformers' mixture of
    experts): the input's channels meet the weight's ``in`` dim, the output's are its ``out`` dim.

    The weight is sliced along both (kinds/parameters.py): entering the experts, ``in`` is the
    hidden width and ``out`` the experts' own width (``weight_outputs``: searched as a linear
    layer's output would be); leaving them, the other way round.
    """
    x, weight = node.args[0], node.args[1]
    shape, in_shape = walker.shape(node), walker.shape(x)
    path, axes = walker.floating[weight]
    segments, c = walker.chan.get(x, ((), None))
    if shape is None or in_shape is None or len(axes) != 3 or len(in_shape) != 2 or c != 1 or len(segments) != 1:
        walker.opaque(node, f"aten.{aten_name(node)} of a tensor the tracer cannot follow")
        return
    columns, rows = pin(walker, weight, 1), pin(walker, weight, 2)
    if columns is None or rows is None:
        walker.opaque(node, f"aten.{aten_name(node)} of a parameter the tracer cannot follow")
        return
    walker.groups.union(segments[0], columns)
    walker.result.weight_outputs.add((path, axes[2]))
    walker.chan[node] = ((rows,), 1)


def _index_rows(walker: ChannelWalker, node: fx.Node) -> None:
    """``x[token_idx]`` (a mixture of experts gathering the tokens routed to one expert): indices on
    dims before the channels, which are the last dim and stay it."""
    arg, indices = node.args[0], node.args[1]
    segments, c = walker.chan[arg]
    in_shape, shape = walker.shape(arg), walker.shape(node)
    if in_shape is None or shape is None or c != len(in_shape) - 1 or len(indices) > c:
        walker.opaque(node, "aten.index of the channels")
        return
    walker.chan[node] = (segments, len(shape) - 1)


def floating_through(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """A cast, expand, unsqueeze, transpose or size-1 reshape of a floating parameter stays floating."""
    arg = node.args[0]
    path, axes = walker.floating[arg]
    in_shape, shape = walker.shape(arg), walker.shape(node)
    if shape is None or in_shape is None:
        return
    order = _order(node, name, len(in_shape)) if name in _TRANSPOSE else None
    if name in ("to", "_to_copy", "clone", "contiguous", "alias", "detach"):
        walker.floating[node] = (path, axes)
    elif name in ("expand", "expand_as"):
        walker.floating[node] = (path, (None,) * (len(shape) - len(axes)) + tuple(axes))
    elif name == "unsqueeze":
        at = node.args[1] % len(shape)
        walker.floating[node] = (path, tuple(axes[:at]) + (None,) + tuple(axes[at:]))
    elif name == "select":  # one expert's weight of a 3-d bank, ``self.weight[i]``: the other dims stay
        at = node.args[1] % len(in_shape)
        axis = axes[at]
        if axis is not None:  # an index into it: that axis keeps its size (it may be pinned before or after)
            walker.selected_axes.add((path, axis))
            for element in _pinned(walker, path, axis):
                walker.groups.freeze(element, f"aten.select picks entries of parameter {path}")
        walker.floating[node] = (path, tuple(axes[:at]) + tuple(axes[at + 1 :]))
    elif order is not None:
        walker.floating[node] = (path, tuple(axes[i] for i in order))
    elif name in _TRANSPOSE:
        _freeze_floating(walker, node, path, f"aten.{name} of parameter {path}")
    elif name in ("view", "reshape") and (split := _into_heads(axes, in_shape, shape)) is not None:
        # a vector viewed as (heads, 1, head size) (Dory's per-head query scale): its channels are whole heads
        at, outer, inner = split
        heads = walker.groups.add(("node", node.name), shape[outer])
        walker.groups.set_scaled(pin(walker, arg, at), heads, shape[inner])
        walker.chan[node] = ((heads,), outer)
    elif [s for s in in_shape if s != 1] == [s for s in shape if s != 1]:  # a reshape adding or dropping 1s
        kept = iter(a for a, s in zip(axes, in_shape, strict=True) if s != 1)
        walker.floating[node] = (path, tuple(None if s == 1 else next(kept) for s in shape))
        sized = [(a, s) for a, s in zip(axes, in_shape, strict=True) if s != 1 and a is not None]
        if len(sized) == 1 and name in ("view", "reshape"):  # ``scale.view(self.shape)``: that shape follows
            axis, size = sized[0]
            _size_follows(walker, node, size, walker.groups.add(("param", path, axis), size))
    else:
        _freeze_floating(walker, node, path, f"aten.{name} reshapes parameter {path}")


def _pinned(walker: ChannelWalker, path: str, axis: int) -> list[Element]:
    """The group elements a parameter's ``axis`` already has (one, or one per segment)."""
    found = walker.param_slots.get(path, {}).get(axis)
    return [found] if found is not None else list(walker.param_segments.get(path, {}).get(axis, ()))


def _into_heads(
    axes: tuple[int | None, ...], in_shape: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, int, int] | None:
    """(input dim, output heads dim, output head-size dim) of a parameter's one sized dim viewed as two, or None."""
    sized = [d for d, s in enumerate(in_shape) if s != 1]
    outs = [d for d, s in enumerate(shape) if s != 1]
    if len(sized) != 1 or axes[sized[0]] is None or len(outs) != 2:
        return None
    return (sized[0], outs[0], outs[1]) if shape[outs[0]] * shape[outs[1]] == in_shape[sized[0]] else None


def _lookup(walker: ChannelWalker, node: fx.Node, table: fx.Node) -> None:
    """Rows of a table looked up by index (an embedding): the output's channels are the table's columns."""
    element = pin(walker, table, 1)
    shape = walker.shape(node)
    if element is not None and shape is not None:
        walker.chan[node] = ((element,), len(shape) - 1)


def _freeze_floating(walker: ChannelWalker, node: fx.Node, path: str, reason: str) -> None:
    """Parameter ``path`` keeps its size (``node``, an operation on it, is one the tracer cannot follow)."""
    walker.param_frozen.setdefault(path, reason)
    walker.opaque(node, reason)


# -- elementwise ---------------------------------------------------------------------------------
def elementwise(walker: ChannelWalker, node: fx.Node) -> None:
    """Operands whose channels line up with the output's join; operands broadcast along them add nothing."""
    shape = walker.shape(node)
    if shape is None:
        return
    tracked = [a for a in node.all_input_nodes if a in walker.chan]
    floating = [a for a in node.all_input_nodes if a in walker.floating]
    if not tracked:
        one_parameter = len({walker.floating[a] for a in floating}) == 1  # ``f(w) * g(w)`` of one weight
        if floating and one_parameter and all(walker.shape(a) == shape for a in floating):
            walker.floating[node] = walker.floating[floating[0]]
        elif floating or _reads_tracked(walker, node):
            walker.opaque(node, f"aten.{aten_name(node)} of parameters only")
        return
    rank = len(shape)
    aligned = []  # (segments, output dim, whether it is broadcast there)
    for arg in tracked:
        segments, dim = walker.chan[arg]
        in_shape = walker.shape(arg)
        out_dim = rank - len(in_shape) + dim
        aligned.append((arg, segments, out_dim, in_shape[dim] == 1 and shape[out_dim] != 1))
    real = [a for a in aligned if not a[3]]
    if not real:
        walker.chan[node] = (aligned[0][1], aligned[0][2])
        return
    free = [a for a in real if not any(walker.groups.frozen_reason(e) for e in a[1])]
    # the reference is an operand along whose channels every other one runs too or is broadcast: a
    # single key/value head (one channel) times a rotary table tracked along the sequence
    fits = [a for a in free or real if all(o[2] == a[2] or _size_at(walker, o[0], a[2], rank) == 1 for o in real)]
    reference = (fits or free or real)[0]
    ref_segments, ref_dim = reference[1], reference[2]
    for arg, segments, out_dim, _ in aligned:
        in_shape = walker.shape(arg)
        at = ref_dim - (rank - len(in_shape))
        if at < 0 or in_shape[at] == 1 and (shape[ref_dim] != 1 or out_dim != ref_dim):
            continue  # broadcast along the reference channels
        if out_dim != ref_dim and _repeated_along(arg, at):  # expanded over them (XLM's mask ``expand_as(scores)``)
            for element in segments:
                walker.groups.freeze(element, f"aten.{aten_name(node)} meets them along another dim")
            continue
        if out_dim != ref_dim or walker.sizes(segments) != walker.sizes(ref_segments):
            walker.opaque(node, f"aten.{aten_name(node)} combines tensors along different dimensions")
            return
        for a, b in zip(ref_segments, segments, strict=True):
            walker.groups.union(a, b)
    _constants_along(walker, node, ref_segments, ref_dim)
    for arg in floating:
        in_shape = walker.shape(arg)
        at = ref_dim - (rank - len(in_shape))
        if at < 0 or in_shape[at] == 1 and shape[ref_dim] != 1:
            continue
        elements = pin_segments(walker, arg, at, walker.sizes(ref_segments))
        if elements is None:
            walker.opaque(node, f"aten.{aten_name(node)} with a parameter the tracer cannot follow")
            return
        for segment, element in zip(ref_segments, elements, strict=True):
            walker.groups.union(segment, element)
    walker.chan[node] = (ref_segments, ref_dim)


def _constants_along(walker: ChannelWalker, node: fx.Node, segments: tuple, c: int) -> None:
    """Record each constant operand of ``node`` (made of no channels) that runs along its channels ``c`` at
    their full size: ALiBi's bias of each head, which Bloom and MPT build from their head count outside the
    attention and hand it. ``space/sliced_inputs.py`` has the attention slice it with its heads."""
    rank = len(walker.shape(node))
    for arg in node.all_input_nodes:
        shape = walker.shape(arg)
        if arg in walker.chan or arg in walker.floating or shape is None or len(segments) != 1:
            continue
        at = c - (rank - len(shape))
        if at >= 0 and shape[at] == walker.sizes(segments)[0] > 1:
            walker.result.constants_along.append((arg, at, segments[0]))


def _shaped_like(walker: ChannelWalker, node: fx.Node) -> None:
    """A new tensor with channels of its own where the one it is shaped after has them, at the same size.

    DeepSeek's multi-head latent attention builds its keys as ``kv.new_empty(*kv.shape[:-1], d)`` and
    copies the parts in (``_copy``), which join them with the heads. Its own group, not ``kv``'s: code
    that picks one channel out of ``zeros_like(x)`` (GIT) fixes only the zeros. Where the model's code
    wrote the size out, the forward check at conversion (space/shrink_check.py) keeps it.
    """
    c = walker.chan[node.args[0]][1]
    shape, in_shape = walker.shape(node), walker.shape(node.args[0])
    if shape is not None and in_shape is not None and len(shape) == len(in_shape) and shape[c] == in_shape[c]:
        walker.new_tensor(node, c)
    # otherwise a constant of another shape, which takes only the dtype and device (Ergo's
    # ``hidden.new_ones(index.shape)``): it reads no channels


def _copy(walker: ChannelWalker, node: fx.Node) -> None:
    """``dst.copy_(src)``: src's channels join dst's where they line up (src broadcast to dst's shape).

    A source tracked along another dim and repeated across dst's channels (the one rotary key
    DeepSeek's latent attention expands over every head) adds its own channels along that other
    dim, which no group follows: they stay fixed.
    """
    dst, src = node.args[0], node.args[1]
    if dst not in walker.chan:
        if src in walker.chan or src in walker.floating:
            walker.opaque(node, f"aten.{aten_name(node)} into a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[dst]
    if src in walker.chan:
        meeting = _meet(walker, segments, c, len(walker.shape(dst)), src)
        if meeting == "repeated":
            for element in walker.chan[src][0]:
                walker.groups.freeze(element, f"aten.{aten_name(node)} repeats them across another tensor's channels")
        elif meeting == "apart":
            walker.opaque(node, f"aten.{aten_name(node)} of tensors whose channels do not line up")
            return
    elif src in walker.floating:
        walker.opaque(node, f"aten.{aten_name(node)} of a parameter the tracer cannot follow")
        return
    walker.chan[node] = (segments, c)


def _meet(walker: ChannelWalker, segments: tuple, c: int, rank: int, other: fx.Node) -> str:
    """How tracked ``other``, broadcast to a result of ``rank`` dims whose channels are ``segments`` along
    ``c``, meets them: "joined" (its channels line up with them, and join them), "repeated" (it holds the
    same values all along them) or "apart"."""
    other_segments, other_c = walker.chan[other]
    shift = rank - len(walker.shape(other))
    if shift + other_c == c and walker.sizes(other_segments) == walker.sizes(segments):
        for a, b in zip(segments, other_segments, strict=True):
            walker.groups.union(a, b)
        return "joined"
    return "repeated" if c < shift or _repeated_along(other, c - shift) else "apart"


def _repeated_along(node: fx.Node, dim: int) -> bool:
    """Whether ``node``'s value is the same at every index of ``dim`` (size 1, or expanded: stride 0)."""
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or dim >= value.dim():
        return False
    return value.shape[dim] == 1 or value.stride()[dim] == 0


def _size_at(walker: ChannelWalker, node: fx.Node, dim: int, rank: int) -> int:
    """The size of ``node`` along ``dim`` of a result of ``rank`` dims it is broadcast to (1 where it has none)."""
    shape = walker.shape(node)
    at = dim - (rank - len(shape))
    return shape[at] if at >= 0 else 1


def _along_other_dim(walker: ChannelWalker, node: fx.Node, dim: Any) -> None:
    """A softmax over another dim keeps the channels, and so does a roll or flip of other dims
    (Swin's shifted windows roll the feature map's rows and columns) and a ``repeat_interleave`` along
    one (Ergo's experts give each routed token a row); over the channels, or over every dim at once
    (``roll`` without dims), it is opaque."""
    arg, shape = node.args[0], walker.shape(node)
    dims = list(dim) if isinstance(dim, (list, tuple)) else [dim]
    if arg in walker.chan and shape is not None and dims and all(isinstance(d, int) for d in dims):
        if all(d % len(shape) != walker.chan[arg][1] for d in dims):
            walker.chan[node] = walker.chan[arg]
            return
    walker.opaque(node, f"aten.{aten_name(node)} over the channels")


def _index_add(walker: ChannelWalker, node: fx.Node) -> None:
    """``out.index_add(dim, rows, source)`` along another dim than the channels (a mixture of experts adding
    each expert's output to the rows of the tokens routed to it): ``source``'s channels join ``out``'s."""
    target, dim, source = node.args[0], node.args[1], node.args[3]
    shape, source_shape = walker.shape(node), walker.shape(source)
    if target not in walker.chan and target not in walker.floating and source in walker.chan:
        segments, c = walker.chan[source]  # added into zeros: the sum holds the source's channels
        if shape is not None and source_shape is not None and len(shape) == len(source_shape):
            if (dim % len(shape) if isinstance(dim, int) else c) != c and shape[c] == source_shape[c]:
                walker.chan[node] = (segments, c)
                return
    if target in walker.chan and source in walker.chan and shape is not None and source_shape is not None:
        (segments, c), (source_segments, sc) = walker.chan[target], walker.chan[source]
        along = dim % len(shape) if isinstance(dim, int) else c
        if (
            along != c
            and sc == c
            and len(source_shape) == len(shape)
            and walker.sizes(segments) == walker.sizes(source_segments)
        ):
            for a, b in zip(segments, source_segments, strict=True):
                walker.groups.union(a, b)
            walker.chan[node] = (segments, c)
            return
    walker.opaque(node, f"aten.{aten_name(node)} the tracer cannot follow")


def _gather(walker: ChannelWalker, node: fx.Node) -> None:
    """``x.gather(dim, index)`` with an index made of no channels, along another dim than the channels
    (Inkling's relative-position bias picks each head's entries by distance): the channels stay where they
    are. An index of the full size along them, built from the traced shape, is rebuilt by the model's code
    at every width."""
    arg, dim, shape, in_shape = node.args[0], node.args[1], walker.shape(node), walker.shape(node.args[0])
    if arg in walker.chan and shape is not None and in_shape is not None and isinstance(dim, int):
        segments, c = walker.chan[arg]
        if dim % len(shape) != c and len(shape) == len(in_shape) and shape[c] == in_shape[c]:
            walker.chan[node] = (segments, c)
            return
    walker.opaque(node, "aten.gather along the channels")


# -- shapes --------------------------------------------------------------------------------------
def _runs(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input dims with runs of output dims of equal size (how a reshape regroups dims)."""
    runs, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ins, outs, pa, pb = [], [], 1, 1
        if i < len(a):
            ins.append(i)
            pa, i = pa * a[i], i + 1
        if j < len(b):
            outs.append(j)
            pb, j = pb * b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                ins.append(i)
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                outs.append(j)
                pb, j = pb * b[j], j + 1
            else:
                return None
        runs.append((ins, outs))
    return runs


def _reshape(walker: ChannelWalker, node: fx.Node) -> None:
    """Keep, split into (heads, head size), or merge (heads, head size) back: see the module docstring."""
    arg = node.args[0]
    shape, in_shape = walker.shape(node), walker.shape(arg)
    if arg not in walker.chan or shape is None or in_shape is None or arg in walker.scales:
        walker.opaque(node, f"aten.{aten_name(node)} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    runs = _runs(in_shape, shape)
    run = next((r for r in runs or [] if c in r[0]), None)
    if run is None or not run[1]:  # not a regrouping, or one channel reshaped away
        walker.opaque(node, f"aten.{aten_name(node)} reshapes the channels")
        return
    ins = [d for d in run[0] if in_shape[d] != 1 or d == c]  # one head (multi-query keys) is still the heads
    outs = [d for d in run[1] if shape[d] != 1] or run[1][:1]
    if ins == [c] and (c == 0 or in_shape[c - 1] != 1) and _one_head(node, run[1], shape, in_shape[c]):
        # (a 1 already before the channels, MViTv2's (1, 8, 1, 96) -> (1, 8, 1, 1, 96) at a 1 x 1 map, may be the
        # one the reshape keeps: the channels move, no head is made)
        outs = run[1]  # (head size) -> (1, head size): the split of one key/value head
    if ins == [c] and len(outs) == 1:
        if len(segments) == 1 and _written_out(node, outs[0]):  # reshape(-1, self.hidden_dim): it follows
            _size_follows(walker, node, shape[outs[0]], segments[0])
        walker.chan[node] = (segments, outs[0])
    elif (
        ins == [c]
        and len(segments) == 1
        and len(outs) > 2
        and not walker.is_part(segments[0])
        and _unbound_later(node, len(shape), outs[0], shape[outs[0]])
    ):
        # (q, k and v) x heads x head size in one reshape: equal parts of the channels, each split into heads
        part = walker.groups.add(("node", f"{node.name}.part"), in_shape[c] // shape[outs[0]])
        walker.groups.set_repeat(segments[0], part, shape[outs[0]])
        walker.parts.append(part)
        heads = walker.groups.add(("node", node.name), shape[outs[1]])
        walker.groups.set_scaled(part, heads, math.prod(shape[d] for d in outs[2:]))
        _size_follows(walker, node, shape[outs[1]], heads)
        walker.chan[node] = ((heads,), outs[1])
    elif (
        ins == [c]
        and len(segments) == 1
        and len(outs) == 2
        and not walker.is_part(segments[0])
        and _unbound_later(node, len(shape), outs[0], shape[outs[0]])
    ):
        # (parts, part size) taken apart later: equal parts of the channels (Moshi's gate and up halves of one
        # projection, ``view(b, s, 2, -1)`` then ``[..., 0, :]`` and ``[..., 1, :]``), not heads
        part = walker.groups.add(("node", f"{node.name}.part"), shape[outs[1]])
        walker.groups.set_repeat(segments[0], part, shape[outs[0]])
        walker.parts.append(part)
        walker.chan[node] = ((part,), outs[1])
    elif ins == [c] and len(segments) == 1:  # split: (heads * head size) -> (heads, head size)
        heads = walker.groups.add(("node", node.name), shape[outs[0]])
        walker.groups.set_scaled(segments[0], heads, math.prod(shape[d] for d in outs[1:]))
        if _written_out(node, outs[0]):
            _size_follows(walker, node, shape[outs[0]], heads)
        walker.chan[node] = ((heads,), outs[0])
    elif len(outs) == 1 and ins and ins[0] == c and len(segments) == 1:  # merge: channels outermost
        merged = walker.groups.add(("node", node.name), shape[outs[0]])
        walker.groups.set_scaled(merged, segments[0], math.prod(in_shape[d] for d in ins[1:]))
        if _written_out(node, outs[0]) and aten_name(arg) != "expand":  # a repeat's count is the code's product
            _size_follows(walker, node, shape[outs[0]], merged)
        walker.chan[node] = ((merged,), outs[0])
    elif len(outs) == 1 and len(ins) > 1 and ins[-1] == c and len(segments) == 1 and aten_name(arg) != "expand":
        # merge, channels innermost: each position of the merged dims holds all the channels in turn (Swin's
        # patch merging flattens 2 x 2 neighbours of C channels into 4C), so they are segments of one group
        count = math.prod(in_shape[d] for d in ins[:-1])
        walker.chan[node] = ((segments[0],) * count, outs[0])
    else:
        walker.opaque(node, f"aten.{aten_name(node)} reshapes the channels")


def _written_out(node: fx.Node, dim: int) -> bool:
    """Whether a view or reshape names the size of ``dim`` (not -1, which the model's code leaves to
    follow the channels): only then may a size the module holds have to follow it. A head size equal to
    the head count (8 heads of 8) would otherwise be taken for it."""
    if aten_name(node) == "view_as":  # the other tensor's shape, whatever it is
        return False
    sizes = node.args[1] if len(node.args) > 1 else None
    return not (isinstance(sizes, (list, tuple)) and dim < len(sizes) and sizes[dim] == -1)


def _one_head(node: fx.Node, outs: list[int], shape: tuple[int, ...], size: int) -> bool:
    """Whether a reshape's output dims ``outs`` split ``size`` channels into one head of ``size`` entries,
    as a (batch, sequence, heads, head size) view does for the single key/value head of multi-query
    attention: a 1 right before the last dim, in a tensor of at least four dims, that an attention reads."""
    one = len(shape) >= 4 and outs == [len(shape) - 2, len(shape) - 1] and shape[-2] == 1 and shape[-1] == size
    return one and _reaches_attention(node)


def _reaches_attention(node: fx.Node, steps: int = 24) -> bool:
    """Whether ``node`` flows into an attention within ``steps`` operations (rotary embeddings, casts
    and transposes on the way): then a size-1 dim before the channels is a single head."""
    seen, frontier = {node}, [node]
    for _ in range(steps):
        frontier = [user for n in frontier for user in n.users if user not in seen]
        if not frontier:
            return False
        if any(aten_name(n) in ("scaled_dot_product_attention", "matmul", "bmm") for n in frontier):
            return True
        seen.update(frontier)
    return False


def _size_follows(walker: ChannelWalker, node: fx.Node, size: int, element: Element) -> None:
    """The module running ``node`` may size it by a number it holds (timm's ``num_heads`` and
    ``attn_dim``, a layer norm's ``normalized_shape``): that attribute follows ``element``'s active
    size, as a split's part size does (``_split_channels``, kinds/parameters.py)."""
    stack = list(node.meta.get("nn_module_stack", {}).values())
    if stack:
        walker.result.split_sizes.append((stack[-1][0], size, element))


def _unbound_later(node: fx.Node, rank: int, dim: int, size: int) -> bool:
    """Whether ``dim`` of ``node`` (of ``rank`` dims) is taken apart downstream (unbind, or a split into
    ``size`` items), through any reordering of the dims: then it counts equal parts (timm's fused q, k,
    v), not heads. Selecting each of its ``size`` entries (``x[..., 0, :]``, ``x[..., 1, :]``) takes it apart too."""
    selected = set()
    for user in node.users:
        name = aten_name(user)
        if name in _TRANSPOSE:
            order = _order(user, name, rank)
            if order is not None and _unbound_later(user, rank, order.index(dim), size):
                return True
        elif name in ("clone", "contiguous", "_to_copy", "alias") and _unbound_later(user, rank, dim, size):
            return True
        elif name in ("unbind", "split", "split_with_sizes", "chunk"):
            at = 1 if name == "unbind" else 2
            along = user.args[at] if len(user.args) > at else user.kwargs.get("dim", 0)
            items = user.meta.get("val")
            parts = len(items) if isinstance(items, (list, tuple)) else 0
            if isinstance(along, int) and along % rank == dim and parts == size:
                return True
        elif name == "select" and isinstance(user.args[1], int) and user.args[1] % rank == dim:
            selected.add(user.args[2] % size)
    return size > 1 and selected == set(range(size))


def _order(node: fx.Node, name: str, rank: int) -> list[int] | None:
    if name == "t":
        return [1, 0] if rank == 2 else list(range(rank))
    if name == "numpy_T":  # ``W.T``: every dim reversed
        return list(range(rank))[::-1]
    if name == "permute":
        dims = node.args[1]
        return [d % rank for d in dims] if all(isinstance(d, int) for d in dims) else None
    a, b = node.args[1], node.args[2]
    if not (isinstance(a, int) and isinstance(b, int)):
        return None
    order = list(range(rank))
    order[a % rank], order[b % rank] = order[b % rank], order[a % rank]
    return order


def _reorder(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    arg = node.args[0]
    in_shape = walker.shape(arg)
    order = _order(node, name, len(in_shape)) if in_shape is not None else None
    if arg not in walker.chan or order is None:
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    walker.chan[node] = (segments, order.index(c))


def _index_op(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """unsqueeze, squeeze, expand(_as), slice, select, narrow: the channel dim moves or stays, unless it is cut."""
    arg = node.args[0]
    shape, in_shape = walker.shape(node), walker.shape(arg)
    if arg not in walker.chan or shape is None or in_shape is None:
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    dim = node.args[1] if len(node.args) > 1 else None
    if name == "unsqueeze":
        at = dim % len(shape)
        walker.chan[node] = (segments, c + (at <= c))
    elif name in ("expand", "expand_as"):  # expand_as(x, other): other's shape, x's channels
        out = c + len(shape) - len(in_shape)
        if in_shape[c] == 1 and shape[out] != 1:
            # one channel repeated (the single rotary key of latent attention over every head): the copies
            # are channels of their own, which join whatever they meet
            walker.new_tensor(node, out)
        elif in_shape[c] != shape[out]:
            walker.opaque(node, "aten.expand of the channels")
        else:
            walker.chan[node] = (segments, out)
    elif name == "squeeze":
        dims = range(len(in_shape)) if dim is None else [dim] if isinstance(dim, int) else dim
        gone = [d % len(in_shape) for d in dims if in_shape[d % len(in_shape)] == 1]
        if c in gone:
            walker.opaque(node, "aten.squeeze of the channels")
        else:
            walker.chan[node] = (segments, c - sum(d < c for d in gone))
    elif not isinstance(dim, int):
        walker.opaque(node, f"aten.{name} along a dim the tracer cannot read")
    elif dim % len(in_shape) != c:
        walker.chan[node] = (segments, c - (name == "select" and dim % len(in_shape) < c))
    elif name != "select" and shape[c] == in_shape[c]:
        walker.chan[node] = (segments, c)  # the whole range
    elif name == "slice" and (piece := _slice_piece(walker, node, c, in_shape[c])) is not None:
        walker.chan[node] = ((piece,), c)
    elif name == "slice" and len(segments) == 1 and (interleaved := _strided(walker, node, in_shape[c])) is not None:
        walker.chan[node] = ((interleaved,), c)
    else:
        walker.opaque(node, f"aten.{name} of part of the channels")


def _strided(walker: ChannelWalker, node: fx.Node, size: int) -> Element | None:
    """The channels a strided slice takes from parts interleaved entry by entry, or None.

    gpt-oss keeps its experts' gate and up weights interleaved and takes them apart as
    ``gate_up[..., ::2]`` and ``gate_up[..., 1::2]``: the whole is ``step`` consecutive entries per
    channel of one part group (a scaled copy of it, as heads are of a width), so keeping a prefix
    of the parts keeps a prefix of the whole.
    """
    _, start, end, step = _slice_args(node)
    start, end = start or 0, size if end is None else end
    if not all(isinstance(v, int) for v in (start, end, step)):
        return None
    if not (step > 1 and size % step == 0 and 0 <= start < step and end >= size):
        return None
    whole = walker.chan[node.args[0]][0][0]
    scaled = walker.groups.scaled_of(whole)
    if scaled is not None and scaled[1] == step:
        return scaled[0]
    part = walker.groups.add(("node", f"{node.name}.interleaved"), size // step)
    walker.groups.set_scaled(whole, part, step)
    return part


def _slice_piece(walker: ChannelWalker, node: fx.Node, c: int, size: int) -> Element | None:
    """The piece of the channels ``node`` slices, where the slices of its input tile the channels.

    Phi-3 takes q, k and v out of one projection as ``qkv[..., :q]``, ``qkv[..., q:q + kv]`` and
    ``qkv[..., q + kv:]``: together the slices split the channels into runs, as ``split`` with
    those sizes would (``_pieces``). Slices that overlap or leave channels out stay opaque.
    """
    arg = node.args[0]
    if arg not in walker.sliced:
        walker.sliced[arg] = None
        segments = walker.chan[arg][0]
        ranges = sorted({r for user in arg.users if (r := _channel_range(user, c, size)) is not None})
        tiled = ranges and ranges[0][0] == 0 and ranges[-1][1] == size
        tiled = tiled and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        if tiled and len(ranges) > 1 and len(segments) == 1 and not walker.is_part(segments[0]):
            pieces = _pieces(walker, node, segments[0], [end - start for start, end in ranges])
            walker.sliced[arg] = dict(zip(ranges, pieces, strict=True))
    pieces = walker.sliced[arg]
    return None if pieces is None else pieces.get(_channel_range(node, c, size))


def _channel_range(node: fx.Node, c: int, size: int) -> tuple[int, int] | None:
    """(start, end) of an ``aten.slice`` of dim ``c`` with step 1 and int bounds, clamped to ``size``; else None."""
    if aten_name(node) != "slice":
        return None
    dim, start, end, step = _slice_args(node)
    shape = node.args[0].meta.get("val")
    if not all(isinstance(v, int) for v in (dim, step)) or step != 1 or shape is None or dim % shape.dim() != c:
        return None
    bounds = [0 if start is None else start, size if end is None else end]
    if not all(isinstance(v, int) for v in bounds):
        return None
    start, end = (min(max(v + size if v < 0 else v, 0), size) for v in bounds)
    return (start, end) if start < end else None


def _slice_args(node: fx.Node) -> tuple[Any, Any, Any, Any]:
    """(dim, start, end, step) of an ``aten.slice``, positional or keyword; start and end may be None."""
    args = list(node.args) + [None] * (5 - len(node.args))
    _, dim, start, end, step = args[:5]
    dim = node.kwargs.get("dim", 0 if dim is None else dim)
    start = node.kwargs.get("start", start)
    end = node.kwargs.get("end", end)
    return dim, start, end, node.kwargs.get("step", 1 if step is None else step)


def _cat(walker: ChannelWalker, node: fx.Node) -> None:
    """Along the channels, segments follow one another; along another dim, operands' channels join.

    Empty operands (an empty cache) are left out; a floating parameter (a class token) takes the
    channel dim of the others.
    """
    shape = walker.shape(node)
    parts = [p for p in node.args[0] if walker.shape(p) is None or math.prod(walker.shape(p)) > 0]
    dim = node.args[1] if len(node.args) > 1 else 0
    tracked = [p for p in parts if p in walker.chan]
    if shape is None or not tracked or any(p not in walker.chan and p not in walker.floating for p in parts):
        walker.opaque(node, "aten.cat of tensors the tracer cannot follow")
        return
    dim %= len(shape)
    dims = {walker.chan[p][1] for p in tracked}
    if dims == {dim} and len(tracked) == len(parts):
        walker.chan[node] = (tuple(e for p in parts for e in walker.chan[p][0]), dim)
        return
    c = walker.chan[tracked[0]][1]
    segments = walker.chan[tracked[0]][0]
    if c == dim or any(walker.chan[p][1] != c or walker.sizes(walker.chan[p][0]) != walker.sizes(segments)
                       for p in tracked):  # fmt: skip
        walker.opaque(node, "aten.cat of tensors whose channels do not line up")
        return
    for p in tracked[1:]:
        for a, b in zip(segments, walker.chan[p][0], strict=True):
            walker.groups.union(a, b)
    for p in parts:
        if p in walker.floating:
            element = pin(walker, p, c)
            if element is None or len(segments) != 1:
                walker.opaque(node, "aten.cat with a parameter the tracer cannot follow")
                return
            walker.groups.union(segments[0], element)
    walker.chan[node] = (segments, c)


def _stack(walker: ChannelWalker, node: fx.Node) -> None:
    """Stacked along a new dim, operands whose channels line up join (interleaved rotary embeddings
    stack the halves of each head, ``stack([-x2, x1], -1)``, then flatten them back)."""
    shape = walker.shape(node)
    parts = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if shape is None or not isinstance(dim, int) or any(p not in walker.chan for p in parts):
        walker.opaque(node, "aten.stack of tensors the tracer cannot follow")
        return
    segments, c = walker.chan[parts[0]]
    if any(walker.chan[p][1] != c or walker.sizes(walker.chan[p][0]) != walker.sizes(segments) for p in parts):
        walker.opaque(node, "aten.stack of tensors whose channels do not line up")
        return
    for p in parts[1:]:
        for a, b in zip(segments, walker.chan[p][0], strict=True):
            walker.groups.union(a, b)
    walker.chan[node] = (segments, c + (dim % len(shape) <= c))


def _split(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """Split along another dim: every item keeps the channels. Along the channels: equal parts."""
    arg = node.args[0]
    in_shape = walker.shape(arg)
    value = node.meta.get("val")
    at = 1 if name == "unbind" else 2  # unbind(x, dim); split(x, size, dim), chunk(x, n, dim), ...
    dim = node.args[at] if len(node.args) > at else node.kwargs.get("dim", 0)
    if arg not in walker.chan or in_shape is None or not isinstance(dim, int) or not isinstance(value, (list, tuple)):
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    dim %= len(in_shape)
    if dim == c and name != "unbind":
        _split_channels(walker, node, name, in_shape[c], segments)
        return
    if dim == c:
        walker.opaque(node, "aten.unbind of the channels")
        return
    out_c = c - (name == "unbind" and dim < c)
    walker.set_tuple_output(node, {i: (segments, out_c) for i in range(len(value))}, len(value))


def _split_channels(walker: ChannelWalker, node: fx.Node, name: str, size: int, segments: tuple) -> None:
    """Equal parts of the channels (q, k and v of one projection) share one part group, as a chunk does.

    The size of a part is a number in the graph; where it is an int attribute of the module
    running the split (GPT-2's ``split_size``), that attribute follows the part's size
    (``result.split_sizes``, kinds/parameters.py). Otherwise the forward check at conversion tells
    whether the model's code follows smaller parts.
    """
    value = node.meta["val"]  # the items, checked by the caller
    parts = len(value)
    part_size = size // parts if parts else 0
    dim = walker.chan[node.args[0]][1]
    sizes = [tuple(v.shape)[dim] for v in value]
    if parts and len(segments) == 1 and not walker.is_part(segments[0]) and len(set(sizes)) > 1:
        pieces = _pieces(walker, node, segments[0], sizes)
        walker.set_tuple_output(node, {i: ((piece,), dim) for i, piece in enumerate(pieces)}, parts)
        return
    if not parts or len(segments) != 1 or any(s != part_size for s in sizes) or walker.is_part(segments[0]):
        walker.opaque(node, f"aten.{name} of the channels")
        return
    part = walker.groups.add(("node", f"{node.name}.part"), part_size)
    walker.groups.set_repeat(segments[0], part, parts)
    walker.parts.append(part)
    stack = list(node.meta.get("nn_module_stack", {}).values())
    if name != "chunk" and stack:
        walker.result.split_sizes.append((stack[-1][0], part_size, part))
    walker.set_tuple_output(node, {i: ((part,), dim) for i in range(parts)}, parts)


def _pieces(walker: ChannelWalker, node: fx.Node, whole: Element, sizes: list[int]) -> list[Element]:
    """Split ``whole``'s channels into runs of ``sizes`` (q, k and v of one projection with fewer
    key/value heads; MobileViT's ``[1, d, d]``), each a group of its own.

    As for equal parts, a size that is an int attribute of the module running the split follows
    its piece's active size (``result.split_sizes``; MobileViT's ``embed_dim`` sizes both its k
    and v, which its code then joins into one group). The forward check at conversion keeps an
    hparam at full size where that is not enough.
    """
    pieces = [walker.groups.add(("node", f"{node.name}.piece{i}"), size) for i, size in enumerate(sizes)]
    walker.groups.set_pieces(whole, tuple(pieces))
    walker.parts.extend(pieces)
    stack = list(node.meta.get("nn_module_stack", {}).values())
    if stack:
        walker.result.split_sizes.extend((stack[-1][0], size, piece) for size, piece in zip(sizes, pieces, strict=True))
    return pieces


def _reduce(walker: ChannelWalker, node: fx.Node) -> None:
    """Over other dims the channels stay; over the channels with keepdim it is a norm's statistic."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    _reduce_over(walker, node, node.args[0], dims, keepdim)


def _reduce_over(walker: ChannelWalker, node: fx.Node, arg: Any, dims: Any, keepdim: Any) -> None:
    in_shape, shape = walker.shape(arg), walker.shape(node)
    if arg not in walker.chan or in_shape is None or shape is None or dims is None or not isinstance(keepdim, bool):
        walker.opaque(node, f"aten.{aten_name(node)} over every dimension")
        return
    reduced = {d % len(in_shape) for d in ([dims] if isinstance(dims, int) else dims)}
    segments, c = walker.chan[arg]
    if c not in reduced:
        walker.chan[node] = (segments, c if keepdim else c - sum(d < c for d in reduced))
    elif keepdim:
        walker.new_tensor(node, c)  # one value per position, computed over whichever channels are kept
    else:
        walker.opaque(node, f"aten.{aten_name(node)} over the channels")


def _reduce_with_indices(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """``x.max(dim, keepdim)``: values and indices along another dim than the channels keep them (the
    stable softmax of attention sinks subtracts the maximum logit per row)."""
    arg, dim = node.args[0], node.args[1]
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    in_shape = walker.shape(arg)
    if arg not in walker.chan or in_shape is None or not isinstance(keepdim, bool):
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    dim %= len(in_shape)
    if dim == c:
        walker.opaque(node, f"aten.{name} over the channels")
        return
    out_c = c if keepdim else c - (dim < c)
    walker.set_tuple_output(node, {0: (segments, out_c), 1: (segments, out_c)}, 2)


def _vector_norm(walker: ChannelWalker, node: fx.Node) -> None:
    """``linalg.vector_norm(x, ord, dim, keepdim)``: a reduction (an L2-normalized query or key per head)."""
    arg = node.args[0]
    dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    keepdim = node.args[3] if len(node.args) > 3 else node.kwargs.get("keepdim", False)
    _reduce_over(walker, node, arg, dims, keepdim)


def _repeat(walker: ChannelWalker, node: fx.Node) -> None:
    """``x.repeat(sizes)``: tiled along other dims than the channels, they stay; tiled along them, opaque."""
    arg, sizes = node.args[0], node.args[1]
    in_shape, shape = walker.shape(arg), walker.shape(node)
    if arg not in walker.chan or in_shape is None or shape is None or not all(isinstance(n, int) for n in sizes):
        walker.opaque(node, "aten.repeat of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    out_c = c + len(shape) - len(in_shape)
    if sizes[out_c] != 1:
        walker.opaque(node, "aten.repeat of the channels")
        return
    walker.chan[node] = (segments, out_c)


def _pad(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """``F.pad``: padded along other dims than the channels (a sequence padded to whole chunks), they stay."""
    arg, amounts = node.args[0], node.args[1]
    in_shape = walker.shape(arg)
    if arg not in walker.chan or in_shape is None or not all(isinstance(n, int) for n in amounts):
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    from_last = len(in_shape) - 1 - c  # F.pad's amounts come in pairs from the last dim backwards
    if any(amounts[2 * from_last : 2 * from_last + 2]):
        walker.opaque(node, f"aten.{name} of the channels")
        return
    walker.chan[node] = (segments, c)


def _complex_pairs(walker: ChannelWalker, node: fx.Node, name: str) -> None:
    """Rotary embeddings in complex numbers (Llama 4, DeepSeek-V2): ``view_as_complex`` takes pairs of the
    last dim as one number, ``view_as_real`` gives them back. Channels along an earlier dim stay."""
    arg = node.args[0]
    in_shape = walker.shape(arg)
    if arg not in walker.chan or in_shape is None:
        walker.opaque(node, f"aten.{name} of a tensor the tracer cannot follow")
        return
    segments, c = walker.chan[arg]
    if name == "view_as_complex" and c >= len(in_shape) - 1:
        walker.opaque(node, f"aten.{name} of the channels")
        return
    walker.chan[node] = (segments, c)


def layer_norm(walker: ChannelWalker, node: fx.Node) -> None:
    """A functional layer or RMS norm over the channels: its weight and bias follow them. Over the last dim
    of a tensor whose channels lie along another, it leaves them free and keeps its own size."""
    arg, normalized = node.args[0], node.args[1]
    shape = walker.shape(arg)
    if arg not in walker.chan or shape is None or list(normalized) != [shape[-1]]:
        walker.opaque(node, f"{_name(node)} the tracer cannot follow")
        return
    if walker.chan[arg][1] != len(shape) - 1:  # a norm of each head (Ergo's q and k norms): the channels pass
        walker.chan[node] = walker.chan[arg]  # its weight has an entry per position of the last dim, not per channel
        return
    _follow_channels(walker, node, arg)
    if node in walker.chan and len(walker.chan[arg][0]) == 1:
        _size_follows(walker, node, shape[-1], walker.chan[arg][0][0])


def channel_norm(walker: ChannelWalker, node: fx.Node) -> None:
    """A functional batch norm (a library's norm-and-activation layer): its weight, bias and statistics
    follow the channels of its input (dim 1)."""
    arg = node.args[0]
    if arg not in walker.chan or walker.chan[arg][1] != 1:
        walker.opaque(node, f"{_name(node)} over another dim than the channels")
        return
    _follow_channels(walker, node, arg)


def _follow_channels(walker: ChannelWalker, node: fx.Node, arg: fx.Node) -> None:
    """Every parameter or buffer the node reads has one entry per channel of ``arg``: join them."""
    segments, dim = walker.chan[arg]
    others = [a for a in node.all_input_nodes if a is not arg]
    if len(segments) != 1 or any(a not in walker.floating for a in others):
        walker.opaque(node, f"{_name(node)} with a weight the tracer cannot follow")
        return
    for param in others:
        element = pin(walker, param, 0)
        if element is None:
            walker.opaque(node, f"{_name(node)} with a weight the tracer cannot follow")
            return
        walker.groups.union(segments[0], element)
    walker.chan[node] = (segments, dim)


def _name(node: fx.Node) -> str:
    name = aten_name(node)
    return f"aten.{name}" if name else getattr(node.target, "__name__", str(node.target))


# -- attention -----------------------------------------------------------------------------------
def _heads(walker: ChannelWalker, tensor: Any) -> Element | None:
    """The head group of an attention operand: its channels must be the heads dim (third from the end)."""
    shape = walker.shape(tensor)
    if tensor not in walker.chan or shape is None or len(shape) < 3:
        return None
    segments, c = walker.chan[tensor]
    return segments[0] if len(segments) == 1 and c == len(shape) - 3 else None


def _attention(walker: ChannelWalker, node: fx.Node) -> None:
    """Keys and values have the same heads; queries the same, or whole groups of them (GQA)."""
    q, k, v = node.args[:3]
    heads = [_heads(walker, q)]
    if (one := _repeated_head(walker, k, node.name)) is not None and _repeated_head(walker, v, node.name) is not None:
        heads += [one, one]
    else:
        heads += [_heads(walker, t) for t in (k, v)]
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    mask_shape = walker.shape(mask) if isinstance(mask, fx.Node) else None
    q_shape = walker.shape(q)
    per_head_mask = mask_shape is not None and len(mask_shape) >= 3 and mask_shape[-3] != 1
    mask_heads = _heads(walker, mask) if per_head_mask else None
    if None in heads or per_head_mask and mask_heads is None:
        walker.opaque(node, "scaled_dot_product_attention whose heads the tracer cannot follow")
        return
    hq, hk = q_shape[-3], walker.sizes((heads[1],))[0]
    walker.groups.union(heads[1], heads[2])
    if hq == hk:
        walker.groups.union(heads[0], heads[1])
    elif hq % hk == 0:
        walker.groups.set_scaled(heads[0], heads[1], hq // hk)
    else:
        walker.opaque(node, f"{hq} query heads do not make whole groups of {hk} key/value heads")
        return
    if mask_heads is not None:  # a mask per query head (Doge's, computed from the values): it keeps their heads
        walker.groups.union(heads[0], mask_heads)
    _record_heads(walker, node, k, heads[1], grouped=hq != hk)
    _record_query_groups(walker, node, heads[0])
    walker.chan[node] = ((heads[0],), len(walker.shape(node)) - 3)


def _repeated_head(walker: ChannelWalker, tensor: Any, name: str) -> Element | None:
    """The one key/value head of multi-query attention repeated over the query heads (GPT-BigCode's
    ``key.unsqueeze(1)`` before its split, expanded to every head): channels on the last dim (the head's
    entries), the same at every index of the heads dim. Its channels become a scaled copy of a group of
    one head, shared by keys and values."""
    shape = walker.shape(tensor)
    if tensor not in walker.chan or shape is None or len(shape) < 3 or not _repeated_along(tensor, len(shape) - 3):
        return None
    segments, c = walker.chan[tensor]
    if len(segments) != 1 or c != len(shape) - 1:
        return None
    head = walker.groups.add(("node", f"{name}.kv_head"), 1)
    if walker.groups.scaled_of(segments[0]) is None:
        walker.groups.set_scaled(segments[0], head, shape[-1])
    return head


def _record_heads(walker: ChannelWalker, node: fx.Node, keys: fx.Node, element: Element, grouped: bool) -> None:
    """Name the key/value head group after the module running the attention (``layers.0.self_attn``).

    The entries each key head holds per sample (sequence length x head size) size the KV cache.
    """
    stack = list(node.meta.get("nn_module_stack", {}).values())
    shape = walker.shape(keys)
    walker.result.head_groups.append((element, stack[-1][0] if stack else node.name, grouped, shape[-1] * shape[-2]))


def _record_query_groups(walker: ChannelWalker, node: fx.Node, queries: Element) -> None:
    """Query heads scaled from the key/value heads (``enable_gqa``, or keys and values repeated per
    group before the attention) are whole groups of them: record how many per group, so that
    ``space/convert.py`` can search the query heads inside each group too."""
    chain = walker.groups.scaled_chain(queries)
    if chain:
        stack = list(node.meta.get("nn_module_stack", {}).values())
        walker.result.query_groups.append((queries, stack[-1][0] if stack else node.name, chain[0][1]))


def _batched_matmul(walker: ChannelWalker, node: fx.Node, a: Any, b: Any) -> None:
    """Attention written out (``q @ k.T``, ``weights @ v``): both operands batched over the same heads."""
    sa, sb, shape = walker.shape(a), walker.shape(b), walker.shape(node)
    if a not in walker.chan and b in walker.chan and shape is not None and _weighs_values(walker, node, a, b):
        return
    if a not in walker.chan or b not in walker.chan or shape is None or len(sa) < 3 or len(sb) < 3:
        walker.opaque(node, f"aten.{aten_name(node)} the tracer cannot follow")
        return
    (seg_a, ca), (seg_b, cb) = walker.chan[a], walker.chan[b]
    out_a, out_b = len(shape) - len(sa) + ca, len(shape) - len(sb) + cb
    batched = ca < len(sa) - 2 and cb < len(sb) - 2 and out_a == out_b
    if not batched or walker.sizes(seg_a) != walker.sizes(seg_b):
        if not _rows_or_columns(walker, node, (seg_a, ca, len(sa)), (seg_b, cb, len(sb))):
            walker.opaque(node, f"aten.{aten_name(node)} over the channels")
        return
    for x, y in zip(seg_a, seg_b, strict=True):
        walker.groups.union(x, y)
    _record_heads(walker, node, b, seg_b[0], grouped=False)
    if len(seg_a) == 1:
        _record_query_groups(walker, node, seg_a[0])
    walker.chan[node] = (seg_a, out_a)


def _rows_or_columns(walker: ChannelWalker, node: fx.Node, a: tuple, b: tuple) -> bool:
    """A product whose left operand holds the channels along its rows, or whose right operand along its
    columns: each output row (column) is that row (column) times the other operand, so the channels
    pass through to the output, and the other operand's channels, wherever they are, keep their
    size. Gemma 3n mixes its AltUp copies of the hidden state with a matrix of coefficients
    (``hidden.permute(...) @ coefs``). Returns whether it was.

    ``a`` and ``b``: each operand's channel segments, channel dim and rank.
    """
    (seg_a, ca, rank_a), (seg_b, cb, rank_b) = a, b
    shape = walker.shape(node)
    roots_a, roots_b = {walker.groups.find(e) for e in seg_a}, {walker.groups.find(e) for e in seg_b}
    if roots_a & roots_b:
        return False
    if ca == rank_a - 2:
        kept, fixed, dim = seg_a, seg_b, len(shape) - 2
    elif cb == rank_b - 1:
        kept, fixed, dim = seg_b, seg_a, len(shape) - 1
    else:
        return False
    if any(walker.is_part(e) or walker.groups.is_piece(e) for e in kept):
        return False  # a part or piece of a projection (EfficientViT's values) stays with its siblings
    for element in fixed:
        walker.groups.freeze(element, f"aten.{aten_name(node)} multiplies them with channels along another dim")
    walker.chan[node] = (kept, dim)
    return True


def _weighs_values(walker: ChannelWalker, node: fx.Node, a: Any, b: Any) -> bool:
    """A product whose left operand holds no channels: attention of learned queries over stacked states
    (Inkling 2's block attention residuals, ``query @ states.T`` then ``weights @ states``).

    Where ``b``'s channels are its columns, the product keeps them (``a`` holds none to meet). Where they are
    its rows and ``a`` is a parameter (a learned query), they are summed over: the parameter's last dim
    meets them and is sliced with them, and the product holds no channels. False where neither applies.
    """
    sa, sb = walker.shape(a), walker.shape(b)
    segments, cb = walker.chan[b]
    if sa is None or sb is None or len(sb) < 2 or len(sa) < 2:
        return False
    if cb == len(sb) - 1 and a not in walker.floating:
        walker.chan[node] = (segments, len(walker.shape(node)) - 1)
        return True
    if cb == len(sb) - 2 and a in walker.floating and len(segments) == 1:
        element = pin(walker, a, len(sa) - 1)
        if element is None:
            return False
        walker.groups.union(segments[0], element)
        return True
    return False


def _batched_matmul_added(walker: ChannelWalker, node: fx.Node) -> None:
    """``baddbmm(input, q, k.T)``: attention scores added to ``input`` (zeros, or a bias per head), the
    heads of the product joined with the input's where it has them."""
    added = node.args[0]
    _batched_matmul(walker, node, node.args[1], node.args[2])
    if node in walker.chan and added in walker.chan:
        segments, c = walker.chan[node]
        if _meet(walker, segments, c, len(walker.shape(node)), added) == "apart":
            walker.opaque(node, "aten.baddbmm adds a tensor whose channels do not line up")
    elif node in walker.chan:
        _constants_along(walker, node, *walker.chan[node])
