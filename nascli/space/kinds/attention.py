"""The attention kind (nn.MultiheadAttention): searchable number of heads (head size fixed) and embedding width."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nascli.space import settings as check
from nascli.space.head_attention import HeadAttention, head_attention
from nascli.space.hparam import Dim, Hparam, Segments, channel_choices, dim_index, take
from nascli.space.kinds.base import DynamicModule, LayerKind, ModeDefaults, copied_parameter, move_channels, register

#: nn.MultiheadAttention.forward's mask arguments and their positions
_MASKS = (("key_padding_mask", 3), ("attn_mask", 5))


def _call_argument(node: Any, name: str, index: int, default: Any) -> Any:
    """An argument of a traced ``nn.MultiheadAttention`` call, given by keyword or by position."""
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[index] if len(node.args) > index else default


def _batch_queries_keys(
    module: nn.MultiheadAttention, q_shape: tuple[int, ...], k_shape: tuple[int, ...]
) -> tuple[int, int, int]:
    """(batch, query length, key length) of a call: batch first, sequence first or unbatched."""
    if len(q_shape) == 2:
        return 1, q_shape[0], k_shape[0]
    if module.batch_first:
        return q_shape[0], q_shape[1], k_shape[1]
    return q_shape[1], q_shape[0], k_shape[0]


def supports_search(attention: nn.MultiheadAttention) -> bool:
    """Packed q/k/v projections of one width, no extra key/value bias or zero attention."""
    return attention._qkv_same_embed_dim and attention.bias_k is None and not attention.add_zero_attn


class DynamicMultiheadAttention(DynamicModule, nn.MultiheadAttention):
    """Keeps the first ``num_heads`` heads and the active embedding channels.

    Queries, keys and values share the embedding hparam with the output (the tracer ties them),
    so a residual stream around the attention keeps one width. At the full size the native
    forward runs; a partial subnet runs ``head_attention`` on sliced weights, as its export does.
    """

    _native = nn.MultiheadAttention
    _hparam_fields = (("embed_dim", "_hp_embed"), ("num_heads", "_hp_heads"))
    _hp_embed: Hparam | Segments
    _hp_heads: Hparam | None

    def attach_hparams(self, embed: Hparam | Segments, heads: Hparam | None) -> None:
        self._hp_embed, self._hp_heads = embed, heads

    def _active_heads(self) -> int:
        return self.num_heads if self._hp_heads is None else self._hp_heads.active

    def _is_full(self) -> bool:
        return self._hp_embed.active == self.embed_dim and self._active_heads() == self.num_heads

    def _projections(self) -> tuple[torch.Tensor | None, ...]:
        """(q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b) of the active subnet, as views where possible."""
        index = dim_index(self._hp_embed)
        inner = self._active_heads() * self.head_dim
        found: list[torch.Tensor | None] = []
        for i in range(3):
            rows = slice(i * self.embed_dim, i * self.embed_dim + inner)
            found.append(take(self.in_proj_weight[rows], 1, index))
            found.append(None if self.in_proj_bias is None else self.in_proj_bias[rows])
        found.append(take(self.out_proj.weight[:, :inner], 0, index))
        found.append(None if self.out_proj.bias is None else take(self.out_proj.bias, 0, index))
        return tuple(found)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):  # fmt: skip
        if self._is_full():
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        dropout = self.dropout if self.training else 0.0
        return head_attention(
            query, key, value, self._projections(), self._active_heads(), self.batch_first, dropout,
            key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal,
        )  # fmt: skip

    def export_native(self) -> None:
        """The native layer at the full size; otherwise a ``HeadAttention`` with copied weights."""
        if self._is_full():
            super().export_native()
            return
        q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b = self._projections()
        pruned = HeadAttention(
            self._hp_embed.active, self._active_heads(), self.head_dim, q_b is not None, self.dropout, self.batch_first
        ).to(q_w.device, q_w.dtype)
        for layer, weight, bias in ((pruned.q_proj, q_w, q_b), (pruned.k_proj, k_w, k_b), (pruned.v_proj, v_w, v_b),
                                    (pruned.out_proj, out_w, out_b)):  # fmt: skip
            layer.weight = copied_parameter(weight, self.in_proj_weight)
            if bias is not None:
                layer.bias = copied_parameter(bias, self.in_proj_weight)
        pruned.train(self.training)
        hooks = {k: v for k, v in self.__dict__.items() if "hook" in k}
        self.__dict__ = {**pruned.__dict__, **hooks}
        self.__class__ = HeadAttention

    def _shrink_to_active(self) -> None:
        """Only reached at the full size, where nothing shrinks."""


class _SelfAttention(nn.Module):
    """Times an attention layer the way a transformer block calls it: on one input, no weights returned."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


class AttentionKind(LayerKind):
    dynamic = {nn.MultiheadAttention: DynamicMultiheadAttention}
    settings = {"num_heads_ratio": check.ratios}
    owns_children = True  # the output projection is part of the attention's weights
    timed = True

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {"num_heads_ratio": mode.ratios}

    def slots(self, module: nn.Module) -> dict[str, int]:
        return {"in": module.embed_dim, "out": module.embed_dim} if supports_search(module) else {}

    def slot_attr(self, module: nn.Module, slot: str) -> str:
        return "embed_dim"

    def trace(self, walker, node, name, module) -> None:
        """Queries, keys and values are read along their last dim; the output keeps the queries' width."""
        names = ("query", "key", "value")
        inputs = [node.args[i] if len(node.args) > i else node.kwargs.get(names[i]) for i in range(3)]
        for tensor in dict.fromkeys(inputs):
            walker.consume(name, "in", tensor, -1)
        segments = walker.result.slot_segments.get((name, "in"), ())
        if len(segments) == 1:
            walker.groups.union(walker.slot(name, "in"), walker.slot(name, "out"))
        else:
            reason = f"{name} reads concatenated inputs, which its output width cannot follow"
            for index, size in enumerate(segments):
                walker.groups.freeze(walker.slot(name, "in", index, size), reason)
            walker.groups.freeze(walker.slot(name, "out"), reason)
        walker.set_tuple_output(node, {0: ((walker.slot(name, "out"),), -1)}, length=2)

    def layer_hparam(self, name, module, settings, trace) -> Hparam | None:
        """Fewer heads of the same size: each ratio of the head count, rounded to a whole head."""
        choices = channel_choices(module.num_heads, settings.get("num_heads_ratio", (1.0,)), 1)
        return Hparam(f"{name}.num_heads", choices) if len(choices) > 1 else None

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(dims["in"], layer_hp)

    def params(self, terms, module, dims, layer_hp, path) -> None:
        embed, heads = dims["in"], layer_hp or module.num_heads
        biases = module.in_proj_bias is not None
        terms.add("params", 4 * module.head_dim, [(embed, 1), (heads, 1)], path)  # q, k, v and out weights
        terms.add("params", 3 * module.head_dim * biases, [(heads, 1)], path)
        terms.add("params", int(module.out_proj.bias is not None), [(embed, 1)], path)

    def flops(self, terms, node, module, dims, layer_hp, path) -> None:
        """What fvcore counts: the input and output projections and, when the weights are returned,
        the batched products of the attention itself.

        Without ``need_weights=False`` the native layer computes the attention with ``bmm``:
        queries times keys, then weights times values, each heads x query rows x key rows x head
        size. With a mask (``attn_mask`` or ``key_padding_mask``) the first is a ``baddbmm``,
        which fvcore does not count. With ``need_weights=False`` the attention is one
        ``scaled_dot_product_attention``, which fvcore does not count either.
        """
        query, key = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("key")
        q_shape, k_shape = terms.shape(query), terms.shape(key)
        if q_shape is None or k_shape is None:
            return
        q_rows, k_rows = math.prod(q_shape[:-1]) // terms.batch, math.prod(k_shape[:-1]) // terms.batch
        heads = layer_hp or module.num_heads
        if _call_argument(node, "need_weights", 4, True) is not False:
            masked = any(_call_argument(node, name, i, None) is not None for name, i in _MASKS)
            batch, queries, keys = _batch_queries_keys(module, q_shape, k_shape)
            per_head = (1 if masked else 2) * batch * queries * keys * module.head_dim // terms.batch
            terms.add("flops", per_head, [(heads, 1)], path)
        if not dims:  # as built: keys and values may have their own widths (kdim, vdim)
            e = module.embed_dim
            projections = q_rows * q_shape[-1] * e + 2 * k_rows * k_shape[-1] * e + q_rows * e * e
            terms.add("flops", projections, [], path)
            return
        # q and out projections over the query rows, k and v over the key rows
        terms.add("flops", (2 * q_rows + 2 * k_rows) * module.head_dim, [(dims["in"], 1), (heads, 1)], path)

    def latency_layer(self, module, sizes, in_shape) -> tuple[nn.Module, torch.Tensor]:
        embed, heads = sizes
        m = module
        bias = m.in_proj_bias is not None
        layer = _SelfAttention(HeadAttention(embed, heads or m.num_heads, m.head_dim, bias, 0.0, m.batch_first))
        return layer, torch.randn(*in_shape[:-1], embed)

    def channel_dims(self, module: nn.Module) -> list[tuple[str, Dim]]:
        """The embedding is both what the attention reads and what it writes."""
        return [("in", module._hp_embed), ("out", module._hp_embed)]

    def output_importance(self, module: nn.Module) -> torch.Tensor:
        return module.out_proj.weight.detach().abs().sum(1, dtype=torch.float32)

    def permute(self, module, slot, perm, offset) -> None:
        if slot == "in":
            move_channels(module.in_proj_weight, 1, perm, offset)
        else:
            move_channels(module.out_proj.weight, 0, perm, offset)
            move_channels(module.out_proj.bias, 0, perm, offset)


register(AttentionKind())
