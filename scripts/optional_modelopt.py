"""ModelOpt for the benchmarks that compare against it: an optional dependency (the bench extra)."""

from __future__ import annotations

import warnings
from types import ModuleType

NOT_INSTALLED = "not installed (pip install -e '.[bench]')"


def load_modelopt() -> ModuleType | None:
    """``modelopt.torch.nas``, or None when nvidia-modelopt is not installed; its import-time warnings are muted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.nas as motn
    except ImportError:
        return None
    return motn
