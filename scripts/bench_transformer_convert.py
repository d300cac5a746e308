"""Conversion of transformers and modern conv nets: nascli's search dimensions against Torch-Pruning's groups.

For each model (random weights, built from its config, no downloads, eval mode) and in the same
run: the seconds of ``mtn.convert(model, "fastnas")`` and the searchable hparams it finds, split
into attention heads, channels and MLP widths, and hidden widths (read through an embedding or
token parameter, ``...weight.shape[i]``, ``cls_token.shape[2]``); the hparam count of ``"autonas"`` (which adds depth);
and, on a fresh copy of the same model, the seconds of Torch-Pruning's
``DependencyGraph().build_dependency`` and the number of prunable groups it finds, rooted at
Conv2d and Linear layers with the classifier ignored. A model Torch-Pruning (or nascli) cannot
handle gets the first line of the error instead of numbers. Each model is measured once per
tool, on one thread, after both tools have run once on a tiny model. Text models take 128 token
ids, image models one 224x224 image.

    python scripts/bench_transformer_convert.py [--models efficientnet_b0,llama8] [--markdown]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import timm
import torch
import torch_pruning as tp
import transformers
from rich.console import Console
from rich.table import Table
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)

import nascli.nas as mtn
from nascli.space.space import get_space

# nascli's cost model imports fvcore.nn, which warns about torch.jit.script on import.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
transformers.logging.set_verbosity_error()

COLUMNS = (
    "model",
    "params (M)",
    "fastnas (s)",
    "heads",
    "channels/MLP",
    "hidden",
    "fastnas total",
    "autonas total (depth)",
    "TP (s)",
    "TP groups",
)


@dataclass(frozen=True)
class Spec:
    build: Callable[[], nn.Module]
    head: Callable[[nn.Module], nn.Module]  # the classifier, which Torch-Pruning must leave alone
    vocab: int | None = None  # token ids in [0, vocab) for a text model, one image otherwise

    def dummy_input(self) -> torch.Tensor:
        if self.vocab is not None:
            return torch.randint(0, self.vocab, (1, 128))
        return torch.randn(1, 3, 224, 224)


def timm_spec(name: str) -> Spec:
    return Spec(lambda: timm.create_model(name, pretrained=False, num_classes=1000), lambda m: m.get_classifier())


BERT, GPT2 = BertConfig(), GPT2Config(use_cache=False)
LLAMA = LlamaConfig(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    use_cache=False,
)

MODELS: dict[str, Spec] = {
    "bert_base": Spec(lambda: BertForSequenceClassification(BERT), lambda m: m.classifier, BERT.vocab_size),
    "llama8": Spec(lambda: LlamaForCausalLM(LLAMA), lambda m: m.lm_head, LLAMA.vocab_size),
    "gpt2": Spec(lambda: GPT2LMHeadModel(GPT2), lambda m: m.lm_head, GPT2.vocab_size),
    "vit_base_hf": Spec(lambda: ViTForImageClassification(ViTConfig()), lambda m: m.classifier),
    "vit_small_patch16_224": timm_spec("vit_small_patch16_224"),
    "convnext_tiny": timm_spec("convnext_tiny"),
    "efficientnet_b0": timm_spec("efficientnet_b0"),
    "mobilevitv2_050": timm_spec("mobilevitv2_050"),
}


def hparam_class(name: str) -> str:
    if name.endswith((".num_heads", ".num_kv_heads")):
        return "heads"
    if name.endswith(".depth"):
        return "depth"
    if ".shape[" in name:  # a width named after the parameter producing it: an embedding, a class token
        return "hidden"
    return "channels"


def first_line(error: Exception, width: int = 60) -> str:
    """The error's type and the first line of its message, cut to ``width`` characters."""
    line = f"{type(error).__name__}: {str(error).strip()}".splitlines()[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def nascli_convert(model: nn.Module, mode: str, x: torch.Tensor) -> tuple[float, Counter[str]]:
    """Seconds of the conversion and the number of searchable hparams per class."""
    start = time.perf_counter()
    converted = mtn.convert(model, mode, dummy_input=x)
    seconds = time.perf_counter() - start
    return seconds, Counter(hparam_class(name) for name in get_space(converted).hparams)


def logits(output: object) -> object:
    """Hugging Face models return a ModelOutput: Torch-Pruning traces back from its ``.logits``
    (through ``output_transform``); timm models return the logits tensor itself."""
    return getattr(output, "logits", output)


def tp_groups(model: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    """Seconds of building Torch-Pruning's dependency graph, and its number of prunable groups."""
    start = time.perf_counter()
    # (x,) rather than x: Torch-Pruning first calls model(*example_inputs), which would unpack a bare
    # tensor along its batch axis into one unbatched sample. verbose=False drops the warning that lists
    # parameters outside prunable layers (norm weights, position embeddings), pruned on their last axis.
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=(x,), output_transform=logits, verbose=False)
    seconds = time.perf_counter() - start
    groups = graph.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear])
    return seconds, len(list(groups))


def measure(key: str, spec: Spec) -> list[str]:
    torch.manual_seed(0)
    original = spec.build().eval()
    x = spec.dummy_input()
    row = [key, f"{sum(p.numel() for p in original.parameters()) / 1e6:.1f}"]
    try:
        seconds, fastnas = nascli_convert(copy.deepcopy(original), "fastnas", x)
        counts = [str(fastnas[c]) for c in ("heads", "channels", "hidden")]
        row += [f"{seconds:.2f}", *counts, str(fastnas.total())]
    except Exception as error:
        row += [first_line(error), "", "", "", ""]
    try:
        _, autonas = nascli_convert(copy.deepcopy(original), "autonas", x)
        row.append(f"{autonas.total()} ({autonas['depth']})")
    except Exception as error:
        row.append(first_line(error))
    try:
        fresh = copy.deepcopy(original)
        seconds, groups = tp_groups(fresh, spec.head(fresh), x)
        row += [f"{seconds:.2f}", str(groups)]
    except Exception as error:
        row += [first_line(error), ""]
    return row


def warm_up() -> None:
    """Pay both tools' one-off start-up costs (imports, first trace) on a tiny model, untimed."""
    tiny = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(1, 8)
    nascli_convert(copy.deepcopy(tiny), "fastnas", x)
    tp_groups(tiny, tiny[2], x)


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of: {', '.join(MODELS)}")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args()
    keys = [key.strip() for key in args.models.split(",") if key.strip()]
    unknown = [key for key in keys if key not in MODELS]
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(1)
    warm_up()
    rows = [measure(key, MODELS[key]) for key in keys]

    title = (
        f"Conversion: nascli fastnas/autonas against Torch-Pruning {version('torch-pruning')} dependency graph, "
        f"{torch.get_num_threads()} thread, torch {torch.__version__}"
    )
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=180).print(table)
    if args.markdown:
        print(f"\n{title}\n\n{markdown(rows)}")


if __name__ == "__main__":
    main()
