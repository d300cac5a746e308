"""The graph built from torch.export: one node per layer call, parameters by path, calls of every block."""

import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.space.export_graph import SHAPE, export_model
from nascli.space.kinds.module_list import ModuleListKind
from nascli.space.space import get_space
from tests.space.kinds.conformance import assert_kind_conforms
from tests.transformer_topologies import DataRouted, Recurrent, TinyDecoder

TOKENS = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))


def test_layer_calls_collapse_and_parameters_keep_their_paths():
    exported = export_model(TinyDecoder(tied=True), (TOKENS,))
    layers = [n.target for n in exported.graph.nodes if n.op == "call_module"]
    assert layers.count("body.blocks.0.attn.q") == 1 and "body.lm_head" in layers
    attrs = {n.target for n in exported.graph.nodes if n.op == "get_attr"}
    assert {"body.embed.weight", "body.blocks.0.norm1.weight", "body.norm.weight"} <= attrs  # tied: by its user
    assert not any(a.startswith("body.blocks.0.attn.") for a in attrs)  # inside collapsed layers
    (head,) = [n for n in exported.graph.nodes if n.target == "body.lm_head"]
    assert head.meta[SHAPE] == (1, 6, 50) and head.args[0].meta[SHAPE] == (1, 6, 64)


def test_every_block_call_records_its_input_and_output():
    exported = export_model(TinyDecoder(), (TOKENS,))
    (first,), (second,) = exported.calls["body.blocks.0"], exported.calls["body.blocks.1"]
    assert first[1] is second[0]  # one block's output is the next block's input
    assert first[0].meta[SHAPE] == first[1].meta[SHAPE] == (1, 6, 64)
    assert {"body.blocks.0.attn", "body.blocks.1.mlp.down"} <= exported.inference_modules


def test_a_region_without_gradients_is_inlined_and_a_stack_run_twice_keeps_its_depth(tmp_path):
    exported = export_model(Recurrent(), (TOKENS,))
    assert not [n for n in exported.graph.nodes if "wrap_with_set_grad_enabled" in str(n.target)]
    assert len(exported.calls["body.blocks.0"]) == 2
    model = assert_kind_conforms(Recurrent, TOKENS, ModuleListKind, tmp_path)
    found = {name: hp.choices for name, hp in get_space(model).hparams.items()}
    assert found["body.blocks.depth"] == (1, 2, 3) and found["body.embed.weight.shape[1]"] == (32, 64)


class _WithHiddenState(torch.nn.Module):
    """Moshi's causal LM: its output carries the last hidden state beside the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 64)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
        self.head = torch.nn.Linear(64, 50)

    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        if ids.shape[0] < 1:
            raise ValueError("empty batch")  # fx cannot trace this: torch.export does
        x = self.embed(ids)
        x = x + self.mlp(x)
        return {"logits": self.head(x), "last_hidden_state": x}


def test_hidden_states_an_output_carries_beside_its_logits_do_not_fix_the_hidden_width():
    model = mtn.convert(_WithHiddenState(), "fastnas", dummy_input=TOKENS).eval()
    assert get_space(model).hparams["embed.weight.shape[1]"].choices == (32, 64)


def test_sizes_that_depend_on_the_data_take_the_dummy_inputs_values(capfd, tmp_path):
    """Tokens routed to each expert by ``nonzero``, and an expert skipped when none is: export decides the
    branch and sizes the rows on the dummy input's real routing, and prints nothing."""
    torch.manual_seed(0)
    model = DataRouted()
    tokens = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    routed = [int((model.body.gate(model.body.embed(tokens)).argmax(-1) == e).sum()) for e in range(4)]
    exported = export_model(model, (tokens,))
    rows = [n.meta[SHAPE][0] for n in exported.graph.nodes if str(n.target).endswith(".0") and n.op == "call_module"]
    assert rows == [count for count in routed if count]
    assert capfd.readouterr().err == ""
    converted = mtn.convert(DataRouted(), "autonas", dummy_input=tokens)
    found = {name: hp.choices for name, hp in get_space(converted).hparams.items()}
    hidden, banked = "body.up.shape[2]", "body.up.shape[1]"  # the body's own bank comes before its embedding
    assert found[hidden] == (32, 64) and found["body.experts.0.0.out_features"] == (64, 96, 128)
    assert found[banked] == (64, 96)  # each expert's weights picked from the bank by index: their width
    mtn.select(converted, {hidden: 32, "body.experts.0.0.out_features": 64, banked: 64})
    converted.eval()
    expected = converted(tokens)
    mto.save(converted, tmp_path / "routed.pt")
    assert torch.equal(torch.load(tmp_path / "routed.pt", weights_only=True)["input_values"][0], tokens)
    restored = mto.restore(DataRouted(), tmp_path / "routed.pt")  # replayed on those tokens, not on zeros
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(converted)
    torch.testing.assert_close(restored.eval()(tokens), expected)
    plain = mtn.export(converted)
    assert plain.body.up.shape == (4, 64, 32) and plain.body.down.shape == (4, 32, 64)
    torch.testing.assert_close(plain(tokens), expected)
