"""Sharded fine-tuning under torchrun with PyTorch's own FSDP2 (``torch.distributed.fsdp.fully_shard``).

Distilling a pruned student from its teacher holds both models, the student's gradients and
its optimizer state: for a full fine-tuning about 16 bytes per student parameter plus the
teacher's weights, which past a few billion parameters no single GPU holds. With more than one
process the finetune stage shards both models across them: each process keeps 1/N of every
weight (and of the student's gradients and AdamW moments), a unit's weights are gathered just
before its forward or backward and freed after, and the student's gradients are averaged by
FSDP's reduce-scatter, so no gradient is all-reduced by hand (``average_gradients`` is the
supernet trainer's, whose sandwich step runs several backward passes per optimizer step).

A unit is one Hugging Face decoder layer (the classes a model names in ``_no_split_modules``),
else each entry of the model's module lists (its blocks), else each leaf layer holding weights;
what no unit holds (embeddings, final norm, output layer, tied or not) is the root's. Every
process computes its share of the global batch, as the trainer already splits it, so with equal
shares the averaged gradient is the single-process one up to the order of float32 additions.

What is written stays unsharded: the checkpoint's weights and optimizer state are gathered into
full, FQN-keyed dicts on the CPU (``torch.distributed.checkpoint.state_dict``), which is also the
form a single process writes, so a run resumes under either (docs/architecture.md, Fine-tuning).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "full_model_state",
    "full_optimizer_state",
    "load_optimizer_state",
    "mean_across_ranks",
    "reshard",
    "shard",
    "shard_units",
]


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules that become FSDP units of their own, innermost first (``fully_shard``'s order).

    A unit's weights are all-gathered together, so a unit is what runs as one step of the
    forward: a transformer block, not each of its linear layers (more, smaller collectives) nor
    the whole model (the gathered weights of all of it at once).
    """
    shared = _shared_parameters(model)
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if m is not model and type(m).__name__ in no_split]
    if not units:
        units = [block for blocks in model.modules() if isinstance(blocks, nn.ModuleList) for block in blocks]
    if not units:
        units = [
            m
            for m in model.modules()
            if m is not model and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
        ]
    # a weight tied between two units must stay with the root, which holds what no unit does
    units = [u for u in units if not any(id(p) in shared for p in u.parameters())]
    chosen = {id(u) for u in units}
    return list(reversed([m for m in model.modules() if id(m) in chosen]))


def _shared_parameters(model: nn.Module) -> set[int]:
    """Ids of the parameters that more than one module holds (tied embeddings)."""
    seen: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def shard(model: nn.Module, device: torch.device, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard ``model`` in place across the default process group: its units (``shard_units``), then the root.

    The model may still be on the CPU: ``fully_shard`` moves each process's shards to
    ``device``, so a GPU never holds more of the model than its share (and one unit gathered).
    ``param_dtype`` (bfloat16 on GPUs when the recipe asks for it) is the dtype the weights are
    gathered and computed in; gradients are reduced in float32 and the sharded master weights,
    gradients and optimizer state stay in the model's own dtype.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    # a model that never runs backward (the teacher) frees its root's gathered weights after forward too
    frozen = not any(p.requires_grad for p in model.parameters())
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True if frozen else None)
    return model


def reshard(model: nn.Module) -> None:
    """Free the gathered weights a forward left: FSDP keeps the root unit's after a forward, for the
    backward that follows in training, but none follows evaluation or a state-dict read."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of a sharded model on rank 0's CPU; an empty dict on the other ranks.

    A collective: every rank must call it. Only rank 0 ever holds the full weights, and on the
    CPU, so gathering a model for its checkpoint needs no GPU memory beyond one tensor.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    reshard(model)
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter names, whole: on rank 0 when sharded, else here.

    One process gives the same form (names, not the positions ``Optimizer.state_dict`` keys by),
    so a run written by either resumes under the other. A collective when ``model`` is sharded.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sharded = dist.is_initialized() and dist.get_world_size() > 1
    if sharded:
        reshard(model)
    options = StateDictOptions(full_state_dict=True, cpu_offload=sharded)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a ``full_optimizer_state`` into the optimizer of a sharded or whole ``model``; every rank passes it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if dist.is_initialized() and dist.get_world_size() > 1:
        reshard(model)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def mean_across_ranks(value: torch.Tensor) -> float:
    """The mean of a scalar over the ranks: the loss of the whole global batch, as one process logs it."""
    total = value.detach().float().clone().reshape(1)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()
