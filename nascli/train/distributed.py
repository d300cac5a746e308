"""Multi-process training helpers over torch.distributed (gloo on CPU, NCCL on GPU), started by torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_from_env() -> Ranks:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        # tensors on the CPU go through gloo and tensors on a GPU through NCCL, whichever train.device says
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def broadcast_model(model: nn.Module, ranks: Ranks) -> bool:
    """Give every rank rank 0's parameters and buffers; returns whether any were sent.

    Every rank usually builds the same weights (the same checkpoint, the same seed), so the ranks
    first compare checksums of every tensor and send the weights only where one differs: sending
    a billion-parameter model from one CPU to the others over gloo takes longer than building it.
    """
    if ranks.world <= 1 or _tensors_agree([*model.parameters(), *model.buffers()]):
        return False
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, 0)
    return True


def average_gradients(model: nn.Module, world: int) -> None:
    """All-reduce the gradients that exist (every rank trains the same subnets) as one flat tensor.

    Done by hand rather than by DistributedDataParallel's hooks because a sandwich step runs
    several backward passes over different subnets before one optimizer step.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if world <= 1 or not params:
        return
    flat = _flatten_dense_tensors([p.grad for p in params])
    dist.all_reduce(flat)
    flat /= world
    for p, averaged in zip(params, _unflatten_dense_tensors(flat, [p.grad for p in params]), strict=True):
        p.grad.copy_(averaged)


def parameters_agree(model: nn.Module, ranks: Ranks) -> bool:
    """Whether every rank holds the same parameters (compared as float64 checksums)."""
    return ranks.world <= 1 or _tensors_agree(list(model.parameters()))


def _tensors_agree(tensors: list[torch.Tensor]) -> bool:
    """Whether every rank holds the same ``tensors``: two float64 checksums each, the plain sum and a sum
    weighted by position (so that the same values in another order, channels sorted differently, differ)."""
    device = tensors[0].device if tensors else torch.device("cpu")
    sums = [torch.zeros((), dtype=torch.float64, device=device)]
    for tensor in tensors:
        flat = tensor.detach().reshape(-1).double()
        weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64).remainder_(997).add_(1)
        sums += [flat.sum(), (flat * weights).sum()]
    local = torch.stack(sums)
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))
