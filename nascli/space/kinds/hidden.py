"""The hidden width: the channels a parameter read directly produces (an embedding table, a class token).

In a transformer that group is the residual stream: the embedding, every norm, every projection
into and out of the stream and the LM head share it, and ``space/convert.py`` names it after the
parameter (``model.embed_tokens.weight.shape[1]``). Its choices come from the rules key
``hidden_size``, matched by that name, so a user sets the hidden width apart from the MLP widths
(``nn.Linear`` rules) and the heads (``attention_heads``). See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from nascli.space import settings as check
from nascli.space.kinds.base import LayerKind, ModeDefaults, register

RULE_KEY = "hidden_size"


class HiddenKind(LayerKind):
    settings = {"hidden_ratio": check.ratios, "hidden_divisor": check.divisor}
    ratio_setting, divisor_setting = "hidden_ratio", "hidden_divisor"

    def rule_keys(self) -> list[str]:
        return [RULE_KEY]

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {"hidden_ratio": mode.ratios, "hidden_divisor": mode.divisor}


HIDDEN = register(HiddenKind())
