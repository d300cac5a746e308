"""ModelOpt's ``opt.utils`` helpers that work on a converted model, under the same import path."""

from nascli.nas.utils import is_dynamic, named_hparams

__all__ = ["is_dynamic", "named_hparams"]
