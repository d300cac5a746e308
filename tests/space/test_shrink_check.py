"""The forward check of conversion: hparams of disjoint subtrees share a forward, and the result is
the same as checking each hparam alone."""

import pytest
import torch
from torch import nn

import nascli.nas as mtn
import nascli.opt as mto
import nascli.space.shrink_check as shrink_check
from nascli.space.hparam import Hparam
from nascli.space.space import get_space
from tests.transformer_topologies import ExportOnly


class _Block(nn.Module):
    """A residual MLP; ``written_out`` reshapes its hidden activation to the size its weight was built with."""

    def __init__(self, written_out: bool) -> None:
        super().__init__()
        self.up, self.down, self.written_out = nn.Linear(8, 64), nn.Linear(64, 8), written_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.up(x))
        if self.written_out:
            h = h.reshape(x.shape[0], self.up.weight.shape[0])  # the full width: cannot shrink
        return x + self.down(h)


class _Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(written_out=i in (2, 3)) for i in range(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Stack(ExportOnly):
    """Eight residual MLPs, two of which cannot shrink; traced with torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _Stack()


def _converted(monkeypatch, one_at_a_time: bool) -> tuple[nn.Module, int]:
    forwards = []
    run = shrink_check.run_in_mode
    monkeypatch.setattr(shrink_check, "run_in_mode", lambda *args: forwards.append(1) or run(*args))
    if one_at_a_time:
        monkeypatch.setattr(shrink_check, "disjoint_rounds", lambda hparams, scopes: [[hp] for hp in hparams])
    torch.manual_seed(0)
    model = mtn.convert(Stack(), "fastnas", dummy_input=torch.randn(2, 8))
    monkeypatch.undo()
    return model, len(forwards)


def test_blocks_share_forwards_and_find_what_each_forward_alone_finds(monkeypatch):
    model, forwards = _converted(monkeypatch, one_at_a_time=False)
    reference, forwards_alone = _converted(monkeypatch, one_at_a_time=True)
    space, alone = get_space(model), get_space(reference)
    assert {n: hp.choices for n, hp in space.hparams.items()} == {n: hp.choices for n, hp in alone.hparams.items()}
    assert space.fixed_reasons == alone.fixed_reasons
    assert sorted(n for n, why in space.fixed_reasons.items() if "forward fails with" in why) == [
        "body.blocks.2.up.out_features",
        "body.blocks.3.up.out_features",
    ]
    assert forwards_alone == 8  # one per block's width
    assert forwards == 7  # all eight, then halves of four, of two, of one: 1 + 2 + 2 + 2


def _hp(name: str) -> Hparam:
    return Hparam(name, (1, 2))


def test_nested_scopes_never_share_a_round_and_unheld_hparams_go_alone():
    layer0_mlp, layer0_attn, layer0_heads, layer1_mlp, hidden, unheld = map(_hp, "abcdef")
    scopes = {
        id(layer0_mlp): ("layers", "0", "mlp"),
        id(layer0_attn): ("layers", "0", "attn"),
        id(layer0_heads): ("layers", "0", "attn"),
        id(layer1_mlp): ("layers", "1", "mlp"),
        id(hidden): (),
    }
    rounds = shrink_check.disjoint_rounds([layer0_mlp, layer0_attn, layer0_heads, layer1_mlp, hidden, unheld], scopes)
    assert rounds == [[layer0_mlp, layer0_attn, layer1_mlp], [layer0_heads], [hidden], [unheld]]


@pytest.mark.parametrize(
    ("failing", "forwards"),
    [(set(), 1), ({3}, 7), ({6, 7}, 7), ({0, 7}, 11), (set(range(8)), 11)],  # 11: both halves fail, each alone
)
def test_a_failing_round_is_split_until_each_failing_hparam_is_alone(failing, forwards):
    hparams = [_hp(str(i)) for i in range(8)]

    def run():
        if any(hparams[i].active == hparams[i].min for i in failing):
            raise RuntimeError("shape mismatch\nsecond line")

    frozen = {}
    assert shrink_check._check(run, hparams, lambda hp, why: frozen.setdefault(hp.name, why)) == forwards
    assert set(frozen) == {str(i) for i in failing}
    assert all(why == "the model's forward fails with 1: shape mismatch" for why in frozen.values())
    assert all(hp.active == hp.max for hp in hparams)


def test_a_restored_model_keeps_full_what_the_check_kept_full(monkeypatch, tmp_path):
    """The checkpoint lists only searchable hparams: one the check kept full is absent and stays full on replay."""
    model, _ = _converted(monkeypatch, one_at_a_time=False)
    restored = mto.restore(Stack, mto.save(model, tmp_path / "stack.pt"))
    assert {n: hp.choices for n, hp in get_space(restored).hparams.items()} == {
        n: hp.choices for n, hp in get_space(model).hparams.items()
    }
    assert "body.blocks.2.up.out_features" in get_space(restored).fixed_reasons
    x = torch.randn(2, 8)
    torch.testing.assert_close(restored.eval()(x), model.eval()(x), rtol=0, atol=0)
