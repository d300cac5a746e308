"""The FastNAS mode, where ModelOpt keeps it: ``mtp.fastnas.FastNASConfig``."""

from nascli.nas.config import FastNASConfig

__all__ = ["FastNASConfig"]
