"""Checks shared by the engine tests."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import nascli.nas as mtn
from nascli.space.kinds import DynamicModule
from nascli.space.space import get_space


def hparam_of(model: nn.Module, entry: str):
    return dict(get_space(model).entries)[entry]


def assert_native(model: nn.Module) -> None:
    dynamic = [n for n, m in model.named_modules() if isinstance(m, DynamicModule)]
    assert not dynamic, f"exported model still holds dynamic layers: {dynamic[:3]}"
    assert not hasattr(model, "_nascli_space")


@torch.no_grad()
def assert_export_matches(model: nn.Module, x: torch.Tensor, how, atol: float = 1e-5) -> nn.Module:
    """Activate a subnet, export it, and check the exported model computes the same output."""
    mtn.sample(model, how)
    model.eval()
    exported = mtn.export_copy(model).eval()
    assert_native(exported)
    expected, got = model(x), exported(x)
    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
    return exported


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def word_tokenizer(words: list[str]):
    """A fast tokenizer of whitespace-separated words (transformers): ids 0, 1 and 2 are ``[UNK]``, ``<s>`` (BOS,
    put before every text) and ``</s>`` (EOS), then ``words`` in order."""
    import tokenizers
    import transformers

    vocabulary = ["[UNK]", "<s>", "</s>", *dict.fromkeys(words)]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({t: i for i, t in enumerate(vocabulary)}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="[UNK]"
    )


def error_lines(result) -> list[str]:
    """The error lines a CLI run printed on stderr (transformers draws a progress bar there while it loads weights)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error")]


def run_pipeline(recipe: Path, run_dir: Path, overrides: list[str], search: str) -> None:
    """``nascli convert RECIPE | train | search SEARCH | finetune`` in a shell, as a user runs it."""
    nascli = f"{sys.executable} -m nascli -q"
    quoted = " ".join(f"'{o}'" for o in overrides)
    script = (
        f"{nascli} convert {recipe} run_dir={run_dir} {quoted}"
        f" | {nascli} train | {nascli} search {search} | {nascli} finetune"
    )
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def train_and_kill(args: list[str], checkpoint: Path, at_step: int, timeout: float = 120) -> dict:
    """Run ``nascli train *args``, kill it (SIGKILL) once ``checkpoint`` holds step ``at_step`` or
    later, and return the trainer state it left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nascli", "-q", "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = torch.load(checkpoint, weights_only=True)["trainer"] if checkpoint.is_file() else {"global_step": -1}
        if state is None or state["global_step"] >= at_step:  # None: the run finished first
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return torch.load(checkpoint, weights_only=True)["trainer"]
