"""AutoNAS against prune + distill on the pretrained tiny Llama, at the same bound and training tokens.

Needs the teacher of recipes/tiny_llama.yaml (``nascli convert recipes/tiny_llama.yaml | nascli
train``), then, alone on the machine:

    python scripts/bench_llm_autonas.py runs/tiny_llama/train.pt --markdown

Both start from the teacher's weights and see the same ``--steps`` batches:

- **AutoNAS**: the teacher converted in autonas mode (widths 0.5 / 0.67 / 1.0 of each layer, the
  recipe's hidden-width and depth rules), its supernet trained by nascli's sandwich rule (max
  subnet on the labels, min and 2 random subnets distilled from it in place), then an
  evolutionary search under the params bound scored by validation perplexity;
- **prune + distill**: the recipe's way: activation importance, blocks ranked by the score
  without each, a (uniform) sensitivity search under the same bound, the subnet distilled from
  the teacher.

Each sandwich step runs four subnets forward and backward, so AutoNAS spends about four times the
compute on the same tokens. Test perplexity is on the first ``--test-sequences`` test windows.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from llm_bench import limited, load_teacher, params, ppl, print_tables, train_subnet

import nascli.nas as mtn
from nascli.space.importance import rank_blocks, sort_channels_by_importance
from nascli.train.trainer import SupernetTrainer

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="train.pt of recipes/tiny_llama.yaml")
    parser.add_argument("--recipe", default="recipes/tiny_llama.yaml", help="whose finetune settings distill")
    parser.add_argument("--params", default="50%")
    parser.add_argument("--steps", type=int, default=300, help="training batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--test-sequences", type=int, default=512)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    teacher = load_teacher(args.teacher, args.recipe, args.test_sequences)
    recipe, task = teacher.recipe, teacher.task

    def score(model: torch.nn.Module) -> float:
        return -ppl(model, task, teacher.val32)

    # prune + distill
    start = time.perf_counter()
    pruned = mtn.convert(copy.deepcopy(teacher.model), [("fastnas", recipe.rules)], dummy_input=teacher.dummy)
    sort_channels_by_importance(pruned, ((x,) for x, _ in teacher.calib))
    rank_blocks(pruned, score)  # as the search stage does
    pruned, _ = mtn.search_select(
        pruned, {"params": args.params}, teacher.dummy,
        {"score_func": score, "algorithm": "sensitivity", "uniform": recipe.search.uniform},
    )  # fmt: skip
    search_seconds = time.perf_counter() - start
    student = mtn.export_copy(pruned).eval()
    after_pruning = ppl(student, task, teacher.test)
    seconds, tokens = train_subnet(student, teacher, args.steps, args.seed, True, recipe.finetune.lr)
    rows = [("prune + distill", f"{params(student):,}", f"{tokens:,}", f"{after_pruning:.2f}",
             f"{ppl(student, task, teacher.test):.2f}", f"{search_seconds:.0f} s", f"{seconds:.0f} s")]  # fmt: skip

    # AutoNAS: sandwich training of the supernet, then evolution
    rules = {**mtn.config.AutoNASConfig(), **recipe.rules}
    supernet = mtn.convert(copy.deepcopy(teacher.model), [("autonas", rules)], dummy_input=teacher.dummy)
    spec = recipe.train.model_copy(
        update={"epochs": 1, "lr": recipe.finetune.lr, "warmup_epochs": 0.05, "plain": False, "sandwich": True}
    )
    trainer = SupernetTrainer(supernet, limited(teacher, args.steps), recipe.data, spec, args.seed)
    trainer.val = teacher.val32
    start = time.perf_counter()
    trainer.fit(lambda state: None, lambda record: None)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    searched, history = mtn.search_select(
        supernet, {"params": args.params}, teacher.dummy,
        {"score_func": score, "algorithm": "evolve", "population": args.population, "iterations": args.iterations,
         "seed": args.seed},
    )  # fmt: skip
    search_seconds = time.perf_counter() - start
    found = mtn.export_copy(searched).eval()
    found_ppl = ppl(found, task, teacher.test)
    rows.append(("AutoNAS (sandwich supernet, evolution)", f"{params(found):,}", f"{tokens:,}", "—",
                 f"{found_ppl:.2f}", f"{search_seconds:.0f} s ({len(history['candidates'])} scored)",
                 f"{train_seconds:.0f} s"))  # fmt: skip

    header = (
        f"teacher: {params(teacher.model):,} params, test perplexity {ppl(teacher.model, task, teacher.test):.2f};"
        f" bound params <= {args.params}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    columns = ["method", "params", "training tokens", "ppl after search", "test ppl", "search", "training"]
    print_tables(header, [("AutoNAS against prune + distill", columns, rows)], args.markdown)


if __name__ == "__main__":
    main()
