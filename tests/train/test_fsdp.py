"""Sharded distillation (FSDP2) in two gloo processes on the CPU against the same fine-tuning in one process.

A tiny Llama student (the min subnet) distils from its max subnet for 2 epochs of 20 steps
(global batch 16: 8 sequences per process). The two runs compute the same sums in a different
order: each process's loss is the mean over its half of the batch, and FSDP averages the halves'
gradients by a reduce-scatter, where one process averages over the whole batch at once. In
float32 those orders differ in the last bits; measured on this CPU: at most 1.7e-7 relative on
a step's loss over the 40 steps, 1.2e-7 on any weight after them. The tolerances, relative 1e-5
on the logged losses and perplexities and 1e-5 absolute on the weights, leave room for other
CPUs' kernels while a real difference (a gradient not averaged, a batch share seen twice, a
teacher that moves) shows from the second step on at 1e-4 and more.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import nascli.opt as mto
from nascli.cli.app import app
from nascli.opt.checkpoint import build_checkpoint, read_checkpoint, write_checkpoint
from nascli.space.space import get_space
from nascli.stages.load import load_stage_input
from nascli.train.fsdp import shard_units
from tests.stages.common import as_stage, convert

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

runner = CliRunner()
JSON_FILES = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
LLAMA = {
    "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 32, "use_cache": False,
}  # fmt: skip
RECIPE = {
    "model": {"factory": "nascli.hf:from_config", "kwargs": {"architecture": "LlamaForCausalLM", "config": LLAMA}},
    "input_shape": [16], "input_dtype": "int64", "mode": "fastnas", "seed": 0,
    "data": {"name": "text", "files": [JSON_FILES], "vocab_size": 512, "batch_size": 16, "eval_batch_size": 32,
             "val_fraction": 0.2},
    "train": {"optimizer": "adamw", "lr": 0.004, "warmup_epochs": 0.5, "grad_clip": 1.0},
    "finetune": {"distill": True, "distill_weight": 0.5, "epochs": 2},
}  # fmt: skip
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def _env() -> dict[str, str]:
    """The test session's config and cache dirs (set by conftest), one thread per process."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _nascli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nascli", *args], capture_output=True, text=True, env=_env())


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    # --standalone: the rendezvous on a free local port
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.run([*launcher, "-m", "nascli", *args], capture_output=True, text=True, env=_env())


def _epochs(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "epoch" in r or "val_ppl" in r]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """search.pt of a tiny Llama's min subnet, its fine-tuning in one process, and that run's unfinished
    finetune.pt after epoch 1 (kept aside, since the finished one replaces it)."""
    base = tmp_path_factory.mktemp("fsdp")
    (base / "recipe.yaml").write_text(yaml.safe_dump({**RECIPE, "run_dir": str(base / "convert")}))
    converted = runner.invoke(app, ["-q", "convert", str(base / "recipe.yaml")])
    assert converted.exit_code == 0, converted.stderr
    model, _, checkpoint, _ = load_stage_input(Path(converted.stdout.strip()), [], "train")
    get_space(model).sample("min")
    search = write_checkpoint(build_checkpoint(model, "search", checkpoint["recipe"], checkpoint["model"]),
                              base / "search.pt")  # fmt: skip
    run_dir = base / "single"
    import nascli.stages.finetune as stage

    real, unfinished = stage.write_checkpoint, base / "unfinished.pt"

    def write(checkpoint, path):
        if checkpoint.get("trainer") is not None:
            real(checkpoint, unfinished)
        return real(checkpoint, path)

    stage.write_checkpoint = write
    try:
        done = runner.invoke(app, ["-q", "finetune", str(search), f"run_dir={run_dir}"])
    finally:
        stage.write_checkpoint = real
    assert done.exit_code == 0, done.stderr
    assert read_checkpoint(unfinished)["trainer"]["epoch"] == 1
    return search, run_dir, unfinished


def _same_run(single_dir: Path, run_dir: Path) -> None:
    one, two = _epochs(single_dir), _epochs(run_dir)
    assert [r.get("epoch") for r in two] == [r.get("epoch") for r in one]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "ppl", "val_ppl", "test_ppl"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), (key, a, b)
    a = read_checkpoint(single_dir / "finetune.pt")["state_dict"]
    b = read_checkpoint(run_dir / "finetune.pt")["state_dict"]
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < WEIGHT_ATOL


@pytest.mark.slow
def test_two_sharded_processes_distil_as_one_process_does(single):
    search, single_dir, _ = single
    run_dir = search.parent / "sharded"
    done = _nascli("-q", "finetune", "--nproc", "2", str(search), f"run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(run_dir / "finetune.pt")  # one process printed, one wrote
    _same_run(single_dir, run_dir)
    # rank 0's whole (unsharded) checkpoint restores in one process, to the weights it holds
    restored = mto.restore(None, run_dir / "finetune.pt")
    written = read_checkpoint(run_dir / "finetune.pt")["state_dict"]
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in written.items())


@pytest.mark.slow
def test_a_run_one_process_left_unfinished_resumes_sharded_to_the_same_weights(single):
    search, single_dir, unfinished = single
    run_dir = search.parent / "resumed"
    run_dir.mkdir()
    (run_dir / "finetune.pt").write_bytes(unfinished.read_bytes())
    done = _torchrun("-q", "finetune", str(search), f"run_dir={run_dir}", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    records = _epochs(run_dir)
    assert [r.get("epoch") for r in records] == [2, None]  # epoch 1 came from the checkpoint
    assert records[0]["loss"] == pytest.approx(_epochs(single_dir)[1]["loss"], rel=LOSS_RTOL)
    a = read_checkpoint(single_dir / "finetune.pt")["state_dict"]
    b = read_checkpoint(run_dir / "finetune.pt")["state_dict"]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < WEIGHT_ATOL


@pytest.mark.slow
def test_a_finished_run_is_not_resumed_again(single):
    search, single_dir, _ = single
    done = runner.invoke(app, ["finetune", str(search), f"run_dir={single_dir}", "--resume", "--json"])
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["finished"] is True


def test_adapters_under_several_processes_are_refused_in_one_line_before_torchrun(tmp_path, monkeypatch):
    search = as_stage(convert(tmp_path), tmp_path / "search.pt", "search")
    monkeypatch.setattr("nascli.cli.train.subprocess.run", lambda *a, **k: pytest.fail("torchrun was started"))
    done = runner.invoke(app, ["finetune", "--nproc", "2", str(search), "finetune.lora.rank=4"])
    assert done.exit_code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "finetune.lora: adapters fine-tune in one process only" in lines[0]


def test_a_llama_is_sharded_per_decoder_layer_and_a_plain_model_per_block():
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    assert shard_units(model) == list(reversed(model.model.layers))  # embeddings, norm and head: the root's
    blocks = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]))
    assert shard_units(blocks) == list(reversed(blocks[0]))
    plain = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    assert shard_units(plain) == [plain[2], plain[0]]
