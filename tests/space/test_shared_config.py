"""A layer's view of a shared config: its own sizes apart, everything else read from and written to the shared one."""

import copy
import pickle
from types import SimpleNamespace

from nascli.space.shared_config import LayerConfigView


def _views():
    shared = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2, _attn_implementation="sdpa")
    return shared, [LayerConfigView(shared, {"num_attention_heads": 4}) for _ in range(2)]


def test_each_layer_holds_its_own_sizes_and_reads_the_rest_through():
    shared, (first, second) = _views()
    vars(first)["num_attention_heads"] = 2  # as a followed size is set for one forward
    assert (first.num_attention_heads, second.num_attention_heads, shared.num_attention_heads) == (2, 4, 4)
    assert first.num_key_value_heads == 2


def test_a_change_to_the_shared_config_reaches_every_layer():
    shared, (first, second) = _views()
    shared._attn_implementation = "eager"
    first.use_cache = False  # not held apart: written to the shared config
    assert first._attn_implementation == second._attn_implementation == "eager"
    assert second.use_cache is False and shared.use_cache is False


def test_copies_and_pickles_keep_one_shared_config():
    shared, views = _views()
    copied_shared, copied = copy.deepcopy((shared, views))
    copied_shared._attn_implementation = "eager"
    assert [v._attn_implementation for v in copied] == ["eager", "eager"] and shared._attn_implementation == "sdpa"
    restored = pickle.loads(pickle.dumps(views))
    assert restored[0].num_key_value_heads == 2 and restored[0]._shared is restored[1]._shared
