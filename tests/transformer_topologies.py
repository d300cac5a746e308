"""Small transformer topologies, one per tricky way of writing attention, traced with torch.export.

Each model checks its batch size in plain Python at the top of its forward, which torch.fx
cannot trace and torch.export can, so these models take the export path the way Hugging Face
models do.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ExportOnly(nn.Module):
    """Runs ``body`` after a Python check on the input's shape (fx cannot trace it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 1:
            raise ValueError("empty batch")
        return self.body(x)


class RMSNorm(nn.Module):
    """An RMS norm written out: its weight is a parameter the model's own code multiplies by."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """Rotary embeddings' rotation of pairs of neighbouring entries (Cohere, GLM): the halves are stacked on
    a new last dim and flattened back, so the heads dim passes through ``aten.stack``."""
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def complex_rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary embeddings in complex numbers (Llama 4, DeepSeek-V2): pairs of entries viewed as one complex
    number, multiplied by a unit rotation per position, viewed back."""
    s, d = x.shape[-2], x.shape[-1]
    angles = torch.arange(s, dtype=x.dtype)[:, None] / 10000 ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def interleaved_rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embeddings over (batch, heads, sequence, head size), pairs interleaved."""
    s, d = x.shape[-2], x.shape[-1]
    angles = torch.arange(s, dtype=x.dtype)[:, None] / 10000 ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    angles = angles.repeat_interleave(2, dim=-1)
    return x * angles.cos() + rotate_interleaved(x) * angles.sin()


class SelfAttention(nn.Module):
    """Attention over ``heads`` query heads and ``kv_heads`` key/value heads.

    ``style``: "sdpa" (grouped queries by ``enable_gqa``), "repeat" (keys and values repeated per
    group with expand and reshape, as Llama does), "eager" (``softmax(q @ k.T) @ v``), or "baddbmm" (heads
    merged into the batch, scores added to zeros by ``baddbmm``, as GPT-NeoX-Japanese and Bloom do).
    ``rotary``: interleaved rotary embeddings on queries and keys ("complex": in complex numbers).
    ``head_norm``: a layer norm over each query and key head's entries, applied before the heads are
    moved in front (Persimmon).
    """

    def __init__(
        self,
        width: int,
        heads: int,
        kv_heads: int,
        style: str = "sdpa",
        head_size: int = 8,
        gated: bool = False,
        rotary: bool | str = False,
        head_norm: bool = False,
    ) -> None:
        super().__init__()
        self.head_size, self.style, self.rotary = head_size, style, rotary
        self.q_norm = nn.LayerNorm(head_size) if head_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_size) if head_norm else nn.Identity()
        self.g = nn.Linear(width, heads, bias=False) if gated else None  # one output gate per query head
        self.q = nn.Linear(width, heads * head_size, bias=False)
        self.k = nn.Linear(width, kv_heads * head_size, bias=False)
        self.v = nn.Linear(width, kv_heads * head_size, bias=False)
        self.o = nn.Linear(heads * head_size, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_norm(self.q(x).view(b, s, -1, self.head_size)).transpose(1, 2)
        k = self.k_norm(self.k(x).view(b, s, -1, self.head_size)).transpose(1, 2)
        v = self.v(x).view(b, s, -1, self.head_size).transpose(1, 2)
        if self.rotary:
            rotate = complex_rotary if self.rotary == "complex" else interleaved_rotary
            q, k = rotate(q), rotate(k)
        groups = int(q.shape[1]) // int(k.shape[1])
        if self.style == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=groups > 1)
        else:
            kv = k.shape[1]
            k = k[:, :, None].expand(b, kv, groups, s, self.head_size).reshape(b, kv * groups, s, self.head_size)
            v = v[:, :, None].expand(b, kv, groups, s, self.head_size).reshape(b, kv * groups, s, self.head_size)
            if self.style == "repeat":
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            elif self.style == "baddbmm":
                flat = [t.reshape(b * t.shape[1], s, self.head_size) for t in (q, k, v)]
                zeros = torch.zeros(b * q.shape[1], s, s)
                scores = torch.baddbmm(zeros, flat[0], flat[1].transpose(1, 2), alpha=self.head_size**-0.5)
                out = torch.bmm(scores.softmax(-1), flat[2]).view(b, -1, s, self.head_size)
            else:
                out = torch.softmax(q @ k.transpose(-1, -2) / self.head_size**0.5, dim=-1) @ v
        if self.g is not None:
            out = out * torch.sigmoid(self.g(x)).transpose(1, 2).unsqueeze(-1)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


class GatedMLP(nn.Module):
    """``down(silu(gate(x)) * up(x))``: gate and up share one width."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate, self.up = nn.Linear(width, hidden, bias=False), nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, style: str, **attention: bool | str) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(width), RMSNorm(width)
        self.attn = SelfAttention(width, heads, kv_heads, style, **attention)
        self.mlp = GatedMLP(width, 2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Decoder(nn.Module):
    def __init__(
        self,
        vocab: int,
        width: int,
        heads: int,
        kv_heads: int,
        style: str,
        tied: bool,
        **attention: bool | str,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads, kv_heads, style, **attention) for _ in range(2))
        self.norm = RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


class TinyDecoder(ExportOnly):
    """A Llama-like causal language model over token ids; ``attention`` options (SelfAttention's): ``gated``,
    each query head's output scaled by a gate of its own (one output channel per head, as Laguna's
    ``g_proj``); ``rotary``, interleaved rotary embeddings; ``head_norm``, layer norms per query and key head."""

    def __init__(
        self, heads: int = 4, kv_heads: int = 2, style: str = "sdpa", tied: bool = False, **attention: bool | str
    ) -> None:
        super().__init__()
        self.body = _Decoder(50, 64, heads, kv_heads, style, tied, **attention)


class _ViT(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, stride=4)
        self.cls_token = nn.Parameter(0.1 * torch.randn(1, 1, width))
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, 17, width))
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(width), "attn": SelfAttention(width, 4, 4)}) for _ in range(2)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = x + block["attn"](block["norm"](x))
        return self.head(x[:, 0])


class TinyViT(ExportOnly):
    """A vision transformer on 16-pixel images: class token and position embedding are parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _ViT()


class _FusedAttention(nn.Module):
    """GPT-2's attention: one projection for q, k and v, split by a size the module holds."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.split_size, self.head_size = width, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, -1, self.head_size).transpose(1, 2) for t in self.qkv(x).split(self.split_size, 2))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, -1))


class _FusedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 64)
        self.norm = nn.LayerNorm(64)
        self.attn = _FusedAttention()
        self.head = nn.Linear(64, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return self.head(x + self.attn(self.norm(x)))


class _FusedGroupedAttention(nn.Module):
    """One projection holding q (4 heads) and k and v (2 heads each), taken apart by sizes the module holds:
    ``split`` into ``(q_size, kv_size, kv_size)``, or three slices of the channels as Phi-3 takes them; or
    ("expand") one key/value head never split into heads, expanded over the query heads (GPT-BigCode); or
    ("heads") the projection viewed as heads and those split into q heads and one key and one value head
    by the head count it holds (Falcon's multi-query attention)."""

    def __init__(self, width: int, style: str, heads: int = 4, kv_heads: int = 2, head_size: int = 8) -> None:
        super().__init__()
        self.style, self.head_size, self.num_heads = style, head_size, heads
        self.q_size, self.kv_size = heads * head_size, kv_heads * head_size
        self.qkv = nn.Linear(width, self.q_size + 2 * self.kv_size, bias=False)
        self.o = nn.Linear(heads * head_size, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(x)
        if self.style == "heads":
            q, k, v = qkv.view(b, s, -1, self.head_size).split([self.num_heads, 1, 1], dim=-2)
        elif self.style == "slice":
            end = self.q_size + self.kv_size
            q, k, v = qkv[..., : self.q_size], qkv[..., self.q_size : end], qkv[..., end:]
        else:
            q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        if self.style == "expand":
            q = q.view(b, s, -1, self.head_size).transpose(1, 2)
            k, v = (t.unsqueeze(1).expand(-1, q.shape[1], -1, -1) for t in (k, v))
        elif self.style == "heads":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        else:
            q, k, v = (t.view(b, s, -1, self.head_size).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=int(q.shape[1]) != int(k.shape[1]))
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


class _FusedGroupedBlock(nn.Module):
    def __init__(self, style: str) -> None:
        super().__init__()
        kv_heads = 1 if style in ("expand", "heads") else 2
        self.norm, self.attn = RMSNorm(64), _FusedGroupedAttention(64, style, kv_heads=kv_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class _BlocksDecoder(nn.Module):
    """Token embeddings, two blocks ``make_block()`` builds, and an output head."""

    def __init__(self, make_block: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 64)
        self.blocks = nn.ModuleList(make_block() for _ in range(2))
        self.head = nn.Linear(64, 50, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class FusedGroupedQKV(ExportOnly):
    """Grouped-query attention whose q, k and v come out of one projection at unequal sizes."""

    def __init__(self, style: str = "split") -> None:
        super().__init__()
        self.body = _BlocksDecoder(lambda: _FusedGroupedBlock(style))


class FusedQKV(ExportOnly):
    """A GPT-2-like block: q, k and v split from one projection by the module's ``split_size``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _FusedBlock()


class _WidthFromShape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.branch, self.out = nn.Linear(16, 64), nn.Linear(64, 64), nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        a = self.branch(h)
        return self.out(a.reshape(a.shape[0], h.shape[-1]))  # the branch's width taken from another tensor


class WidthWrittenOut(ExportOnly):
    """A reshape to a size the model takes from another tensor's shape: export records it as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _WidthFromShape()


class HeldShapeLayerNorm(nn.LayerNorm):
    """A layer norm subclass with a forward of its own that reads ``normalized_shape`` (timm's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class _HeldSizesAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, width // heads
        self.attn_dim = width
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.attn_dim))


class HeldSizesViT(nn.Module):
    """timm's ViT in small: fx traces it, but its attention reshapes q, k and v together into
    (3, heads, head size) by sizes the module holds, and merges them back to ``attn_dim``."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, stride=4)
        self.cls_token = nn.Parameter(0.1 * torch.randn(1, 1, width))
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, 17, width))
        self.norm = HeldShapeLayerNorm(width)
        self.attn = _HeldSizesAttention(width, heads)
        self.head = nn.Linear(width, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = x + self.attn(self.norm(x))
        return self.head(x[:, 0])


class _LatentAttention(nn.Module):
    """DeepSeek's multi-head latent attention, as far as tracing goes: keys and values come out of a
    shared latent, one rotary key is expanded over every head, and the keys are assembled by copying
    both parts into ``new_empty``."""

    def __init__(self, width: int = 64, heads: int = 4, nope: int = 8, rope: int = 4, value: int = 8) -> None:
        super().__init__()
        self.nope, self.rope, self.value, self.latent = nope, rope, value, 16
        self.q = nn.Linear(width, heads * (nope + rope), bias=False)
        self.kv_a = nn.Linear(width, self.latent + rope, bias=False)
        self.kv_b = nn.Linear(self.latent, heads * (nope + value), bias=False)
        self.o = nn.Linear(heads * value, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, -1, self.nope + self.rope).transpose(1, 2)
        q_nope, q_rot = q.split((self.nope, self.rope), dim=-1)
        latent, k_rot = self.kv_a(x).split((self.latent, self.rope), dim=-1)
        kv = self.kv_b(latent).view(b, s, -1, self.nope + self.value).transpose(1, 2)
        k_nope, v = kv.split((self.nope, self.value), dim=-1)
        q_rot, k_rot = interleaved_rotary(q_rot), interleaved_rotary(k_rot.view(b, 1, s, self.rope))
        k = kv.new_empty(*kv.shape[:-1], self.nope + self.rope)
        k[..., : self.nope].copy_(k_nope)
        k[..., self.nope :].copy_(k_rot.expand(-1, k_nope.shape[1], -1, -1))
        out = F.scaled_dot_product_attention(torch.cat((q_nope, q_rot), dim=-1), k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


class _LatentBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(64), RMSNorm(64)
        self.attn, self.mlp = _LatentAttention(), GatedMLP(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LatentDecoder(ExportOnly):
    """A causal language model with DeepSeek-style latent attention."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _BlocksDecoder(_LatentBlock)


class _ReducedAttention(SelfAttention):
    """Attention written out with the reductions other families use: queries and keys L2-normalized per
    head (``linalg.vector_norm``), the maximum logit per row subtracted (``max(dim)``, as attention sinks
    do), probabilities from ``logsumexp``, and keys and values padded along the sequence (``F.pad``) and
    cut back."""

    def __init__(self) -> None:
        super().__init__(64, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (t(x).view(b, s, -1, self.head_size).transpose(1, 2) for t in (self.q, self.k, self.v))
        q, k = (t / torch.linalg.vector_norm(t, dim=-1, keepdim=True) for t in (q, k))
        k, v = (F.pad(t, (0, 0, 1, 0))[:, :, 1:] for t in (k, v))
        logits = q @ k.transpose(-1, -2)
        logits = logits - logits.max(dim=-1, keepdim=True).values
        weights = torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))
        return self.o((weights @ v).transpose(1, 2).reshape(b, s, -1))


class _ReducedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm, self.attn = RMSNorm(64), _ReducedAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class ReducedAttentionDecoder(ExportOnly):
    """A causal language model whose attention is written out with max, logsumexp, norms and padding."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Embedding(50, 64), _ReducedBlock(), _ReducedBlock(), nn.Linear(64, 50))


class _TablePositions(nn.Module):
    """XGLM's and MusicGen's sinusoidal positions: rows of a fixed table (a buffer) picked by
    ``index_select`` (or by indexing, ``style="index"``, as Whisper does) and added to the token embeddings."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.embed = nn.Embedding(50, 64)
        angles = torch.arange(16.0)[:, None] / 10000 ** (torch.arange(0, 64, 2.0) / 64)
        self.register_buffer("weights", torch.cat([angles.sin(), angles.cos()], dim=1), persistent=False)
        self.block = DecoderBlock(64, 4, 2, "sdpa")
        self.head = nn.Linear(64, 50, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, s = ids.shape
        at = torch.arange(s, device=ids.device)
        positions = (self.weights[at] if self.style == "index" else self.weights.index_select(0, at)).view(1, s, -1)
        return self.head(self.block(self.embed(ids) + positions))


class TablePositionsDecoder(ExportOnly):
    def __init__(self, style: str = "index_select") -> None:
        super().__init__()
        self.body = _TablePositions(style)


class _MaskedAttention(SelfAttention):
    """Eager attention masked by a causal mask built from ``arange`` (unsqueezed, compared, inverted)."""

    def __init__(self) -> None:
        super().__init__(64, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (t(x).view(b, s, -1, self.head_size).transpose(1, 2) for t in (self.q, self.k, self.v))
        positions = torch.arange(s, device=x.device)
        future = positions.unsqueeze(0) > positions.unsqueeze(1)
        scores = (q @ k.transpose(-1, -2)).masked_fill(future, float("-inf"))
        return self.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, -1))


class _Constants(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.norm, self.attn = nn.Embedding(50, 64), RMSNorm(64), _MaskedAttention()
        self.head = nn.Linear(64, 50, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        first = torch.zeros_like(x)[:, :, 0]  # one channel of zeros shaped like x (GIT's pixel-token mask)
        x = x + first.unsqueeze(-1)
        return self.head(x + self.attn(self.norm(x)))


class ConstantsDecoder(ExportOnly):
    """Tensors made of no channels meeting ones that have them: a mask from ``arange``, one channel of
    ``zeros_like``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _Constants()


class _SideBySide(nn.Module):
    """Zamba's shared block: an RMS norm weighs the hidden state and the embeddings side by side, and the
    block is built once per use around the same tensors (a tied norm weight). Then four copies of the
    hidden state, flattened, are mixed by a weight the code applies (a hyper-connection, HunYuan's and
    DeepSeek-V4's): both parameters meet the hidden width in segments."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.norms = nn.ModuleList([RMSNorm(2 * width), RMSNorm(2 * width)])
        self.norms[1].weight = self.norms[0].weight
        self.mix = nn.Linear(2 * width, width)
        self.connection = nn.Parameter(0.1 * torch.randn(4, 4 * width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed(ids)
        x = e + self.mlp(e)
        for norm in self.norms:
            x = x + self.mix(norm(torch.cat([x, e], -1)))
        copies = x.unsqueeze(-2).repeat(1, 1, 4, 1).flatten(-2)
        weights = F.linear(copies, self.connection).softmax(-1)
        return self.head(x * weights[..., :1] + e * weights[..., 1:2])


class SideBySide(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _SideBySide()


class _MixedCopies(nn.Module):
    """Gemma 3n's AltUp: copies of the hidden state along the last dim (channels on the rows) mixed by a
    matrix of coefficients the model predicts from the hidden state (``copies @ coefs``)."""

    def __init__(self, width: int = 64, copies: int = 4) -> None:
        super().__init__()
        self.copies = copies
        self.embed = nn.Embedding(50, width)
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.router = nn.Linear(width, copies * copies)
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x + self.mlp(x)
        streams = x.unsqueeze(-1).repeat(1, 1, 1, self.copies)
        coefs = self.router(x).view(*x.shape[:2], self.copies, self.copies).softmax(-1)
        return self.head((streams @ coefs).mean(-1))


class MixedCopies(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _MixedCopies()


class _Recurrent(nn.Module):
    """HRM's loop: one stack of residual blocks run twice per forward, the first pass without gradients (a
    grad-mode region in the exported graph)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(RMSNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(3)
        )
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        with torch.no_grad():
            for block in self.blocks:
                x = x + block(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


class Recurrent(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Recurrent()


def _per_group(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Hugging Face's ``repeat_kv``: each key/value head's entries repeated for the query heads of its group."""
    b, heads, *rest = x.shape
    return x[:, :, None].expand(b, heads, groups, *rest).reshape(b, heads * groups, *rest)


class _MaskPerHead(nn.Module):
    """Doge's attention: an additive mask per key/value head, computed from the values by a projection to
    one entry per head and a parameter per head, repeated over each group's query heads."""

    def __init__(self, width: int = 64, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.head_dim, self.groups = width // heads, heads // kv_heads
        self.embed = nn.Embedding(50, width)
        self.q, self.o = nn.Linear(width, width), nn.Linear(width, width)
        self.k, self.v = nn.Linear(width, kv_heads * self.head_dim), nn.Linear(width, kv_heads * self.head_dim)
        self.dt = nn.Linear(kv_heads * self.head_dim, kv_heads)
        self.A = nn.Parameter(torch.randn(kv_heads))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, -1, self.head_dim).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        dt = torch.exp(self.A * F.softplus(self.dt(v.transpose(1, 2).reshape(b, s, -1)))).transpose(-1, -2)
        mask = _per_group(dt[:, :, None, :].expand(-1, -1, s, -1), self.groups)
        out = F.scaled_dot_product_attention(q, _per_group(k, self.groups), _per_group(v, self.groups), mask)
        return self.head(x + self.o(out.transpose(1, 2).reshape(b, s, -1)))


class MaskPerHead(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _MaskPerHead()


class _HalvesSelected(nn.Module):
    """Moshi's gated MLP: one projection's output viewed as (2, width) and its halves selected by index."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * 128), nn.Linear(128, width)
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        halves = self.fc1(x).view(*x.shape[:2], 2, -1)
        return self.head(x + self.fc2(F.gelu(halves[..., 0, :]) * halves[..., 1, :]))


class HalvesSelected(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _HalvesSelected()


class _Interleaved(nn.Module):
    """gpt-oss's experts: gate and up weights interleaved entry by entry in one weight the code applies, taken
    apart by strided slices (``[..., ::2]``, ``[..., 1::2]``), with a bias interleaved the same way."""

    def __init__(self, width: int = 64, inner: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.gate_up = nn.Parameter(0.1 * torch.randn(2 * inner, width))
        self.gate_up_bias = nn.Parameter(0.1 * torch.randn(2 * inner))
        self.down = nn.Parameter(0.1 * torch.randn(width, inner))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        gate_up = F.linear(x, self.gate_up, self.gate_up_bias)
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        return self.head(x + F.linear(F.silu(gate) * up, self.down))


class Interleaved(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Interleaved()


class _GatedResiduals(nn.Module):
    """Ergo's block: q and k normed per head by a functional RMS norm over the head size; each branch
    added through a gate of functions of one parameter (``sigmoid(w)``, ``sqrt(1 + sigmoid(w)) *
    exp(-softplus(w) / 2)``); an MLP run on each token twice (``repeat_interleave`` along the rows, a
    weight per row from ``new_ones``)."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.head_dim = width // heads
        self.embed = nn.Embedding(50, width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.q_norm, self.k_norm = nn.Parameter(torch.rand(self.head_dim)), nn.Parameter(torch.rand(self.head_dim))
        self.gate = nn.Parameter(torch.randn(width))
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s, width = x.shape
        q, k, v = (t.view(b, s, -1, self.head_dim).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        q, k = F.rms_norm(q, (self.head_dim,), self.q_norm), F.rms_norm(k, (self.head_dim,), self.k_norm)
        branch = self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, -1))
        weight = self.gate.float()
        branch_gate = weight.sigmoid()
        x = branch_gate * branch + torch.sqrt(1.0 + branch_gate) * torch.exp(-0.5 * F.softplus(weight)) * x
        rows = x.reshape(-1, width).repeat_interleave(2, dim=0)
        routes = self.mlp(rows) * rows.new_ones(rows.shape[0], 1)
        return self.head(x + routes.view(b, s, 2, -1).sum(2))


class GatedResiduals(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _GatedResiduals()


class _ExpandedMask(nn.Module):
    """XLM's attention written out: a padding mask computed from the hidden state (a sum over its channels,
    which keeps them fixed) expanded over the scores' heads and filled in (``masked_fill``)."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.head_dim = width // heads
        self.embed = nn.Embedding(50, width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, -1, self.head_dim).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        scores = q @ k.transpose(-1, -2)
        padding = (x.abs().sum(-1) == 0)[:, None, None, :].expand_as(scores)
        weights = scores.masked_fill(padding, float("-inf")).softmax(-1)
        return self.head(x + self.o((weights @ v).transpose(1, 2).reshape(b, s, -1)))


class ExpandedMask(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _ExpandedMask()


class _Router(nn.Module):
    """LongCat-Flash's router: a linear layer it never calls, whose weight its own code applies."""

    def __init__(self, width: int, experts: int = 4) -> None:
        super().__init__()
        self.classifier = nn.Linear(width, experts, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.classifier.weight.float()).softmax(-1)


class _Routed(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.router = _Router(width)
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return self.head(x + self.mlp(x) * self.router(x)[..., :1])


class Routed(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Routed()


class _ScaledQueries(nn.Module):
    """Dory's attention: the queries scaled by a vector parameter viewed per head, ``w.view(-1, 1, head_dim)``."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.head_dim = width // heads
        self.embed = nn.Embedding(50, width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.query_scale = nn.Parameter(1 + 0.1 * torch.randn(width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, -1, self.head_dim).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        q = q * self.query_scale.view(-1, 1, self.head_dim).square()
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, -1)
        return self.head(x + self.o(attended))


class ScaledQueries(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _ScaledQueries()


class _ShortConvolution(nn.Module):
    """Mamba's and Inkling's short causal convolution: an ``nn.Conv1d`` it never calls, whose weight its own
    code applies with ``F.conv1d`` after a squeeze and an unsqueeze, one group per channel."""

    def __init__(self, width: int, kernel: int = 4) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(width, width, kernel, groups=width, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv1d.weight.squeeze(1)
        out = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), self.conv1d.bias, padding=3, groups=x.shape[-1])
        return out[..., : x.shape[1]].transpose(1, 2)


class _ConvolvedMLP(nn.Module):
    """A dense convolution applied by the module's own code (``F.conv1d`` with ``self.up.weight``), then a
    linear layer back to the width."""

    def __init__(self, width: int, inner: int = 128) -> None:
        super().__init__()
        self.up = nn.Conv1d(width, inner, 1)
        self.down = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(F.conv1d(x.transpose(1, 2), self.up.weight, self.up.bias)).transpose(1, 2))


class _Convolved(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.short = _ShortConvolution(width)
        self.mlp = _ConvolvedMLP(width)
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x + self.short(x)
        return self.head(x + self.mlp(x))


class Convolved(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Convolved()


class _RelativeBias(nn.Module):
    """Inkling's relative-position bias: per-head states times a parameter bank of profiles over distances,
    then each head's entry for each (query, key) distance picked by ``gather`` along the last dim."""

    def __init__(self, width: int = 64, heads: int = 4, d_rel: int = 4, extent: int = 8) -> None:
        super().__init__()
        self.head_dim, self.d_rel, self.extent = width // heads, d_rel, extent
        self.embed = nn.Embedding(50, width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.rel = nn.Linear(width, heads * d_rel)
        self.proj = nn.Parameter(torch.randn(d_rel, extent))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, -1, self.head_dim).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        profiles = (self.rel(x).view(b, s, -1, self.d_rel) @ self.proj).transpose(1, 2)
        positions = torch.arange(s)
        distance = (positions[:, None] - positions[None, :])[None, None]
        index = distance.clamp(0, self.extent - 1).expand(*profiles.shape[:2], -1, -1)
        bias = profiles.gather(-1, index).masked_fill(distance < 0, float("-inf"))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.head(x + self.o(attended.transpose(1, 2).reshape(b, s, -1)))


class RelativeBias(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _RelativeBias()


class _BlockResidual(nn.Module):
    """Inkling 2's block attention residuals: a learned query attends over the states of earlier blocks,
    stacked on a dim of their own, and mixes them (``softmax(query @ states.T) @ states``)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.query = nn.Parameter(torch.randn(width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        states = torch.stack([x, self.mlp(x)], dim=-2)
        width = states.shape[-1]
        query = self.query.view(-1, width).expand(*states.shape[:-2], -1, -1)
        weights = (query @ states.transpose(-1, -2) * width**-0.5).softmax(-1)
        return self.head((weights @ states).squeeze(-2))


class BlockResidual(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _BlockResidual()


class _Config:
    """A config object shared by a model's modules, with a per-layer list (Hugging Face's ``layer_types``)."""

    def __init__(self, layers: int) -> None:
        self.layer_types = ["sliding", "full"] * (layers // 2)


class _ReadsChildWidth(nn.Module):
    """Ergo's router: views its input by ``self.linear.in_features`` before calling that layer."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.reshape(-1, self.linear.in_features), self.linear.weight).sigmoid().sum(-1)


class _TypedBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.router = _ReadsChildWidth(width)

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return x + scale * self.mlp(x) * self.router(x).view(*x.shape[:-1], 1)


class _TypedLayers(nn.Module):
    """Ergo's loop: ``zip(self.config.layer_types, self.layers, strict=True)``, a scale per layer type."""

    def __init__(self, width: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.config = _Config(layers)
        self.embed = nn.Embedding(50, width)
        self.layers = nn.ModuleList(_TypedBlock(width) for _ in range(layers))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer_type, layer in zip(self.config.layer_types, self.layers, strict=True):
            x = layer(x, 0.5 if layer_type == "sliding" else 1.0)
        return self.head(x)


class TypedLayers(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _TypedLayers()


class _DataRouted(nn.Module):
    """A mixture of experts that loops over the experts and skips one no token chose (``if rows.numel()``):
    export cannot decide the branch on fake tensors, only on the tokens' real routing."""

    def __init__(self, width: int = 64, experts: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.gate = nn.Linear(width, experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width)) for _ in range(experts)
        )
        self.head = nn.Linear(width, 50)

        # JetMoE's experts: one bank of weights, each expert's picked by index and applied by the code
        self.up = nn.Parameter(0.1 * torch.randn(experts, 96, width))
        self.down = nn.Parameter(0.1 * torch.randn(experts, width, 96))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        flat = x.reshape(-1, x.shape[-1])
        choice = self.gate(flat).argmax(-1)
        out = torch.zeros_like(flat)
        banked = flat.new_zeros(flat.shape)
        for index, expert in enumerate(self.experts):
            rows = torch.nonzero(choice == index).squeeze(-1)
            if rows.numel():
                out = out.index_add(0, rows, expert(flat[rows]))
                hidden = F.gelu(F.linear(flat[rows], self.up[index]))
                banked = banked.index_add(0, rows, F.linear(hidden, self.down[index]))
        return self.head(x + out.view_as(x) + banked.view_as(x))


class DataRouted(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _DataRouted()


class _ParallelLists(nn.Module):
    """XLM's layers: the parts of each layer in lists of their own (attention, norm, MLP, norm), run by
    index in a loop over a layer count the model holds, ``for i in range(self.n_layers)``."""

    def __init__(self, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.n_layers = layers
        self.pad_index = layers  # another int equal to the count: an index, which must not follow the depth
        self.embed = nn.Embedding(50, width)
        self.mixers = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width)) for _ in range(layers)
        )
        self.norms1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 96), nn.GELU(), nn.Linear(96, width)) for _ in range(layers)
        )
        self.norms2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for i in range(self.n_layers):
            x = self.norms1[i](x + self.mixers[i](x))
            x = self.norms2[i](x + self.mlps[i](x))
        return self.head(x * (ids != self.pad_index).unsqueeze(-1))


class ParallelLists(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _ParallelLists()


def alibi_bias(heads: int, length: int, device: torch.device) -> torch.Tensor:
    """ALiBi's bias of each head over the key positions, (heads, 1, length): slopes built from the head count."""
    slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1, device=device) / heads)
    return slopes[:, None, None] * torch.arange(length, device=device)[None, None, :]


class _MergedAlibiAttention(nn.Module):
    """Bloom's attention: heads merged into the batch, ALiBi's bias (batch x heads, 1, keys) handed by position
    and added to the scores by ``baddbmm``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.dense = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, alibi: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, self.num_heads, 3, self.head_dim)
        q, k, v = (qkv[..., i, :].transpose(1, 2).reshape(b * self.num_heads, s, self.head_dim) for i in range(3))
        scores = alibi.baddbmm(q, k.transpose(1, 2), beta=1.0, alpha=self.head_dim**-0.5)
        out = torch.bmm(scores.softmax(-1), v).view(b, self.num_heads, s, self.head_dim)
        return self.dense(out.permute(0, 2, 1, 3).reshape(b, s, self.num_heads * self.head_dim))


class _KeywordAlibiAttention(nn.Module):
    """MPT's attention: ALiBi's bias (heads, 1, longest length) handed by keyword, cut to the keys, and added."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = heads, width // heads
        self.Wqkv = nn.Linear(width, 3 * width, bias=False)
        self.out_proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (t.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2) for t in self.Wqkv(x).chunk(3, dim=2))
        scores = q @ k.transpose(-1, -2) * self.head_dim**-0.5 + position_bias[:, :, -s:]
        return self.out_proj((scores.softmax(-1) @ v).permute(0, 2, 1, 3).contiguous().view(b, s, -1))


class _Alibi(nn.Module):
    """Bloom and MPT: the model builds ALiBi's bias from its head count and hands it to every attention."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.num_heads = heads
        self.embed = nn.Embedding(50, width)
        self.merged = _MergedAlibiAttention(width, heads)
        self.keyword = _KeywordAlibiAttention(width, heads)
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        b, s = ids.shape
        bias = alibi_bias(self.num_heads, s, x.device).to(x.dtype)
        x = x + self.merged(x, bias.repeat(b, 1, 1))
        x = x + self.keyword(x, position_bias=alibi_bias(self.num_heads, 16, x.device).to(x.dtype))
        return self.head(x)


class Alibi(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Alibi()


class _HeadsConfig:
    """A config every layer shares, holding the head count its code views heads by."""

    def __init__(self, heads: int) -> None:
        self.num_heads = heads


class _HeadNorm(nn.Module):
    """xLSTM's multi-head layer norm: checks the heads it is given against the count it holds."""

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(heads * head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.num_heads:
            raise ValueError(f"expected {self.num_heads} heads, got {x.shape[-2]}")
        return F.layer_norm(x, x.shape[-1:]).flatten(-2) * self.weight


class _ConfigHeadsLayer(nn.Module):
    """xLSTM's layer: heads viewed by ``self.config.num_heads`` (a config all layers share), keys narrower than
    values, and each head's output checked against ``self.v_dim // self.config.num_heads``."""

    def __init__(self, config: _HeadsConfig, width: int) -> None:
        super().__init__()
        self.config = config
        self.v_dim, self.qk_dim = width, width // 2
        self.q = nn.Linear(width, self.qk_dim)
        self.k = nn.Linear(width, self.qk_dim)
        self.v = nn.Linear(width, self.v_dim)
        self.norm = _HeadNorm(config.num_heads, self.v_dim // config.num_heads)
        self.out = nn.Linear(self.v_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = (
            t.reshape(b, s, self.config.num_heads, -1).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x))
        )
        h = F.scaled_dot_product_attention(q, k, v)
        if h.shape[-1] != self.v_dim // self.config.num_heads:
            raise ValueError(f"head size {h.shape[-1]}, expected {self.v_dim // self.config.num_heads}")
        return self.out(self.norm(h.transpose(1, 2)))


class _ConfigHeads(nn.Module):
    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        config = _HeadsConfig(heads)
        self.embed = nn.Embedding(50, width)
        self.layers = nn.ModuleList(_ConfigHeadsLayer(config, width) for _ in range(2))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


class ConfigHeads(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _ConfigHeads()
