"""A layer's own view of a config object every layer shares.

Phi-3's attention computes where q ends in its fused projection from ``self.config.num_attention_heads``,
and every decoder layer holds the same config. For each layer's query heads to follow its own
hparam, the attention gets a ``LayerConfigView`` instead: the sizes it follows are its own
attributes, everything else is read from (and written to) the shared config, so a later change
to the model's config (``_attn_implementation``) still reaches every layer.
"""

from __future__ import annotations

from typing import Any


class LayerConfigView:
    """``shared`` seen by one layer, with ``own`` (name -> value) held apart."""

    def __init__(self, shared: Any, own: dict[str, Any]) -> None:
        vars(self).update(own)
        object.__setattr__(self, "_shared", shared)

    def __getattr__(self, name: str) -> Any:  # only for names this view does not hold
        if name == "_shared":  # not yet set (while unpickling): no config to read through
            raise AttributeError(name)
        return getattr(self._shared, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in vars(self):
            vars(self)[name] = value
        else:
            setattr(self._shared, name, value)

    def __repr__(self) -> str:
        own = {k: v for k, v in vars(self).items() if k != "_shared"}
        return f"LayerConfigView({type(self._shared).__name__}, own={own})"
