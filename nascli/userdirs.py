"""Where nascli keeps per-user files: outside run directories, which may be read-only or shared."""

from __future__ import annotations

import os
from pathlib import Path

#: what a refused write of a cache (a full disk) tells the user besides freeing space
ANOTHER_CACHE = "set NASCLI_CACHE_DIR to another disk"


def config_dir() -> Path:
    """``$NASCLI_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/nascli``, else ``~/.config/nascli``."""
    return _user_dir("NASCLI_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")


def cache_dir() -> Path:
    """``$NASCLI_CACHE_DIR``, else ``$XDG_CACHE_HOME/nascli``, else ``~/.cache/nascli``.

    For files nascli can rebuild (latency tables): deleting the folder costs time, nothing else.
    """
    return _user_dir("NASCLI_CACHE_DIR", "XDG_CACHE_HOME", ".cache")


def _user_dir(own: str, xdg: str, fallback: str) -> Path:
    if explicit := os.environ.get(own):
        return Path(explicit)
    return Path(os.environ.get(xdg) or Path.home() / fallback) / "nascli"
