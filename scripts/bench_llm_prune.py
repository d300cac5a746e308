"""Prune a pretrained tiny Llama and distill it back, against the same architecture trained from scratch.

Needs the teacher of recipes/tiny_llama.yaml (about 15 minutes on 2 cores):

    nascli convert recipes/tiny_llama.yaml | nascli train
    python scripts/bench_llm_prune.py runs/tiny_llama/train.pt --markdown

In one run, with torch's default threads (run it alone):

1. timings: the activation-importance pass over the recipe's calibration samples, scoring one
   candidate (perplexity on 32 validation sequences), and a distillation step against a plain
   training step of the student with the teacher in float32 and in bfloat16 autocast;
2. perplexity right after pruning to the same subnet, for channels ranked by activations, by
   weight norms, and kept in their trained order (which says nothing of importance, so it is a
   random ranking);
3. width-only (searched under the params bound, per layer or uniform: one width per role in
   every layer, what a Hugging Face config holds), depth-only (the last blocks dropped, or the
   blocks whose absence costs least, ranked by the score without each) and width and depth
   searched together, at the same bound, each distilled for the same tokens;
4. the claim: at the same parameter count and training tokens, the pruned model distilled from
   the teacher against the pruned architecture initialized afresh and trained on the labels, per
   seed. Both use nascli's fine-tuning trainer; from scratch takes the recipe's pretraining
   learning rate, distillation its fine-tuning one and the recipe's teacher precision.

Test perplexity is measured on the first ``--test-sequences`` windows of the test split.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Subset

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.model import cost_model
from nascli.data import Splits, recipe_splits
from nascli.opt.checkpoint import read_checkpoint
from nascli.recipe.load import load_recipe
from nascli.recipe.schema import Recipe
from nascli.space.importance import rank_blocks, sort_channels_by_importance
from nascli.space.space import get_space
from nascli.train.sandwich import distillation_loss
from nascli.train.task import LanguageModeling
from nascli.train.trainer import SubnetTrainer

warnings.filterwarnings("ignore")


def _ppl(model: torch.nn.Module, task: LanguageModeling, loader: DataLoader) -> float:
    return task.evaluate(model, loader)["ppl"]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _train(student, splits, recipe, steps, seed, teacher=None, lr=None):
    """Train ``student`` for ``steps`` batches with nascli's fine-tuning trainer; returns (seconds, tokens)."""
    batch = recipe.data.batch_size
    train = Subset(splits.train, range(steps * batch))
    limited = Splits(train, splits.val, splits.test, splits.num_classes, splits.input_shape, splits.task)
    spec = recipe.train.model_copy(update={"epochs": 1, "lr": lr or recipe.train.lr, "warmup_epochs": 0.05})
    data = recipe.data.model_copy(update={"eval_batch_size": 64})
    mix = {"temperature": recipe.finetune.temperature, "distill_weight": recipe.finetune.distill_weight,
           "teacher_autocast": torch.bfloat16 if recipe.finetune.teacher_bf16 else None}  # fmt: skip
    trainer = SubnetTrainer(student, limited, data, spec, seed, teacher=teacher, **mix)
    trainer.val = DataLoader(Subset(splits.val, range(64)), batch_size=64)  # a short per-epoch check
    start = time.perf_counter()
    trainer.fit(lambda state: None, lambda record: None)
    return time.perf_counter() - start, steps * batch * splits.input_shape[0]


def _reinitialized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same architecture with the initialization a fresh model of its class gets."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        fresh._init_weights(module)
        if type(module).__name__.endswith("RMSNorm"):
            module.weight.data.fill_(1.0)
    changed = any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters(), strict=True))
    assert changed, "re-initialization left the weights as they were"
    return fresh


def _step_time(student, teacher, batch, task, distill: bool, teacher_dtype=None, repeats: int = 10) -> float:
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    inputs, targets = batch
    times = []
    for index in range(repeats + 2):
        start = time.perf_counter()
        opt.zero_grad()
        logits = student(inputs).logits
        if distill:
            with torch.no_grad(), torch.autocast("cpu", dtype=teacher_dtype, enabled=teacher_dtype is not None):
                soft = teacher(inputs).logits
            loss = distillation_loss(logits, soft)
        else:
            loss = task.loss(logits, targets)
        loss.backward()
        opt.step()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="train.pt of recipes/tiny_llama.yaml")
    parser.add_argument("--recipe", default="recipes/tiny_llama.yaml", help="whose finetune settings distill")
    parser.add_argument("--params", default="50%")
    parser.add_argument("--steps", type=int, default=300, help="training batches per student")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--test-sequences", type=int, default=512)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    console = Console()
    recipe = Recipe(**read_checkpoint(args.teacher)["recipe"])  # the data and model the teacher learned
    recipe = recipe.model_copy(update={"finetune": load_recipe(args.recipe).finetune})
    splits = recipe_splits(recipe)
    task = LanguageModeling(splits.num_classes)
    val32 = DataLoader(Subset(splits.val, range(32)), batch_size=32)
    test = DataLoader(Subset(splits.test, range(args.test_sequences)), batch_size=64)
    calib = DataLoader(Subset(splits.train, range(recipe.search.importance_samples)), batch_size=32)
    dummy = (torch.zeros(1, recipe.input_shape[0], dtype=torch.long),)

    teacher = mto.restore(None, args.teacher)
    mtn.sample(teacher, "max")
    teacher.eval()
    plain_teacher = mtn.export(teacher).eval()
    rows_t: list[tuple[str, str, str]] = []

    # 1. importance and scoring times, the search
    ranked = copy.deepcopy(teacher)
    start = time.perf_counter()
    sort_channels_by_importance(ranked, ((x,) for x, _ in calib))
    sorted_teacher = copy.deepcopy(ranked)
    rows_t.append(
        ("importance pass", f"{time.perf_counter() - start:.1f} s", f"{len(calib.dataset)} sequences, ≤ 30 s")
    )
    by_weights = copy.deepcopy(teacher)
    sort_channels_by_importance(by_weights)

    def score(model: torch.nn.Module) -> float:
        return -_ppl(model, task, val32)

    start = time.perf_counter()
    for how in ("min", "centroid", "max"):
        mtn.sample(ranked, how)
        score(ranked)
    rows_t.append(("score one candidate", f"{(time.perf_counter() - start) / 3:.2f} s", "32 sequences, ≤ 2 s"))
    searched, _ = mtn.search(
        ranked, {"params": args.params}, dummy,
        {"data_loader": calib, "score_func": score, "algorithm": "sensitivity", "max_iter_data_loader": 1},
    )  # fmt: skip
    config = mtn.get_subnet_config(searched)

    # 2. right after pruning
    rows_p = []
    for name, model in (("activations", searched), ("weight norms", by_weights), ("trained order", teacher)):
        pruned = copy.deepcopy(model)
        mtn.select(pruned, config)
        rows_p.append((name, f"{_params(mtn.export(pruned)):,}", f"{_ppl(pruned, task, test):.2f}"))
    student = mtn.export(searched).eval()
    batch = next(iter(DataLoader(splits.train, batch_size=recipe.data.batch_size)))
    plain_step = _step_time(copy.deepcopy(student), plain_teacher, batch, task, distill=False)
    for dtype in (None, torch.bfloat16):
        distill_step = _step_time(copy.deepcopy(student), plain_teacher, batch, task, True, dtype)
        name = f"distillation step / plain step, teacher in {'bfloat16' if dtype else 'float32'}"
        note = f"{distill_step:.2f} s vs {plain_step:.2f} s, ≤ 1.6x"
        rows_t.append((name, f"{distill_step / plain_step:.2f}x", note))

    # 3. width, depth, combined at the same bound, each distilled for the same tokens
    rules = {**mtn.config.FastNASConfig(), "nn.ModuleList": {"*": {"min_depth": 1}}}
    deep = mtn.convert(copy.deepcopy(plain_teacher), [("fastnas", rules)], dummy_input=dummy)
    sort_channels_by_importance(deep, ((x,) for x, _ in calib))
    depth_name = next(n for n in mtn.get_subnet_config(deep, configurable=True) if n.endswith(".depth"))
    costs, bound = cost_model(deep), cost_model(deep).cost()["params"] * float(args.params.rstrip("%")) / 100
    choices = get_space(deep).hparams[depth_name].choices
    layers = max(d for d in choices if costs.cost({**costs.named("max"), depth_name: d})["params"] <= bound)
    trailing = copy.deepcopy(deep)
    mtn.select(trailing, {depth_name: layers})
    rank_blocks(deep, score)  # Minitron's depth importance: the score without each block
    ranked = copy.deepcopy(deep)
    mtn.select(ranked, {depth_name: layers})
    combined, _ = mtn.search(
        copy.deepcopy(deep), {"params": args.params}, dummy,
        {"data_loader": calib, "score_func": score, "algorithm": "sensitivity", "max_iter_data_loader": 1},
    )  # fmt: skip
    combined_depth = mtn.get_subnet_config(combined)[depth_name]
    uniform, _ = mtn.search(
        sorted_teacher, {"params": args.params}, dummy,
        {"data_loader": calib, "score_func": score, "algorithm": "sensitivity", "max_iter_data_loader": 1,
         "uniform": True},
    )  # fmt: skip
    rows_w = []
    variants = [
        ("width only, per layer", searched),
        ("width only, uniform (one width per role)", uniform),
        (f"depth only, last blocks dropped ({layers} layers)", trailing),
        (f"depth only, ranked blocks dropped ({layers} layers)", ranked),
        (f"width and depth searched ({combined_depth} layers)", combined),
    ]
    for name, model in variants:
        pruned = mtn.export(model).eval()
        before = _ppl(pruned, task, test)
        seconds, _ = _train(pruned, splits, recipe, args.steps, args.seeds[0], plain_teacher, recipe.finetune.lr)
        after = _ppl(pruned, task, test)
        rows_w.append((name, f"{_params(pruned):,}", f"{before:.2f}", f"{after:.2f}", f"{seconds:.0f} s"))

    # 4. the claim
    rows_c = []
    for seed in args.seeds:
        distilled = mtn.export(searched).eval()
        d_seconds, tokens = _train(distilled, splits, recipe, args.steps, seed, plain_teacher, recipe.finetune.lr)
        scratch = _reinitialized(mtn.export(searched), seed)
        s_seconds, _ = _train(scratch, splits, recipe, args.steps, seed, None, recipe.train.lr)
        rows_c.append((str(seed), f"{_params(distilled):,}", f"{tokens:,}", f"{_ppl(distilled, task, test):.2f}",
                       f"{d_seconds:.0f} s", f"{_ppl(scratch, task, test):.2f}", f"{s_seconds:.0f} s"))  # fmt: skip

    teacher_ppl = _ppl(plain_teacher, task, test)
    header = f"teacher: {_params(plain_teacher):,} params, test perplexity {teacher_ppl:.2f}; torch {torch.__version__}"
    tables = [
        ("Targets", ["measure", "value", "note"], rows_t),
        ("Right after pruning (same subnet)", ["ranking", "params", "test ppl"], rows_p),
        ("Width, depth, combined (distilled)", ["subnet", "params", "ppl pruned", "ppl distilled", "time"], rows_w),
        ("Prune + distill vs from scratch",
         ["seed", "params", "tokens", "distilled ppl", "time", "scratch ppl", "time"], rows_c),
    ]  # fmt: skip
    console.print(header)
    for title, columns, rows in tables:
        if args.markdown:
            print(f"\n{title}\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            table = Table(*columns, title=title)
            for row in rows:
                table.add_row(*row)
            console.print(table)


if __name__ == "__main__":
    main()
