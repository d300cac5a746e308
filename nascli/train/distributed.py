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


def broadcast_model(model: nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if ranks.world > 1:
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, 0)


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
    """Whether every rank holds bitwise the same parameters (compared as float64 checksums)."""
    if ranks.world <= 1:
        return True
    local = torch.stack(
        [p.detach().double().sum() for p in model.parameters()]
        + [torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)]
    )
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))
