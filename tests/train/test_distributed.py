"""Multi-process helpers, run in a real two-process gloo group."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nascli.train.distributed import Ranks, broadcast_model, parameters_agree


def _worker(rank: int, port: int, change: str, call: str, results) -> None:
    """Rank ``rank`` of a two-process group: the same seeded model, rank 1's changed as ``change`` says."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        if rank == 1 and change == "value":
            with torch.no_grad():
                model.weight[0, 0] += 1e-3
        if rank == 1 and change == "order":  # the same values, two rows swapped: equal plain sums
            with torch.no_grad():
                model.weight[[0, 1]] = model.weight[[1, 0]]
        if call == "agree":
            results[rank] = parameters_agree(model, Ranks(rank, 2))
        else:
            sent = broadcast_model(model, Ranks(rank, 2))
            results[rank] = (sent, model.weight.detach().clone())
    finally:
        dist.destroy_process_group()


def _run(change: str, call: str, port: int) -> list:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(port, change, call, results), nprocs=2)
        return [results[0], results[1]]


def test_parameters_agree_tells_equal_from_different_ranks():
    assert _run("none", "agree", port=29561) == [True, True]
    assert _run("value", "agree", port=29562) == [False, False]


def test_weights_are_sent_only_where_a_rank_differs():
    for change, port, sent in (("none", 29563, False), ("value", 29564, True), ("order", 29565, True)):
        (sent0, weight0), (sent1, weight1) = _run(change, "broadcast", port)
        assert sent0 == sent1 == sent, change
        torch.testing.assert_close(weight0, weight1, rtol=0, atol=0)
