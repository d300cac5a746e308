"""The layer kinds the engine knows, one file each; importing this package registers them all.

The registration order is the order of a mode's default rules. See base.py for the interface and
docs/architecture.md for how to add a kind.
"""

from nascli.space.kinds import conv, conv_transpose, linear, gpt_conv1d, attention, heads, hidden, norm  # noqa: F401, I001
from nascli.space.kinds import sequential, module_list, activation  # noqa: F401, I001
from nascli.space.kinds.base import (
    DynamicModule,
    LayerKind,
    ModeDefaults,
    convertible_kind,
    kind_of,
    module_slots,
    qualified_name,
    registered_kinds,
)

__all__ = [
    "DynamicModule",
    "LayerKind",
    "ModeDefaults",
    "convertible_kind",
    "kind_of",
    "module_slots",
    "qualified_name",
    "registered_kinds",
]
