"""Guess a model's input when the caller gives none: a shape the model's own forward accepts.

The first layer of a known kind tells the channels (a conv's ``in_channels``, a linear layer's
``in_features``), not the size: a ViT built for 32-pixel images refuses 224 pixels, Inception's
auxiliary head needs more than 224, a speech model reads a second of audio. So the sizes tried
are the ones the model declares (``image_size``, ``img_size``, ``input_size``, a timm pretrained
config, a Hugging Face config's ``image_size``) and then common ones, and the first that runs the
forward in both train and eval mode wins. A Hugging Face text model (``main_input_name ==
"input_ids"``) gets 16 token ids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nascli.errors import UserInputError
from nascli.space.kinds import kind_of
from nascli.space.trace import buffers_kept

_SIDES = {2: (224, 299, 512), 1: (224, 16000), 3: (32, 64)}  # by number of spatial dims
_TOKENS = 16  # sequence length of a guessed text input


def guess_dummy_input(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """One input sample for ``model``; an error naming the shapes tried when none runs."""
    if getattr(model, "main_input_name", None) == "input_ids":  # a Hugging Face text model: token ids
        tokens = torch.zeros(1, _TOKENS, dtype=torch.long)
        if _runs(model, tokens):
            return (tokens,)
        raise UserInputError(
            f"cannot guess the input of {type(model).__name__} ({_TOKENS} token ids fail): pass dummy_input"
        )
    first = next((g for m in model.modules() if (k := kind_of(m)) and (g := k.dummy_input(m)) is not None), None)
    if first is None:
        raise UserInputError(f"cannot guess the input shape of {type(model).__name__}: pass dummy_input")
    (x,) = first
    spatial = x.dim() - 2
    if spatial < 1:
        return first
    sides = dict.fromkeys([*_declared_sides(model, spatial), *_SIDES.get(spatial, (224,))])
    tried = []
    for side in sides:
        candidate = torch.randn(1, x.shape[1], *(side,) * spatial)
        tried.append(tuple(candidate.shape))
        if _runs(model, candidate):
            return (candidate,)
    shapes = ", ".join(str(s) for s in tried)
    raise UserInputError(f"cannot guess the input shape of {type(model).__name__} (tried {shapes}): pass dummy_input")


def _declared_sides(model: nn.Module, spatial: int) -> list[int]:
    """Input sides the model states about itself, the most specific first."""
    found = []
    config = getattr(model, "config", None)
    sources: list[Any] = [getattr(model, name, None) for name in ("image_size", "img_size", "input_size")]
    sources.append(getattr(config, "image_size", None))
    for cfg in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None)):
        if isinstance(cfg, dict):
            sources.append(cfg.get("input_size"))
    for value in sources:
        if isinstance(value, int) and value > 0:
            found.append(value)
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
            found.append(value[-1] if len(value) >= spatial else value[0])
    return found


@torch.no_grad()
def _runs(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the forward runs on ``x`` in train mode (auxiliary heads) and in eval mode, buffers untouched."""
    was_training = model.training
    try:
        with buffers_kept(model):
            for training in (True, False):
                model.train(training)
                model(torch.cat([x, x]))  # two samples: a train-mode batch norm needs more than one value
    except Exception:  # any failure of the model's code on this size: try the next one
        return False
    finally:
        model.train(was_training)
    return True
