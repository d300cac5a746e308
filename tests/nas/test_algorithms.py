"""ConstraintsFunc: whether the active subnet meets constraints, from the cost model."""

import pytest
import torch

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.errors import UserInputError
from nascli.nas.algorithms import ConstraintsFunc
from nascli.space.export import export_model
from tests.nas.test_modelopt_forms import X, small


def test_the_active_subnet_is_checked_against_its_limits():
    model = mtn.convert(small(), mode="fastnas", dummy_input=X)
    check = ConstraintsFunc(model, {"params": "60%"}, X)
    full = sum(p.numel() for p in small().parameters())
    assert check.limits["params"] == (0.0, pytest.approx(0.6 * full)) and check.limits["flops"] == (0, float("inf"))
    assert set(check.effective_limits) == {"params"}
    mtn.sample(model, "max")
    ok, values = check()
    assert not ok and values["params"] == full and values["flops"] > 0
    mtn.sample(model, "min")
    ok, values = check()
    assert ok and values["params"] == sum(p.numel() for p in export_model(model).parameters())
    check.set_rel_lower_bounds(0.85)
    assert check.limits["params"][0] == pytest.approx(0.85 * 0.6 * full)
    assert not check()[0]  # the smallest subnet is below the lower bound now


def test_costs_follow_a_dummy_input_of_another_shape_and_latency_is_refused():
    model = mtn.convert(small(), mode="fastnas", dummy_input=X)
    big = torch.randn(1, 1, 16, 16)
    at_8 = ConstraintsFunc(model, {})()[1]["flops"]
    at_16 = ConstraintsFunc(model, {}, big)()[1]["flops"]
    assert at_16 == cost_model(mtn.convert(small(), mode="fastnas", dummy_input=big)).cost()["flops"] > 3.9 * at_8
    with pytest.raises(UserInputError, match="nascli search --latency"):
        ConstraintsFunc(model, {"latency": "10ms"}, X)
    with pytest.raises(UserInputError, match="not a converted model: call nascli.nas.convert first"):
        ConstraintsFunc(small(), {}, X)
