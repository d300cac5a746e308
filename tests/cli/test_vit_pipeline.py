"""recipes/vit_fashion_mnist.yaml from a shell, shrunk to a tiny ViT on digits: heads and MLP widths are
searched, and convert | train | search | finetune | export run end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from tests.helpers import run_pipeline

pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.kwargs={model_name: vit_tiny_patch16_224, img_size: 8, patch_size: 2, in_chans: 1, num_classes: 10,"
    " depth: 2, embed_dim: 64, num_heads: 4}",
    "input_shape=[1, 8, 8]", "data.name=digits", "data.batch_size=64", "train.epochs=1", "train.num_random=1",
    "train.checkpoint_every=0", "train.bn_calib_batches=1", "search.population=6", "search.parents=2",
    "search.iterations=2", "search.bn_calib_batches=1", "finetune.epochs=1",
]  # fmt: skip


@pytest.mark.slow
def test_a_vit_recipe_runs_every_stage_with_heads_and_mlp_searched(tmp_path):
    run_pipeline(ROOT / "recipes/vit_fashion_mnist.yaml", tmp_path, TINY, "--flops 60%")
    searched = mto.restore(None, tmp_path / "search.pt")
    hparams = mtn.get_subnet_config(searched, configurable=True)
    assert any(name.endswith("attn.num_heads") for name in hparams), list(hparams)
    assert any("mlp.fc1" in name for name in hparams)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(m["stage"] == "finetune" and "test_acc" in m for m in metrics)
    export = subprocess.run([sys.executable, "-m", "nascli", "-q", "export", str(tmp_path / "finetune.pt")],
                            capture_output=True, text=True)  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]
    x = torch.randn(1, 1, 8, 8)  # the export is traced at batch 1
    expected = mto.restore(None, tmp_path / "finetune.pt").eval()(x)
    torch.testing.assert_close(torch.export.load(export.stdout.strip()).module()(x), expected, atol=1e-4, rtol=1e-4)
