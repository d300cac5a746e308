"""The whole pipeline from a shell, on digits: convert | train | search | finetune, then export."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.fvcore_count import fvcore_flops

ROOT = Path(__file__).resolve().parents[2]
FAST = ["model.kwargs.width=8", "train.epochs=2", "train.num_random=1", "train.bn_calib_batches=2",
        "search.population=8", "search.parents=3", "search.iterations=2", "search.bn_calib_batches=2",
        "finetune.epochs=1"]  # fmt: skip


def _nascli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "nascli", *args], input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pipeline")
    script = (
        f"{sys.executable} -m nascli -q convert {ROOT / 'recipes/digits.yaml'} run_dir={run_dir} {' '.join(FAST)}"
        f" | {sys.executable} -m nascli -q train"
        f" | {sys.executable} -m nascli -q search --flops 50%"
        f" | {sys.executable} -m nascli -q finetune"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(run_dir / "finetune.pt")
    return run_dir


@pytest.mark.slow
def test_every_stage_restores_and_the_result_meets_the_budget(run_dir):
    x = torch.randn(1, 1, 8, 8)
    original = mto.restore(None, run_dir / "convert.pt")
    mtn.sample(original, "max")
    full = fvcore_flops(mtn.export(original), (x,))
    for stage in ("convert", "train", "search"):
        assert mtn.get_subnet_config(mto.restore(None, run_dir / f"{stage}.pt"), configurable=True)
    final = mto.restore(None, run_dir / "finetune.pt")
    assert not hasattr(final, "_nascli_space")
    assert fvcore_flops(final, (x,)) <= 0.5 * full
    report = json.loads((run_dir / "search.json").read_text())
    assert {"original", "best", "constraints", "candidates", "pareto"} <= set(report)
    assert report["best"]["flops"] == fvcore_flops(final, (x,))
    assert (run_dir / "pareto.png").stat().st_size > 10_000
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(m["stage"] == "finetune" and "test_acc" in m for m in metrics)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "torchscript", "onnx"])
def test_export_formats_load_without_nascli_and_match(run_dir, fmt):
    done = _nascli("-q", "export", str(run_dir / "finetune.pt"), "--format", fmt, "-o", str(run_dir / f"m.{fmt}"))
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(done.stdout.strip())
    x = torch.randn(1, 1, 8, 8)
    expected = mto.restore(None, run_dir / "finetune.pt").eval()(x)
    if fmt == "pt2":
        got = torch.export.load(path).module()(x)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript in favour of pt2
            got = torch.jit.load(str(path))(x)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_unsatisfiable_search_exits_3(run_dir):
    done = _nascli("search", str(run_dir / "train.pt"), "--flops", "1%")
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1].startswith("error: constraints cannot be met: flops")


def test_bad_export_format_exits_2(tmp_path):
    convert = _nascli("-q", "convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={tmp_path}")
    done = _nascli("export", convert.stdout.strip(), "--format", "tflite")
    assert done.returncode == 2 and "expected one of pt2, onnx, torchscript" in done.stderr


@pytest.mark.slow
def test_fastnas_prunes_a_trained_model_without_supernet_training(tmp_path):
    from nascli.models import resnet20

    torch.manual_seed(0)
    weights = tmp_path / "trained.pt"
    torch.save(resnet20(10, 1, 16).state_dict(), weights)
    args = [f"run_dir={tmp_path / 'run'}", "mode=fastnas", f"model.checkpoint={weights}", "search.bn_calib_batches=2"]
    convert = _nascli("-q", "convert", str(ROOT / "recipes/digits.yaml"), *args)
    assert convert.returncode == 0, convert.stderr
    done = _nascli("-q", "search", "--flops", "40%", "--json", stdin=convert.stdout)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert 0 <= payload["score"] <= 1 and payload["checkpoint"].endswith("search.pt")
    report = json.loads((tmp_path / "run" / "search.json").read_text())
    assert set(report["sensitivity"]) == set(report["best"]["config"])  # fastnas searches with its map
    assert report["best"]["flops"] <= 0.4 * report["original"]["flops"]
    bad = _nascli("convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={tmp_path}/x", "model.checkpoint=nope.pt")
    assert bad.returncode == 2 and "model.checkpoint: no such file" in bad.stderr


@pytest.mark.slow
def test_a_finished_search_has_nothing_to_resume(run_dir):
    assert torch.load(run_dir / "search.pt", weights_only=True)["trainer"] is None
    done = _nascli("search", str(run_dir / "train.pt"), "--resume", "--flops", "50%")
    assert done.returncode == 2 and "no unfinished search.pt" in done.stderr


@pytest.mark.slow
def test_search_under_a_latency_bound(run_dir, tmp_path):
    args = ["-q", "search", str(run_dir / "train.pt"), f"run_dir={tmp_path}", "--latency", "90%", "search.iterations=1"]
    done = _nascli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "search.json").read_text())
    bound = report["constraints"]["latency"]
    assert all(0 < c["latency"] <= bound for c in report["candidates"])
    assert list(Path(os.environ["NASCLI_CACHE_DIR"]).glob("latency-cpu-*.json"))
    assert not list(tmp_path.glob("latency-*"))


@pytest.mark.slow
def test_two_processes_score_candidates_in_parallel_with_the_same_result(run_dir, tmp_path):
    settings = ["--flops", "60%", "search.iterations=2", "search.population=8", "search.parents=3"]
    one = _nascli("-q", "search", str(run_dir / "train.pt"), f"run_dir={tmp_path / 'one'}", *settings)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "nascli", "-q",
         "search", str(run_dir / "train.pt"), f"run_dir={tmp_path / 'two'}", *settings],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.strip() == str(tmp_path / "two" / "search.pt")
    a, b = (json.loads((tmp_path / d / "search.json").read_text()) for d in ("one", "two"))
    assert a["candidates"] == b["candidates"] and a["best"] == b["best"]
