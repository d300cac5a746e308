"""Multi-head attention with fewer heads than its width: the export target of a searched attention layer.

``nn.MultiheadAttention`` ties the number of heads to its width (``head_dim = embed_dim /
num_heads``), so an attention layer that keeps its head size but drops heads has no native
equivalent. ``HeadAttention`` is a plain module of four ``nn.Linear`` projections with
``nn.MultiheadAttention``'s call signature; the dynamic layer computes its partial subnets with
the same function, so the exported model reproduces them exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True: masked out, as in nn.MultiheadAttention) as an additive float mask."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def head_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    projections: tuple[torch.Tensor, ...],
    num_heads: int,
    batch_first: bool,
    dropout: float,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over ``num_heads`` heads given (q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b).

    Masks follow nn.MultiheadAttention: ``attn_mask`` of shape (L, S) and ``key_padding_mask``
    of shape (N, S), boolean (True: not attended) or additive floats.
    """
    q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b = projections
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    if batch_first and not unbatched:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    length, batch, _ = query.shape
    head_dim = q_w.shape[0] // num_heads

    def heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias).reshape(x.shape[0], batch * num_heads, head_dim).transpose(0, 1)

    q, k, v = heads(query, q_w, q_b), heads(key, k_w, k_b), heads(value, v_w, v_b)
    mask = _float_mask(attn_mask, q.dtype)
    if attn_mask is not None and attn_mask.dim() != 2:
        raise ValueError("attention with searched heads takes a 2-D attn_mask (L, S) only")
    if key_padding_mask is not None:
        padding = _float_mask(key_padding_mask, q.dtype).view(batch, 1, 1, -1)
        mask = padding if mask is None else mask + padding
    if mask is not None:
        mask = mask.expand(batch, num_heads, length, k.shape[1]).reshape(batch * num_heads, length, k.shape[1])
    if need_weights:
        # as nn.MultiheadAttention computes them (a masked product is one baddbmm), so that the
        # exported subnet's operations, and the flops counted on them, are the native layer's
        if mask is not None:
            scores = torch.baddbmm(mask, q / math.sqrt(head_dim), k.transpose(1, 2))
        else:
            scores = torch.bmm(q / math.sqrt(head_dim), k.transpose(1, 2))
        if is_causal and mask is None:
            causal = torch.ones(length, k.shape[1], dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(causal, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = torch.bmm(F.dropout(weights, dropout) if dropout else weights, v)
    else:
        weights = None
        out = F.scaled_dot_product_attention(q, k, v, mask, dropout, is_causal=is_causal and mask is None)
    out = out.transpose(0, 1).reshape(length, batch, num_heads * head_dim)
    out = F.linear(out, out_w, out_b)
    if batch_first and not unbatched:
        out = out.transpose(0, 1)
    if weights is not None:
        weights = weights.view(batch, num_heads, length, k.shape[1])
        weights = weights.mean(dim=1) if average_attn_weights else weights
        weights = weights.squeeze(0) if unbatched else weights
    return (out.squeeze(1) if unbatched else out), weights


class HeadAttention(nn.Module):
    """Multi-head attention of ``num_heads`` heads of ``head_dim`` each, over ``embed_dim`` features."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.dropout, self.batch_first = dropout, batch_first
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias)
        self.k_proj = nn.Linear(embed_dim, inner, bias)
        self.v_proj = nn.Linear(embed_dim, inner, bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        projections = (
            self.q_proj.weight, self.q_proj.bias, self.k_proj.weight, self.k_proj.bias,
            self.v_proj.weight, self.v_proj.bias, self.out_proj.weight, self.out_proj.bias,
        )  # fmt: skip
        dropout = self.dropout if self.training else 0.0
        return head_attention(
            query, key, value, projections, self.num_heads, self.batch_first, dropout,
            key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal,
        )  # fmt: skip
