"""A pretrained checkpoint at the size users bring, through every stage from the shell.

Builds a Llama of TinyLlama-1.1B's shape (22 layers, hidden 2048, 32 query heads in 4 key/value
groups, MLP 5632, vocabulary 32,000: 1.10 B parameters) with random weights, saved by
``save_pretrained`` in bfloat16 as real checkpoints ship, beside its own tokenizer (a byte-level
BPE trained on part of the Python standard library's source). Then runs, each as its own
``nascli`` process, convert, profile, search (fastnas, uniform, activation importance), with
``--finetune lora|full`` a distillation from the original (low-rank adapters on the frozen bfloat16
subnet, or every weight in float32 master precision) for one step of ``--finetune-batch`` sequences
(three documents of 1,100 characters: one to train on, one each to validate and test), and
``export --format hf``, and prints per stage the wall time,
the peak resident memory above the interpreter's own (Python with torch, transformers and nascli
imported, measured the same way) as a multiple of the weights' bytes, and the bytes the stage
wrote into the run directory.

Run alone (another busy process makes torch on 2 cores many times slower):
    .venv/bin/python scripts/bench_llm_scale.py [--workdir /tmp/nascli-scale] [--layers 22]
``--layers`` builds a shallower model of the same width for a quick look.

``--throughput bfloat16 float32`` then times the exported directory against the original, each
loaded by transformers alone in a fresh process in that dtype: tokens per second of a forward of
4 sequences of 128 tokens and of greedy ``generate`` of 64 new tokens (median of ``--repeats``
after a warm-up).

``--configs 8b 70b`` adds models larger than this machine, given by their ``config.json`` alone
(Llama 3's 8 B and 70 B shapes): ``nascli convert`` builds them on the meta device and ``nascli
profile --params 50%`` prices them from the checkpoint's record. For each it prints the wall
time, the peak resident memory, and the max subnet's parameters in the profile against
``numel`` of the model built on the meta device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

NASCLI = [sys.executable, "-m", "nascli"]
SHAPE = {
    "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 32,
    "num_key_value_heads": 4, "max_position_embeddings": 2048, "tie_word_embeddings": False,
}  # fmt: skip
LLAMA3 = {"vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": False}
CONFIGS = {
    "8b": {**LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8},
    "70b": {**LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
            "num_attention_heads": 64, "num_key_value_heads": 8},
}  # fmt: skip
BASELINE = "import torch, transformers, nascli.cli.app, nascli.hf; import transformers.models.llama.modeling_llama"


def build_checkpoint(directory: Path, layers: int) -> int:
    """A bfloat16 Llama of the 1.1 B shape with its own tokenizer in ``directory``; returns the weights' bytes."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    config = transformers.LlamaConfig(**SHAPE, num_hidden_layers=layers, dtype="bfloat16")
    if not (directory / "model.safetensors").is_file():
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        model = transformers.LlamaForCausalLM(config)
        torch.set_default_dtype(torch.float32)
        model.save_pretrained(directory)
        del model
    if not (directory / "tokenizer.json").is_file():
        stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:200]
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=SHAPE["vocab_size"], special_tokens=["<s>", "</s>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )  # fmt: skip
        tokenizer.train([str(p) for p in stdlib], trainer)
        fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
        fast.save_pretrained(directory)
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def write_recipe(workdir: Path, model_dir: Path) -> Path:
    """fastnas pruning to half the parameters; text of a few standard-library modules (held out by file)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = workdir / "text"
    texts.mkdir(exist_ok=True)
    for name in ("glob.py", "fnmatch.py", "bisect.py", "colorsys.py", "keyword.py", "stat.py"):  # a few steps
        shutil.copy(stdlib / name, texts / name)
    recipe = {
        "model": {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(model_dir)}},
        "input_shape": [128],
        "input_dtype": "int64",
        "mode": "fastnas",
        "rules": {"hidden_size": {"*": {"hidden_divisor": 256}}},
        "data": {"name": "text", "files": [str(texts / "*.py")], "batch_size": 8, "eval_batch_size": 8},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-5, "warmup_epochs": 0},
        "search": {"uniform": True, "importance": "activations", "importance_samples": 8, "score_samples": 4},
        "finetune": {"epochs": 1, "distill": True},
        "run_dir": str(workdir / "run"),
    }
    path = workdir / "scale.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def finetune_texts(workdir: Path) -> list[str]:
    """Three documents of 1,100 characters of glob.py (about 280 tokens: two sequences of 128 each).

    With ``data.val_fraction=0.1`` one is the test split, one validation and one training: one
    fine-tuning step of two sequences, the peak memory of any longer run at that batch.
    """
    source = (Path(sysconfig.get_paths()["stdlib"]) / "glob.py").read_text()
    folder = workdir / "finetune-text"
    folder.mkdir(exist_ok=True)
    paths = []
    for index in range(3):
        path = folder / f"part{index}.py"
        path.write_text(source[index * 1100 : (index + 1) * 1100])
        paths.append(str(path))
    return paths


def peak_rss(command: list[str]) -> tuple[float, float, str]:
    """(seconds, peak resident bytes, stdout) of ``command`` run in a child of a fresh helper process.

    Each measurement runs in its own helper so ``RUSAGE_CHILDREN`` holds that command alone.
    """
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter();"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True);"
        "print(json.dumps({'rc': p.returncode, 's': time.perf_counter() - t, 'out': p.stdout, 'err': p.stderr[-2000:],"
        " 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))"
    )
    done = subprocess.run([sys.executable, "-c", probe, *command], stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result['rc']}):\n{result['err']}")
    return result["s"], result["rss"], result["out"].strip()


def run_dir_bytes(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_size for p in run.rglob("*") if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nascli-scale"))
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--finetune", choices=["lora", "full"], help="also fine-tune (distill) and export finetune.pt")
    parser.add_argument("--finetune-batch", type=int, default=2, help="sequences of 128 tokens per fine-tuning step")
    parser.add_argument(
        "--from-search", action="store_true", help="reuse an earlier run's search.pt: only the stages after"
    )
    parser.add_argument(
        "--throughput",
        nargs="*",
        choices=["bfloat16", "float32"],
        default=[],
        help="also time the exported model against the original in these dtypes",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per throughput figure (median)")
    parser.add_argument("--configs", nargs="*", choices=sorted(CONFIGS), default=[], help="also these, config alone")
    parser.add_argument("--only-configs", action="store_true", help="skip the 1.1 B checkpoint's stages")
    args = parser.parse_args()
    console = Console(stderr=True)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.only_configs:
        _, base, _ = peak_rss([sys.executable, "-c", BASELINE])
        console.print(config_rows(workdir, args.configs, base))
        console.print(f"interpreter (torch, transformers, nascli imported): {base / 1e9:.2f} GB")
        return
    model_dir = workdir / f"llama-{args.layers}l-bf16"
    weights = build_checkpoint(model_dir, args.layers)
    recipe = write_recipe(workdir, model_dir)
    run = workdir / "run"
    if args.from_search and not (run / "search.pt").is_file():
        raise SystemExit(f"--from-search: no {run / 'search.pt'}")
    if not args.from_search:
        shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(workdir / "hf", ignore_errors=True)
    env_threads = os.environ.get("OMP_NUM_THREADS", f"{torch.get_num_threads()} (torch default)")
    _, base, _ = peak_rss([sys.executable, "-c", BASELINE])
    stages = [
        ("convert", [*NASCLI, "convert", str(recipe)]),
        ("profile", [*NASCLI, "profile", str(run / "convert.pt"), "--params", "50%"]),
        ("search", [*NASCLI, "search", str(run / "convert.pt"), "--params", "50%"]),
    ]
    if args.from_search:
        stages = []
    exported = "search.pt"
    if args.finetune:  # many minutes per step at this size on a CPU without bfloat16 units: one step
        texts = finetune_texts(workdir)
        overrides = [
            f"data.batch_size={args.finetune_batch}",
            f"data.files={json.dumps(texts)}",
            "data.val_fraction=0.1",
        ]
        if args.finetune == "lora":
            overrides.append("finetune.lora.rank=16")
        stages.append((f"finetune ({args.finetune})", [*NASCLI, "finetune", str(run / "search.pt"), *overrides]))
        exported = "finetune.pt"
    out = str(workdir / "hf")
    stages.append(("export --format hf", [*NASCLI, "export", str(run / exported), "--format", "hf", "-o", out]))
    table = Table(title=f"{args.layers}-layer Llama of the 1.1B shape, bfloat16, weights {weights / 1e9:.2f} GB")
    for column in ("stage", "wall s", "peak RSS GB", "above interpreter / weights", "written MB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    rows = []
    for name, command in stages:
        before = run_dir_bytes(run) if run.exists() else {}
        seconds, rss, _ = peak_rss(command)
        after = run_dir_bytes(run)
        written = sum(size for path, size in after.items() if before.get(path) != size)
        if name.startswith("export"):
            written = sum(p.stat().st_size for p in (workdir / "hf").rglob("*") if p.is_file())
        ratio = (rss - base) / weights
        rows.append({"stage": name, "seconds": seconds, "rss": rss, "ratio": ratio, "written": written})
        table.add_row(name, f"{seconds:.1f}", f"{rss / 1e9:.2f}", f"{ratio:.2f}x", f"{written / 1e6:.1f}")
        console.print(
            f"{name}: {seconds:.1f}s, {rss / 1e9:.2f} GB peak ({ratio:.2f}x the weights above the interpreter)"
        )
    load_s = _load_seconds(model_dir)
    console.print(table)
    console.print(
        f"interpreter (torch, transformers, nascli imported): {base / 1e9:.2f} GB; weights {weights / 1e9:.2f} GB;"
        f" loading them (from_pretrained, every tensor read): {load_s:.1f}s; torch threads: {env_threads}"
    )
    print(json.dumps({"weights": weights, "interpreter": base, "load_seconds": load_s, "stages": rows}))
    if args.throughput:
        console.print(throughput_rows(model_dir, workdir / "hf", args.throughput, args.repeats))
    if args.configs:
        console.print(config_rows(workdir, args.configs, base))


def config_rows(workdir: Path, names: list[str], base: int) -> Table:
    """Convert and profile of each named config on the meta device, from a directory holding config.json only."""
    import transformers

    table = Table(title="Models given by their config.json alone, on the meta device")
    for column in ("model", "stage", "wall s", "peak RSS GB", "above interpreter GB", "params: profile / numel"):
        table.add_column(column, justify="left" if column in ("model", "stage") else "right")
    for name in names:
        folder = workdir / f"llama3-{name}-config"
        folder.mkdir(parents=True, exist_ok=True)
        config = transformers.LlamaConfig(**CONFIGS[name], dtype="bfloat16")
        config.architectures = ["LlamaForCausalLM"]
        config.save_pretrained(folder)
        with torch.device("meta"):
            numel = sum(p.numel() for p in transformers.LlamaForCausalLM(config).parameters())
        run = workdir / f"run-{name}"
        shutil.rmtree(run, ignore_errors=True)
        recipe = workdir / f"{name}.yaml"
        recipe.write_text(json.dumps({
            "model": {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(folder)}},
            "input_shape": [2048], "input_dtype": "int64", "mode": "fastnas",
            "rules": {"hidden_size": {"*": {"hidden_divisor": 256}}}, "run_dir": str(run),
        }))  # fmt: skip
        stages = [
            ("convert", [*NASCLI, "convert", str(recipe)]),
            ("profile --params 50%", [*NASCLI, "profile", str(run / "convert.pt"), "--params", "50%", "--json"]),
        ]
        for stage, command in stages:
            seconds, rss, out = peak_rss(command)
            counted = ""
            if stage.startswith("profile"):
                counted = f"{json.loads(out)['max']['params']:,} / {numel:,}"
            table.add_row(name, stage, f"{seconds:.1f}", f"{rss / 1e9:.2f}", f"{(rss - base) / 1e9:.2f}", counted)
    return table


THROUGHPUT = """
import json, statistics, sys, time, torch, transformers
path, dtype, batch, seq, new, repeats = sys.argv[1], getattr(torch, sys.argv[2]), *map(int, sys.argv[3:7])
model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).eval()
vocab = model.config.vocab_size
ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
prompt = ids[:1, :16]
def timed(run):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
    return statistics.median(times)
with torch.inference_mode():
    forward = timed(lambda: model(ids))
    generate = timed(lambda: model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False))
print(json.dumps({"forward_tokens_per_s": batch * seq / forward, "generate_tokens_per_s": new / generate}))
"""


def throughput_rows(original: Path, exported: Path, dtypes: list[str], repeats: int) -> Table:
    """Tokens per second of the original and the exported directory, each loaded by transformers in a fresh
    process: a forward of 4 sequences of 128 tokens, and greedy ``generate`` of 64 new tokens after 16."""
    table = Table(title="Throughput of the exported model against the original (transformers, this CPU)")
    for column in ("dtype", "model", "forward tokens/s", "generate tokens/s", "forward speed-up", "generate speed-up"):
        table.add_column(column, justify="left" if column in ("dtype", "model") else "right")
    for dtype in dtypes:
        found = {}
        for name, path in (("original", original), ("exported", exported)):
            command = [sys.executable, "-c", THROUGHPUT, str(path), dtype, "4", "128", "64", str(repeats)]
            found[name] = json.loads(subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout)
        for name, rates in found.items():
            forward, generate = rates["forward_tokens_per_s"], rates["generate_tokens_per_s"]
            up_forward = forward / found["original"]["forward_tokens_per_s"]
            up_generate = generate / found["original"]["generate_tokens_per_s"]
            table.add_row(dtype, name, f"{forward:.1f}", f"{generate:.2f}", f"{up_forward:.2f}x", f"{up_generate:.2f}x")
        print(json.dumps({"throughput": dtype, **found}))
    return table


def _load_seconds(model_dir: Path) -> float:
    """Wall time of loading the checkpoint with every weight read (summed), in a fresh process."""
    code = (
        "import time, torch, transformers; t = time.perf_counter();"
        f"m = transformers.AutoModelForCausalLM.from_pretrained({str(model_dir)!r}, local_files_only=True);"
        "s = sum(float(p.float().sum()) for p in m.parameters()); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
