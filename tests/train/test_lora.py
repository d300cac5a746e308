"""Low-rank adapters on a frozen subnet made of views of the converted model's tensors: the adapted
student starts as the subnet, trains only its adapters, and merged, turns the converted model into
the fine-tuned subnet."""

import copy

import pytest
import torch
from torch import nn

import nascli.nas as mtn
from nascli.recipe.schema import LoraSpec
from nascli.space.export import export_in_place, export_max, export_model, export_views
from nascli.space.space import get_space
from nascli.train.lora import adapter_targets, add_adapters, load_merged, merge_adapters, merged_copies
from tests.transformer_topologies import TinyDecoder

pytest.importorskip("peft")
TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))


def _converted_at_a_subnet() -> nn.Module:
    torch.manual_seed(0)
    model = mtn.convert(TinyDecoder(4, 2), "autonas", dummy_input=TOKENS)
    space = get_space(model)
    space.sample("min")
    assert space.config() != {n: max(h.choices) for n, h in space.hparams.items()}
    return model


def _storages(model: nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in model.parameters()}


def test_by_default_every_linear_layer_but_the_output_layer_gets_an_adapter():
    model = export_model(_converted_at_a_subnet())
    targets = adapter_targets(model, None)
    assert "body.lm_head" not in targets
    assert targets == [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "body.lm_head"]
    assert adapter_targets(model, ["down"]) == [n for n in targets if n.endswith(".down")] != []
    with pytest.raises(ValueError, match=r"finetune.lora.targets: no linear layer of the model is named \['wq'\]"):
        adapter_targets(model, ["wq"])


def test_the_frozen_subnet_holds_views_and_trained_adapters_merge_into_the_converted_model():
    model = _converted_at_a_subnet()
    teacher_before = copy.deepcopy(export_max(model)).eval()
    plain = export_model(model).eval()
    student = export_views(model)
    # views, but for the query and output projections: the query heads kept inside each KV group are no slice
    copied = {n for n, p in student.named_parameters() if p.untyped_storage().data_ptr() not in _storages(model)}
    assert copied and all(n.endswith(("attn.q.weight", "attn.o.weight")) for n in copied), copied
    add_adapters(student, LoraSpec(rank=4, alpha=8))
    trained = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n for n in trained)
    assert {p.dtype for n, p in student.named_parameters() if ".lora_" in n} == {torch.float32}
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(TOKENS), plain(TOKENS))  # an adapter starts as the identity

    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    student.train()
    for _ in range(3):
        optimizer.zero_grad()
        student(TOKENS).logsumexp(-1).mean().backward()
        optimizer.step()
    with torch.no_grad():
        adapted = student.eval()(TOKENS)
        assert not torch.allclose(adapted, plain(TOKENS))
        # the frozen weights, which the teacher shares, did not move
        torch.testing.assert_close(export_max(model).eval()(TOKENS), teacher_before(TOKENS))

        merge_adapters(student)
        assert not any("lora" in n for n, _ in student.named_modules())
        torch.testing.assert_close(student(TOKENS), adapted, rtol=1e-4, atol=1e-5)
        copies = merged_copies(student, model)
        assert set(copies) == copied
        fine_tuned = export_in_place(model).eval()
        load_merged(fine_tuned, copies)
        torch.testing.assert_close(fine_tuned(TOKENS), adapted, rtol=1e-4, atol=1e-5)
