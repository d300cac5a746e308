"""Fine-tuning runs the trainer's loop (gradient clipping, learning-rate schedule) and distills from a plain teacher."""

import json

import pytest
import torch
from torch import nn

import nascli.opt as mto
from nascli.errors import UserInputError
from nascli.space.export import export_model
from nascli.space.space import get_space, is_converted
from nascli.stages.finetune import finetune_stage
from nascli.stages.load import load_stage_input
from nascli.train.trainer import SubnetTrainer
from tests.stages.common import as_stage, convert


def test_finetune_clips_gradients_and_warms_up_as_training_does(tmp_path, monkeypatch):
    search = as_stage(convert(tmp_path), tmp_path / "search.pt", "search")
    overrides = ["finetune.epochs=1", "finetune.distill=false", "train.grad_clip=0.25", "train.warmup_epochs=5"]
    model, _, _, recipe = load_stage_input(search, overrides, "finetune")
    clipped = []
    real = nn.utils.clip_grad_norm_
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda params, bound: clipped.append(bound) or real(params, bound))
    finetune_stage(model, recipe, None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r["stage"] == "finetune" and "epoch" in r)
    assert clipped and set(clipped) == {0.25}
    # warmup longer than the run is clamped to it: the last step reaches the full learning rate
    assert epoch["lr"] == recipe.train.lr * 0.5


def test_the_teacher_is_the_plain_full_model_and_runs_in_bfloat16_when_asked(tmp_path, monkeypatch):
    search = as_stage(convert(tmp_path), tmp_path / "search.pt", "search")
    overrides = ["finetune.epochs=1", "finetune.distill=true", "finetune.teacher_bf16=true"]
    model, _, _, recipe = load_stage_input(search, overrides, "finetune")
    full_params = sum(p.numel() for p in export_model(model).parameters())  # the model at max, as converted
    get_space(model).sample("min")  # the subnet a search picked
    seen = []
    real_init = SubnetTrainer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.teacher.register_forward_hook(
            lambda *_: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        )
        seen.append(self.teacher)

    monkeypatch.setattr(SubnetTrainer, "__init__", init)
    finetune_stage(model, recipe, None)
    teacher, *calls = seen
    assert not is_converted(teacher) and sum(p.numel() for p in teacher.parameters()) == full_params
    student = mto.restore(None, tmp_path / "finetune.pt")
    assert sum(p.numel() for p in student.parameters()) < full_params  # the student is the searched subnet
    assert calls and set(calls) == {(True, torch.bfloat16)}


def test_adapters_on_a_model_whose_only_linear_layer_is_its_output_are_refused_in_one_line(tmp_path):
    search = as_stage(convert(tmp_path), tmp_path / "search.pt", "search")
    model, _, _, recipe = load_stage_input(search, ["finetune.epochs=1", "finetune.lora.rank=4"], "finetune")
    with pytest.raises(UserInputError, match="finetune.lora: the model has no linear layer besides its output layer"):
        finetune_stage(model, recipe, None)
    assert not (tmp_path / "finetune.pt").exists()
