"""Low-rank adapters (LoRA) on a frozen subnet: fine-tuning whose new memory is the adapters'.

Full fine-tuning of a bfloat16 model keeps float32 master weights and AdamW's two float32 moments
beside the bfloat16 weights: 14 bytes per student parameter on top of the teacher, several times
the checkpoint. With adapters, the student's own weights are views of the converted model's
tensors (``nascli.space.export.export_views``), frozen in their dtype and shared with the teacher;
only the adapters (float32, with their optimizer state) are new. Recovering a pruned language
model this way is LLM-Pruner's recipe. Merging writes each adapter's product into the viewed
slice, so the converted model's active subnet is then the fine-tuned model
(docs/architecture.md, Fine-tuning).

The adapter layers are peft's (``LoraConfig`` injected into any module tree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from nascli.recipe.schema import LoraSpec

__all__ = ["add_adapters", "adapter_targets", "merge_adapters"]


def adapter_targets(model: nn.Module, suffixes: list[str] | None) -> list[str]:
    """The linear layers that get adapters: those whose name ends with one of ``suffixes`` (a whole
    name part), or by default every linear layer but the one producing the output (the last one,
    or a Hugging Face model's output embeddings), whose width is the vocabulary or the classes."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if suffixes is not None:
        chosen = [n for n in linear if any(n == s or n.endswith(f".{s}") for s in suffixes)]
        if not chosen:
            raise ValueError(f"finetune.lora.targets: no linear layer of the model is named {suffixes}")
        return chosen
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None and linear:
        output = model.get_submodule(linear[-1])
    chosen = [n for n in linear if model.get_submodule(n) is not output]
    if not chosen:
        raise ValueError("finetune.lora: the model has no linear layer besides its output layer to adapt")
    return chosen


def add_adapters(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Freeze ``model`` and give its target linear layers float32 LoRA adapters; return their names.

    An adapter starts as the identity (its second factor is zero), so the adapted model computes
    what the frozen one does until the first step.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = adapter_targets(model, spec.targets)
    for param in model.parameters():
        param.requires_grad_(False)
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets)
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = param.data.float()  # master precision for the part that trains
            param.requires_grad_(True)
    return targets


def merged_copies(student: nn.Module, converted: nn.Module) -> dict[str, torch.Tensor]:
    """The student's weights that are copies rather than views of the converted model's tensors, by name.

    ``export_views`` copies a layer whose active channels are not a leading slice (query heads
    kept inside each KV group); merging an adapter into such a copy does not reach the converted
    model, so after exporting it in place, ``load_merged`` puts them there.
    """
    shared = {t.untyped_storage().data_ptr() for t in converted.parameters()}
    return {
        name: tensor.detach()
        for name, tensor in student.named_parameters()
        if tensor.untyped_storage().data_ptr() not in shared
    }


def load_merged(exported: nn.Module, copies: dict[str, torch.Tensor]) -> None:
    """Write ``merged_copies`` into the converted model exported in place (the same subnet, the same names)."""
    with torch.no_grad():
        for name, tensor in copies.items():
            exported.get_parameter(name).copy_(tensor)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Add each adapter's product into its frozen weight, in place, and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        for name, layer in adapted:
            layer.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    return model
