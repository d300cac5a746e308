"""The contract every layer kind keeps, checked on a small model that uses it.

Each kind's test file calls ``assert_kind_conforms`` with a model of that kind and then checks
what is particular to it. The contract: conversion gives the kind's layers searchable hparams;
the max subnet computes exactly what the model as built did; every subnet exports to native
layers with the same output; the analytic flops and params equal fvcore's and ``numel``'s on the
export; the latency table can build the layer at the min and max sizes; sorting channels by
importance leaves the max subnet's output unchanged; and save/restore gives the same subnet.
"""

import copy
from pathlib import Path

import torch
from torch import nn

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.cost.latency import LatencyModel
from nascli.cost.model import cost_model
from nascli.space.importance import sort_channels_by_importance
from nascli.space.kinds import DynamicModule, LayerKind, kind_of
from tests.helpers import assert_export_matches


def assert_kind_conforms(
    factory, x: torch.Tensor, kind: type[LayerKind], tmp_path: Path, mode="autonas", atol: float = 1e-5
) -> nn.Module:
    """Run the contract on ``factory()``; returns the converted model (at its max subnet)."""
    torch.manual_seed(0)
    original = factory().eval()
    reference = original(x)
    model = mtn.convert(copy.deepcopy(original), mode, dummy_input=x[:1]).eval()
    of_kind = {n: m for n, m in model.named_modules() if isinstance(m, DynamicModule) and type(kind_of(m)) is kind}
    assert of_kind, f"no layer became a dynamic {kind.__name__}"
    assert any(hp.is_configurable for m in of_kind.values() for _, hp in m.nas_hparams())
    mtn.sample(model, "max")
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)

    costs = cost_model(model)
    for how in ("min", "centroid", "random", "max"):
        exported = assert_export_matches(model, x, how, atol=atol)
        assert costs.cost() == {"flops": fvcore_flops(exported, (x[:1],)), "params": count_params(exported)}, how

    if kind.timed:  # the table times every layer of the kind at the min and max sizes
        table = LatencyModel(model, repeats=1)
        timed = {layer.name for layer, _ in table.layers}
        assert set(of_kind) <= timed, set(of_kind) - timed
        table.prefetch([costs.named("min"), costs.named("max")], rounds=1)
        assert len(table.entries) >= len(timed)

    mtn.sample(model, "random")
    path = mto.save(model, tmp_path / "kind.pt")
    restored = mto.restore(lambda: copy.deepcopy(original), path).eval()
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)

    mtn.sample(model, "max")
    sort_channels_by_importance(model)
    torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=atol)
    return model
