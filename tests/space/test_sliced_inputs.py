"""An attention handed ALiBi's bias slices its rows with the heads it keeps (space/sliced_inputs.py)."""

import copy

import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.space.importance import sort_channels_by_importance
from nascli.space.space import get_space
from tests.transformer_topologies import Alibi

TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
HEADS = {"body.merged.num_heads": 2, "body.keyword.num_heads": 3}


def _without_heads(original: Alibi) -> Alibi:
    """The original with the output columns of the heads a subnet drops zeroed: the same function."""
    pruned = copy.deepcopy(original)
    with torch.no_grad():
        pruned.body.merged.dense.weight[:, 2 * 16 :] = 0
        pruned.body.keyword.out_proj.weight[:, 3 * 16 :] = 0
    return pruned


def test_each_kept_head_adds_its_own_row_of_the_bias_in_the_subnet_and_its_export(tmp_path):
    torch.manual_seed(0)
    original = Alibi().eval()
    model = mtn.convert(copy.deepcopy(original), "fastnas", dummy_input=TOKENS[:1]).eval()
    space = get_space(model)
    assert space.hparams["body.merged.num_heads"].choices == (1, 2, 3, 4)
    assert space.hparams["body.keyword.num_heads"].choices == (1, 2, 3, 4)

    sort_channels_by_importance(model)  # the heads keep their places: their bias rows follow positions
    assert not any("heads" in name for order in space.channel_orders for name in order)
    torch.testing.assert_close(model(TOKENS), original(TOKENS))

    mtn.select(model, HEADS)
    expected = model(TOKENS)  # a batch of 2: Bloom's rows are batch x heads
    torch.testing.assert_close(expected, _without_heads(original)(TOKENS))

    path = mto.save(model, tmp_path / "model.pt")
    exported = mtn.export(model)
    assert exported.body.merged.qkv.out_features == 3 * 2 * 16
    torch.testing.assert_close(exported(TOKENS), expected)
    restored = mto.restore(lambda: copy.deepcopy(original), path).eval()
    torch.testing.assert_close(restored(TOKENS), expected)


def test_a_model_built_on_the_meta_device_finds_the_bias_it_hands_its_attentions():
    with torch.device("meta"):
        model = Alibi()
    model = mtn.convert(model, "fastnas", dummy_input=TOKENS[:1])
    assert {"body.merged.num_heads", "body.keyword.num_heads"} <= set(get_space(model).hparams)
