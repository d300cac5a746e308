"""Multi-process helpers, run in a real two-process gloo group."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nascli.train.distributed import Ranks, parameters_agree


def _agreement(rank: int, port: int, differ: bool, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        if differ and rank == 1:
            with torch.no_grad():
                model.weight[0, 0] += 1e-3
        results[rank] = parameters_agree(model, Ranks(rank, 2))
    finally:
        dist.destroy_process_group()


def _run(differ: bool, port: int) -> list[bool]:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_agreement, args=(port, differ, results), nprocs=2)
        return [results[0], results[1]]


def test_parameters_agree_tells_equal_from_different_ranks():
    assert _run(differ=False, port=29561) == [True, True]
    assert _run(differ=True, port=29562) == [False, False]
