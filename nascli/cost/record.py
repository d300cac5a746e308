"""A search space as plain data: what pricing its subnets needs, without the model.

A checkpoint stores this record (``opt/checkpoint.py``), so ``nascli profile`` of a checkpoint
prices the min, centroid and max subnets from it alone: restoring a 1.1 B model only to read
its costs took 13 s, most of it ``torch.export`` tracing the model again (docs/benchmarks.md).
The record holds every listed attribute with its hparam's choices and active value, the
compiled cost terms, and what the summary prints; ``space_from_record`` rebuilds a
``SearchSpace`` that ``CostModel`` prices exactly as the converted model's own.
"""

from __future__ import annotations

from typing import Any

from nascli.cost.terms import CostTerm
from nascli.space.hparam import Hparam
from nascli.space.space import SearchSpace

RECORD_FORMAT = 1


def space_record(space: SearchSpace) -> dict[str, Any]:
    """The plain data (lists, dicts, numbers, strings) ``space_from_record`` rebuilds ``space`` from."""
    hparams: dict[str, Any] = {}
    for _, hp in space.entries:
        hparams.setdefault(hp.name, {"choices": list(hp.choices), "active": hp.active})
    return {
        "format": RECORD_FORMAT,
        "hparams": hparams,
        "entries": [[name, hp.name] for name, hp in space.entries],
        "entry_scales": dict(space.entry_scales),
        "terms": [
            [t.kind, t.coef, [list(f) for f in t.factors], [list(c) for c in t.conditions]] for t in space.cost_terms
        ],
        "unmodeled": list(space.cost_unmodeled),
        "modes": [[name, rules] for name, rules in space.modes],
        "input_shapes": [list(s) for s in space.input_shapes],
        "input_dtypes": list(space.input_dtypes),
        "block_ranks": {name: list(ranks) for name, ranks in space.block_ranks.items()},
    }


def space_from_record(record: dict[str, Any]) -> SearchSpace | None:
    """The search space a record describes, its hparams at their recorded values; None for a record
    of another format (an older checkpoint's, restored from its model instead)."""
    if record.get("format") != RECORD_FORMAT:
        return None
    hparams = {}
    for name, spec in record["hparams"].items():
        hp = Hparam(name, spec["choices"])
        hp.active = spec["active"]
        hparams[name] = hp
    terms = [
        CostTerm(kind, coef, tuple(tuple(f) for f in factors), tuple(tuple(c) for c in conditions))
        for kind, coef, factors, conditions in record["terms"]
    ]
    space = SearchSpace(
        [(entry, hparams[name]) for entry, name in record["entries"]],
        [(name, rules) for name, rules in record["modes"]],
        [tuple(s) for s in record["input_shapes"]],
        {},
        terms,
        list(record["unmodeled"]),
    )
    space.input_dtypes = list(record["input_dtypes"])
    space.entry_scales = dict(record["entry_scales"])
    space.block_ranks = {name: list(ranks) for name, ranks in record["block_ranks"].items()}
    return space
