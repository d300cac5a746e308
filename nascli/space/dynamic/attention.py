"""Dynamic multi-head attention: searchable number of heads (head size fixed) and embedding width."""

from __future__ import annotations

import torch
from torch import nn

from nascli.space.dynamic.base import DynamicModule, copied_parameter
from nascli.space.head_attention import HeadAttention, head_attention
from nascli.space.hparam import Hparam, Segments, dim_index, take


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
