"""Block lists a loop indexes together share one depth (space/parallel_stacks.py)."""

import copy

import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.model import cost_model
from nascli.space.importance import rank_blocks, set_block_ranks
from nascli.space.space import get_space
from tests.transformer_topologies import ParallelLists

TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
DEPTH = {"nn.ModuleList": {"*": {"min_depth": 1}}}


def test_lists_indexed_together_drop_whole_layers_and_their_count_follows(tmp_path):
    torch.manual_seed(0)
    original = ParallelLists().eval()
    model = mtn.convert(copy.deepcopy(original), [("fastnas", DEPTH)], dummy_input=TOKENS).eval()
    space = get_space(model)
    assert space.hparams["body.mixers.depth"].choices == (1, 2, 3)
    assert not any(name.endswith(".depth") and name != "body.mixers.depth" for name in space.hparams)
    torch.testing.assert_close(model(TOKENS), original(TOKENS), rtol=0, atol=0)

    scores = []
    rank_blocks(model, lambda m: scores.append(1) or 0.0)
    assert len(scores) == 2  # the one depth ranked once: layers 1 and 2 each dropped alone

    # layer 1 ranked last: depth 2 runs layers 0 and 2, each list's blocks of those layers
    set_block_ranks(model, "body.mixers.depth", [0, 2, 1])
    mtn.select(model, {"body.mixers.depth": 2})
    expected = model(TOKENS)
    body = copy.deepcopy(original.body)
    x = body.embed(TOKENS)
    for i in (0, 2):
        x = body.norms1[i](x + body.mixers[i](x))
        x = body.norms2[i](x + body.mlps[i](x))
    torch.testing.assert_close(expected, body.head(x * (TOKENS != 3).unsqueeze(-1)))
    assert model.body.n_layers == 3 and model.body.pad_index == 3  # the count follows within a forward only

    costs = cost_model(model).cost()
    path = mto.save(model, tmp_path / "model.pt")
    exported = mtn.export(model)
    assert exported.body.n_layers == 2 and exported.body.pad_index == 3
    assert [len(getattr(exported.body, name)) for name in ("mixers", "norms1", "mlps", "norms2")] == [2] * 4
    torch.testing.assert_close(exported(TOKENS), expected)
    assert costs["params"] == sum(p.numel() for p in exported.parameters())

    restored = mto.restore(lambda: copy.deepcopy(original), path).eval()
    torch.testing.assert_close(restored(TOKENS), expected)


def test_lists_of_a_holder_the_rules_leave_one_out_of_get_no_shared_depth():
    """With ``mlps`` left out, kept positions would pair layer 2's mixer with layer 1's MLP."""
    rules = {"nn.ModuleList": {"*": {"min_depth": 1}, "*.mlps": None}}
    model = mtn.convert(ParallelLists(), [("fastnas", rules)], dummy_input=TOKENS)
    assert not any(name.endswith(".depth") for name in get_space(model).hparams)
    assert not any(getattr(m, "_by_position", False) for m in model.modules())


def test_a_layer_index_equal_to_the_layer_count_does_not_follow_the_depth():
    torch.manual_seed(0)
    original = ParallelLists().eval()
    original.body.first_layer_idx = 3  # an index that happens to equal the count
    model = mtn.convert(copy.deepcopy(original), [("fastnas", DEPTH)], dummy_input=TOKENS).eval()
    mtn.select(model, {"body.mixers.depth": 1})
    exported = mtn.export(model)
    assert (exported.body.n_layers, exported.body.first_layer_idx) == (1, 3)
