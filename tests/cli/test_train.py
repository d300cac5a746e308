import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cli.app import app
from tests.helpers import train_and_kill

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes/digits.yaml")
runner = CliRunner()
SMALL = ["model.kwargs.width=8", "train.num_random=1", "train.bn_calib_batches=2"]


def _nascli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "nascli", *args], capture_output=True, text=True, **kwargs)


def test_train_writes_a_restorable_checkpoint_and_metrics(tmp_path):
    result = runner.invoke(app, ["-q", "train", RECIPE, f"run_dir={tmp_path}", "train.epochs=2", *SMALL])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "train.pt")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["stage"] == "train"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"epoch", "loss", "lr", "acc_max", "acc_min", "seconds"} <= set(epochs[0])
    checkpoint = torch.load(tmp_path / "train.pt", weights_only=True)
    assert checkpoint["stage"] == "train" and checkpoint["trainer"] is None and checkpoint["subnet"] is None
    model = mto.restore(None, tmp_path / "train.pt")
    assert mtn.get_subnet_config(model, configurable=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=-1", "train.epochs: Input should be greater than 0"),
        ("train.optimizer=lion", "train.optimizer: Input should be 'sgd' or 'adamw'"),
        ("train.lr=fast", "train.lr: Input should be a valid number"),
        ("data.name=imagenet", "data.name: Input should be"),
        ("data.batch_size=100000", "exceeds the"),
        pytest.param(
            "train.device=cuda",
            "train.device: cuda was asked for, but no CUDA device is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bad_train_settings_exit_2_with_one_line(tmp_path, override, message):
    convert = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}"])
    assert convert.exit_code == 0
    result = runner.invoke(app, ["train", override], input=convert.stdout)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_split_students_on_too_small_a_batch_exit_2_with_one_line(tmp_path):
    convert = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}"])
    result = runner.invoke(app, ["train", "train.split_students=true", "data.batch_size=4"], input=convert.stdout)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.split_students: 4 rows per process give the 3 smaller subnets" in lines[0]


def test_missing_dataset_root_is_a_clear_error(tmp_path):
    args = [
        "train",
        RECIPE,
        f"run_dir={tmp_path}",
        "data.name=cifar10",
        f"data.root={tmp_path}/none",
        "input_shape=[3,32,32]",
        "model.kwargs.in_channels=3",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "needs an existing local folder" in result.stderr


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    settings = ["train.epochs=3", "train.checkpoint_every=4", *SMALL]
    whole = _nascli("-q", "train", RECIPE, f"run_dir={tmp_path / 'whole'}", *settings)
    assert whole.returncode == 0, whole.stderr

    run_dir = tmp_path / "killed"
    state = train_and_kill([RECIPE, f"run_dir={run_dir}", *settings], run_dir / "train.pt", 8)
    assert state is not None and state["global_step"] < 3 * 16, "the run finished before it was killed"

    resumed = _nascli("-q", "train", str(run_dir / "train.pt"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "train.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "train.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_processes_under_torchrun_agree(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "nascli", "-q",
         "train", RECIPE, f"run_dir={tmp_path}", "train.epochs=1", *SMALL],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["ranks"] == 2  # parameters_agree itself: tests/train/test_distributed.py
    assert done.stdout.strip() == str(tmp_path / "train.pt")


@pytest.mark.slow
def test_nproc_wraps_torchrun_and_reads_the_piped_input(tmp_path):
    convert = _nascli("-q", "convert", RECIPE, f"run_dir={tmp_path}", *SMALL)
    assert convert.returncode == 0
    done = _nascli("-q", "train", "--nproc", "2", "train.epochs=1", input=convert.stdout,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(tmp_path / "train.pt")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1].get("ranks") == 2
