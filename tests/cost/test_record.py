"""A search space's cost record (nascli/cost/record.py): what a checkpoint stores so a profile prices
subnets without the model, rebuilt to the same costs and summary."""

import io
import random

import numpy as np
import pytest
import torch

import nascli.nas as mtn
from nascli.cost.model import CostModel, cost_model
from nascli.cost.record import space_from_record, space_record
from nascli.models import resnet20
from nascli.space.space import get_space

transformers = pytest.importorskip("transformers")


def _llama() -> torch.nn.Module:
    """Heads, key/value groups, MLP, hidden width and depth: every kind of term, the KV cache included."""
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    return mtn.convert(
        transformers.LlamaForCausalLM(config), "autonas", dummy_input=torch.zeros(1, 8, dtype=torch.long)
    )


def _resnet() -> torch.nn.Module:
    """Channels, kernel sizes and depths of residual stages."""
    torch.manual_seed(0)
    return mtn.convert(resnet20(in_channels=1, width=8), "autonas", dummy_input=torch.zeros(1, 1, 8, 8))


def _through_storage(record: dict) -> dict:
    """The record as a checkpoint gives it back: saved and loaded with weights_only=True."""
    buffer = io.BytesIO()
    torch.save(record, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("build", [_llama, _resnet], ids=["llama", "resnet20"])
def test_the_rebuilt_space_prices_every_subnet_as_the_model_does(build):
    model = build()
    space = get_space(model)
    space.block_ranks = {name: list(reversed(range(len(hp.choices)))) for name, hp in space.hparams.items()
                         if name.endswith(".depth")}  # fmt: skip
    assert space.block_ranks  # a depth whose blocks run in another order than built
    mtn.sample(model, "centroid")
    rebuilt = space_from_record(_through_storage(space_record(space)))

    ours, theirs = cost_model(model), CostModel(rebuilt)
    rng = random.Random(0)
    configs = [{n: rng.choice(hp.choices) for n, hp in space.hparams.items()} for _ in range(50)]
    for metric, values in ours.evaluate(ours.encode(configs)).items():
        assert np.array_equal(values, theirs.evaluate(theirs.encode(configs))[metric]), metric
    assert rebuilt.config() == space.config() and rebuilt.summary() == space.summary()
    assert (rebuilt.input_shapes, rebuilt.input_dtypes) == (space.input_shapes, space.input_dtypes)


def test_a_record_of_another_format_is_not_read():
    record = space_record(get_space(_resnet()))
    assert space_from_record({**record, "format": record["format"] + 1}) is None
