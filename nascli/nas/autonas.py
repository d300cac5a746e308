"""The AutoNAS mode, where ModelOpt keeps it: ``mtn.autonas.AutoNASConfig``."""

from nascli.nas.config import AutoNASConfig

__all__ = ["AutoNASConfig"]
