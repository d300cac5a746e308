"""Fine-tuning runs the trainer's loop: its gradient clipping and learning-rate schedule."""

import json

from torch import nn

from nascli.stages.finetune import finetune_stage
from nascli.stages.load import load_stage_input
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
