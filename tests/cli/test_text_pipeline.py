"""A language model from a shell: convert | train (plain) | search --params | finetune (distilled) | export --format hf.

The tiny_llama recipe shrunk to a tiny config, on a few files of the Python standard library.
"""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import nascli.opt as mto
from tests.helpers import run_pipeline, train_and_kill

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[2]
JSON_FILES = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
TINY = [
    "model.kwargs.config={vocab_size: 512, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,"
    " num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, use_cache: false}",
    "input_shape=[32]", "data.corpus=null", f"data.files=[{JSON_FILES}]", "data.vocab_size=512",
    "data.val_fraction=0.2", "data.batch_size=8", "train.checkpoint_every=0", "finetune.distill_weight=0.5",
    'rules={nn.ModuleList: {"*": {min_depth: 1}}}', "search.score_samples=8",
]  # fmt: skip


def _nascli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "nascli", *args], input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("text")
    run_pipeline(ROOT / "recipes/tiny_llama.yaml", run_dir, TINY, "--params 60%")
    return run_dir


@pytest.mark.slow
def test_every_stage_reports_perplexity_and_the_pruned_model_meets_the_budget(run_dir):
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = next(m for m in metrics if m["stage"] == "train")
    assert train["ppl_max"] > 1 and train["tokens_per_s"] > 0 and "acc_max" not in train
    search = next(m for m in metrics if m["stage"] == "search")
    assert search["score"] < -1  # the negative validation perplexity
    stored = torch.load(run_dir / "search.pt", weights_only=True)
    assert stored["sorted_by"] == "activations" and sorted(stored["block_ranks"]["model.layers.depth"]) == [0, 1]
    report = json.loads((run_dir / "search.json").read_text())
    assert report["uniform"] and "model.layers.*.mlp.gate_proj.out_features" in report["sensitivity"]
    widths = {v for k, v in report["best"]["config"].items() if k.endswith("mlp.gate_proj.out_features")}
    assert len(widths) == 1  # one MLP width in every layer, as the recipe's search.uniform asks
    final = next(m for m in metrics if m["stage"] == "finetune" and "test_ppl" in m)
    assert final["val_ppl"] > 1 and final["test_ppl"] > 1
    original = sum(p.numel() for p in mto.restore(None, run_dir / "convert.pt").parameters())
    pruned = sum(p.numel() for p in mto.restore(None, run_dir / "finetune.pt").parameters())
    assert pruned <= 0.6 * original


@pytest.mark.slow
def test_the_finetuned_model_exports_to_a_directory_from_pretrained_loads(run_dir):
    done = _nascli("-q", "export", str(run_dir / "finetune.pt"), "--format", "hf", "-o", str(run_dir / "hf"))
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "hf", local_files_only=True).eval()
    finetuned = mto.restore(None, run_dir / "finetune.pt").eval()
    ids = torch.randint(0, 512, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, finetuned(ids).logits, atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in finetuned.parameters())
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir / "hf", local_files_only=True)
    ids = tokenizer("def loads(s):\n    return json")["input_ids"]
    assert 0 < len(ids) < 20 and max(ids) < 512 and tokenizer.decode(ids) == "def loads(s):\n    return json"


def test_a_corpus_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine text\n\xff broken")
    convert = _nascli("-q", "convert", str(ROOT / "recipes/tiny_llama.yaml"), f"run_dir={tmp_path / 'run'}", *TINY[:2],
                      "data.corpus=null", f"data.files=[{tmp_path / 'bad.txt'}]")  # fmt: skip
    assert convert.returncode == 0, convert.stderr  # convert reads no data
    done = _nascli("train", stdin=convert.stdout)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: data.files: {tmp_path / 'bad.txt'} is not valid UTF-8 (byte 10)"
    ]
    assert not (tmp_path / "run" / "train.pt").exists() and (tmp_path / "run" / "convert.pt").exists()


@pytest.mark.slow
def test_a_killed_pretraining_resumes_to_the_same_weights_with_the_pinned_tokenizer(tmp_path):
    settings = [*TINY, "train.epochs=6", "train.checkpoint_every=2"]
    whole = _nascli("-q", "train", str(ROOT / "recipes/tiny_llama.yaml"), f"run_dir={tmp_path / 'whole'}", *settings)
    assert whole.returncode == 0, whole.stderr

    run_dir = tmp_path / "killed"
    state = train_and_kill(
        [str(ROOT / "recipes/tiny_llama.yaml"), f"run_dir={run_dir}", *settings], run_dir / "train.pt", 4
    )
    assert state is not None, "the run finished before it was killed"  # a finished run keeps no trainer state
    assert (run_dir / "tokenizer.json").read_text() == (tmp_path / "whole" / "tokenizer.json").read_text()

    resumed = _nascli("-q", "train", str(run_dir / "train.pt"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "train.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "train.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ppl = [r["ppl_max"] for r in records if "ppl_max" in r]
    assert len(ppl) == 6 and ppl[-1] < ppl[0]  # one validation perplexity per epoch, killed or not
