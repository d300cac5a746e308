"""Evaluate flops and params of subnet configs from the compiled cost terms, many at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from nascli.space.space import SearchSpace, get_space

METRICS = ("flops", "params")
_TERMS = ("flops", "params", "kv_cache")  # kinds of compiled terms; memory is derived from the last two
_CHUNK = 512
BYTES_PER_VALUE = 2  # memory counts bf16 weights and cache entries


class CostModel:
    """Exact flops and params of any subnet, as arrays over a batch of configs.

    A config batch is an int64 matrix with one column per configurable hparam (in the order of
    ``names``); a categorical hparam's column holds the index of its choice. Evaluation is a
    handful of numpy gathers and products over the terms, so the search can check constraints
    for millions of candidates without running the model.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.memory_batch = 1  # sequences whose KV cache the memory metric holds
        self.names = list(space.hparams)
        self._codes = {
            name: {choice: i for i, choice in enumerate(hp.choices)}
            for name, hp in space.hparams.items()
            if hp.is_categorical
        }
        index = {name: i + 1 for i, name in enumerate(self.names)}  # column 0 holds ones
        self._tables = {}
        for kind in _TERMS:
            terms = [t for t in space.cost_terms if t.kind == kind]
            width = max([len(t.factors) for t in terms] + [1])
            depth = max([len(t.conditions) for t in terms] + [1])
            columns = np.zeros((len(terms), width), dtype=np.int64)
            powers = np.zeros((len(terms), width), dtype=np.int64)
            cond_columns = np.zeros((len(terms), depth), dtype=np.int64)
            cond_index = np.full((len(terms), depth), -1, dtype=np.int64)  # ones > -1: always active
            for row, term in enumerate(terms):
                for j, (name, power) in enumerate(term.factors):
                    columns[row, j], powers[row, j] = index[name], power
                for j, (name, block) in enumerate(term.conditions):
                    cond_columns[row, j], cond_index[row, j] = index[name], space.block_rank(name, block)
            coefs = np.array([t.coef for t in terms], dtype=np.int64)
            self._tables[kind] = (coefs, columns, powers, cond_columns, cond_index)

    @property
    def hparams(self) -> dict[str, Any]:
        """The configurable hparams by name, in column order."""
        return self.space.hparams

    def encode(self, configs: list[dict[str, Any]] | dict[str, Any]) -> np.ndarray:
        """Configs (dicts of hparam name -> value; missing names take the active value) as a matrix."""
        if isinstance(configs, dict):
            configs = [configs]
        active = self.space.config()
        rows = [[self._code(n, c.get(n, active[n])) for n in self.names] for c in configs]
        return np.array(rows, dtype=np.int64).reshape(len(configs), len(self.names))

    def _code(self, name: str, value: Any) -> Any:
        return self._codes[name][value] if name in self._codes else value

    def column_values(self, name: str) -> np.ndarray:
        """What a config matrix may hold in ``name``'s column: its choices, or their indices."""
        hp = self.space.hparams[name]
        return np.arange(len(hp.choices)) if hp.is_categorical else np.array(hp.choices, dtype=np.int64)

    def config_of(self, row: Any) -> dict[str, Any]:
        """The config of one matrix row (categorical indices back to their choices)."""
        hps = self.space.hparams
        return {n: hps[n].choices[int(v)] if n in self._codes else int(v) for n, v in zip(self.names, row, strict=True)}

    def evaluate(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """{"flops", "params", "kv_cache", "memory": int64[B]} for a (B, n_hparams) config matrix.

        ``kv_cache`` counts the key and value entries the attentions cache per sequence at the
        traced length; ``memory`` is the bytes of bf16 weights plus the cache of ``memory_batch``
        sequences.
        """
        if matrix.shape[0] > _CHUNK:  # keep the (rows, terms, factors) temporaries in cache
            parts = [self.evaluate(matrix[i : i + _CHUNK]) for i in range(0, matrix.shape[0], _CHUNK)]
            return {kind: np.concatenate([p[kind] for p in parts]) for kind in parts[0]}
        values = np.concatenate([np.ones((matrix.shape[0], 1), dtype=np.int64), matrix], axis=1)
        found = {}
        for kind, (coefs, columns, powers, cond_columns, cond_index) in self._tables.items():
            factors = values[:, columns] ** powers  # (B, T, width)
            total = coefs * factors.prod(axis=2)
            active = (values[:, cond_columns] > cond_index).all(axis=2)
            found[kind] = (total * active).sum(axis=1)
        found["memory"] = BYTES_PER_VALUE * (found["params"] + self.memory_batch * found["kv_cache"])
        return found

    @property
    def has_kv_cache(self) -> bool:
        """Whether the model has attention whose keys and values a generation would cache."""
        return any(t.kind == "kv_cache" for t in self.space.cost_terms)

    def cost(self, config: dict[str, Any] | None = None, metrics: tuple[str, ...] = METRICS) -> dict[str, int]:
        """flops and params (or other ``metrics``) of one config (the active subnet by default)."""
        result = self.evaluate(self.encode(config or {}))
        return {kind: int(result[kind][0]) for kind in metrics}

    def named(self, which: str) -> dict[str, Any]:
        """The config of the "min", "centroid" or "max" subnet."""
        return {name: getattr(hp, which) for name, hp in self.space.hparams.items()}


def cost_model(model: nn.Module) -> CostModel:
    """The cost model of a converted model (built once and kept with its search space)."""
    space = get_space(model)
    if getattr(space, "_cost_model", None) is None:
        space._cost_model = CostModel(space)
    return space._cost_model
