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
from llm_bench import load_teacher, params, ppl, print_tables, train_subnet
from torch.utils.data import DataLoader

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.space.importance import rank_blocks, sort_channels_by_importance
from nascli.space.space import get_space
from nascli.train.sandwich import distillation_loss

warnings.filterwarnings("ignore")


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
    loaded = load_teacher(args.teacher, args.recipe, args.test_sequences)
    recipe, splits, task, plain_teacher = loaded.recipe, loaded.splits, loaded.task, loaded.model
    val32, test, calib, dummy = loaded.val32, loaded.test, loaded.calib, loaded.dummy
    # width alone: the recipe's rules without its depth rule, channels in their trained order
    width_rules = {**mtn.config.FastNASConfig(), **{k: v for k, v in recipe.rules.items() if k != "nn.ModuleList"}}
    teacher = mtn.convert(copy.deepcopy(plain_teacher), [("fastnas", width_rules)], dummy_input=dummy).eval()
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
        return -ppl(model, task, val32)

    start = time.perf_counter()
    for how in ("min", "centroid", "max"):
        mtn.sample(ranked, how)
        score(ranked)
    rows_t.append(("score one candidate", f"{(time.perf_counter() - start) / 3:.2f} s", "32 sequences, ≤ 2 s"))
    searched, _ = mtn.search_select(
        ranked, {"params": args.params}, dummy,
        {"data_loader": calib, "score_func": score, "algorithm": "sensitivity", "max_iter_data_loader": 1},
    )  # fmt: skip
    config = mtn.get_subnet_config(searched)

    # 2. right after pruning
    rows_p = []
    for name, model in (("activations", searched), ("weight norms", by_weights), ("trained order", teacher)):
        pruned = copy.deepcopy(model)
        mtn.select(pruned, config)
        rows_p.append((name, f"{params(mtn.export_copy(pruned)):,}", f"{ppl(pruned, task, test):.2f}"))
    student = mtn.export_copy(searched).eval()
    batch = next(iter(DataLoader(splits.train, batch_size=recipe.data.batch_size)))
    plain_step = _step_time(copy.deepcopy(student), plain_teacher, batch, task, distill=False)
    for dtype in (None, torch.bfloat16):
        distill_step = _step_time(copy.deepcopy(student), plain_teacher, batch, task, True, dtype)
        name = f"distillation step / plain step, teacher in {'bfloat16' if dtype else 'float32'}"
        note = f"{distill_step:.2f} s vs {plain_step:.2f} s, ≤ 1.6x"
        rows_t.append((name, f"{distill_step / plain_step:.2f}x", note))

    # 3. width, depth, combined at the same bound, each distilled for the same tokens
    rules = {**width_rules, "nn.ModuleList": {"*": {"min_depth": 1}}}
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
    combined, _ = mtn.search_select(
        copy.deepcopy(deep), {"params": args.params}, dummy,
        {"data_loader": calib, "score_func": score, "algorithm": "sensitivity", "max_iter_data_loader": 1},
    )  # fmt: skip
    combined_depth = mtn.get_subnet_config(combined)[depth_name]
    uniform, _ = mtn.search_select(
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
        pruned = mtn.export_copy(model).eval()
        before = ppl(pruned, task, test)
        seconds, _ = train_subnet(pruned, loaded, args.steps, args.seeds[0], True, recipe.finetune.lr)
        after = ppl(pruned, task, test)
        rows_w.append((name, f"{params(pruned):,}", f"{before:.2f}", f"{after:.2f}", f"{seconds:.0f} s"))

    # 4. the claim
    rows_c = []
    for seed in args.seeds:
        distilled = mtn.export_copy(searched).eval()
        d_seconds, tokens = train_subnet(distilled, loaded, args.steps, seed, True, recipe.finetune.lr)
        scratch = _reinitialized(mtn.export_copy(searched), seed)
        s_seconds, _ = train_subnet(scratch, loaded, args.steps, seed, False, recipe.train.lr)
        rows_c.append((str(seed), f"{params(distilled):,}", f"{tokens:,}", f"{ppl(distilled, task, test):.2f}",
                       f"{d_seconds:.0f} s", f"{ppl(scratch, task, test):.2f}", f"{s_seconds:.0f} s"))  # fmt: skip

    teacher_ppl = ppl(plain_teacher, task, test)
    header = f"teacher: {params(plain_teacher):,} params, test perplexity {teacher_ppl:.2f}; torch {torch.__version__}"
    tables = [
        ("Targets", ["measure", "value", "note"], rows_t),
        ("Right after pruning (same subnet)", ["ranking", "params", "test ppl"], rows_p),
        ("Width, depth, combined (distilled)", ["subnet", "params", "ppl pruned", "ppl distilled", "time"], rows_w),
        ("Prune + distill vs from scratch",
         ["seed", "params", "tokens", "distilled ppl", "time", "scratch ppl", "time"], rows_c),
    ]  # fmt: skip
    print_tables(header, tables, args.markdown)


if __name__ == "__main__":
    main()
