"""Attention heads found by tracing: the number of heads, or of key/value groups, of any attention.

``space/trace_aten.py`` finds the head groups of every ``scaled_dot_product_attention`` (or
attention written out with ``matmul``) in an exported model: projections split into (heads,
head size) become scaled copies of a head group, so a head hparam keeps whole heads in every
projection at once. With grouped-query attention the query heads are whole groups of the
key/value heads: one hparam counts the groups, and a second the query heads kept in each group
(``num_heads_per_group``; every group keeps the same number, so the subnet is again a plain
grouped-query attention, and a multi-query attention, one key/value head, still has heads to
search). The rules key ``attention_heads`` matches the module path of the attention
(``model.layers.*.self_attn``). See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from nascli.space import settings as check
from nascli.space.hparam import Hparam, channel_choices
from nascli.space.kinds.base import LayerKind, ModeDefaults, register

RULE_KEY = "attention_heads"


class HeadsKind(LayerKind):
    settings = {
        "num_heads_ratio": check.ratios,
        "num_kv_heads_ratio": check.ratios,
        "num_heads_per_group_ratio": check.ratios,
    }

    def rule_keys(self) -> list[str]:
        return [RULE_KEY]

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {
            "num_heads_ratio": mode.ratios,
            "num_kv_heads_ratio": mode.ratios,
            "num_heads_per_group_ratio": mode.ratios,
        }

    def head_hparam(self, attention: str, heads: int, grouped: bool, settings: dict[str, Any]) -> Hparam:
        """Choices of whole heads (or key/value groups, with ``grouped``) for each ratio of the count."""
        setting = "num_kv_heads_ratio" if grouped else "num_heads_ratio"
        name = f"{attention}.num_kv_heads" if grouped else f"{attention}.num_heads"
        return Hparam(name, channel_choices(heads, settings.get(setting, (1.0,)), 1))

    def per_group_hparam(self, attention: str, per_group: int, settings: dict[str, Any]) -> Hparam:
        """Choices of query heads kept in each key/value group, for each ratio of the count per group.

        Rules saved before this setting existed have no ratio for it: the queries stay whole
        groups, as they were converted then.
        """
        ratios = settings.get("num_heads_per_group_ratio", (1.0,))
        return Hparam(f"{attention}.num_heads_per_group", channel_choices(per_group, ratios, 1))


HEADS = register(HeadsKind())
