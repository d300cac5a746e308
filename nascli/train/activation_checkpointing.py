"""Activation checkpointing for fine-tuning: keep each layer's input, recompute its insides in backward.

A language model's training step keeps every layer's intermediate activations for the backward
pass: for a 0.55 B-parameter student on 2 x 128 tokens that is about 0.7 GB, and it grows with
batch and sequence length, so it is what pushes fine-tuning past the memory of the weights. With
checkpointing only each decoder layer's input is kept and the layer's forward runs again during
backward: the activation memory of one layer for about one more forward pass. Hugging Face models
provide it per layer (``activation_checkpointing_enable``, before transformers 5.2x
``gradient_checkpointing_enable``). The non-reentrant form is used: it needs no input that
requires grad, so it works under frozen embeddings (adapters, docs/architecture.md, Fine-tuning).
"""

from __future__ import annotations

from torch import nn

__all__ = ["checkpoint_activations"]


def checkpoint_activations(model: nn.Module) -> bool:
    """Turn on activation checkpointing where the model supports it; whether it did.

    Only Hugging Face models that declare support have it: other models train as they are.
    It applies in train mode only, so evaluation and a teacher's forward are unchanged.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True
