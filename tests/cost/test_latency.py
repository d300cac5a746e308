import pytest
import torch

import nascli.cost.latency as latency_module
import nascli.nas as mtn
from nascli.cost.constraints import parse_bound
from nascli.cost.latency import LatencyModel
from nascli.errors import UserInputError
from nascli.models import resnet20
from nascli.space.kinds import DynamicModule
from tests.topologies import AttentionBlock, ChannelsLastBlock, Decoder, GroupAndInstanceNorm


@pytest.fixture
def model():
    return mtn.convert(resnet20(in_channels=1, width=64), dummy_input=torch.zeros(1, 1, 8, 8))


def test_table_entries_are_cached_and_reused(model, tmp_path, monkeypatch):
    timing = LatencyModel(model, repeats=2, cache_dir=tmp_path)
    measured = timing.calibrate()
    assert measured["min"] > 0 and measured["max"] > 0
    timing.overhead = 0.0  # a fit may give no overhead: the table still counts as calibrated
    predicted = timing.predict(mtn.sample(model, "centroid"))
    timing.save()
    assert predicted > 0
    (cache,) = tmp_path.glob("latency-cpu-torch*.json")

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again despite the cache")

    monkeypatch.setattr(latency_module, "time_call", no_timing)
    again = LatencyModel(model, repeats=2, cache_dir=tmp_path)
    assert again.calibrate() == {}
    assert again.predict(mtn.get_subnet_config(model, configurable=True)) == pytest.approx(predicted)


def test_each_model_has_its_own_table_in_a_shared_cache(model, tmp_path):
    other = mtn.convert(resnet20(in_channels=1, width=32), dummy_input=torch.zeros(1, 1, 8, 8))
    paths = {LatencyModel(m, cache_dir=tmp_path).cache_path for m in (model, other, model)}
    assert len(paths) == 2


def test_skipped_blocks_cost_nothing(model):
    timing = LatencyModel(model, repeats=1)
    full = mtn.sample(model, "max")
    shallow = {**full, "layer1.depth": 1, "layer2.depth": 1, "layer3.depth": 1}
    assert timing.table_sum(shallow) < timing.table_sum(full)
    counted = [layer.name for layer, cond in timing.layers if all(shallow[h.name] > i for h, i in cond)]
    assert "layer1.1.conv1" not in counted and "layer1.0.conv1" in counted


@pytest.mark.parametrize("value, seconds", [("15ms", 0.015), ("0.2s", 0.2), ("500us", 5e-4), (0.01, 0.01)])
def test_latency_bounds(value, seconds):
    assert parse_bound("latency", value) == pytest.approx((seconds, False))


@pytest.mark.parametrize("value", ["15", "2G", "fast", "-1ms"])
def test_bad_latency_bounds(value):
    with pytest.raises(UserInputError, match="expected a duration"):
        parse_bound("latency", value)


@pytest.mark.parametrize(
    "net, shape",
    [(Decoder, (1, 3, 8, 8)), (GroupAndInstanceNorm, (1, 3, 8, 8)), (ChannelsLastBlock, (1, 3, 8, 8)),
     (AttentionBlock, (1, 5, 16))],
)  # fmt: skip
def test_every_dynamic_layer_kind_gets_table_entries(net, shape):
    model = mtn.convert(net(), dummy_input=torch.zeros(*shape))
    timing = LatencyModel(model, repeats=1)
    timed = {layer.name for layer, _ in timing.layers}
    dynamic = {name for name, m in model.named_modules() if isinstance(m, DynamicModule)}
    assert timed == dynamic
    for how in ("min", "max"):
        assert timing.table_sum(mtn.sample(model, how)) > 0
