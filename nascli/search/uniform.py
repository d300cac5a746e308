"""Uniform search: the hparams of one role in every block of a stack take one value together.

A per-layer search lets each transformer block keep its own MLP width and head count. A Hugging
Face config holds one value for all layers, so such a subnet cannot be written as a directory
``from_pretrained`` loads; Minitron prunes every layer alike for the same reason. ``search.uniform``
searches roles instead of hparams: ``model.layers.*.mlp.gate_proj.out_features`` stands for that
width in every block. The searches walk a cost model over roles (this one): their rows, and so the
rows an unfinished search stores, are of roles, while the configs they score and select, and
the candidates they report, name every hparam.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from nascli.cost.model import METRICS, CostModel
from nascli.space.hparam import Hparam

_BLOCK_INDEX = re.compile(r"(?:^|(?<=\.))\d+(?=\.)")


def role_of(name: str) -> str:
    """An hparam's name with its block indices replaced by ``*``: the same role in every block.

    Every index into a container counts as a block index (a ``ModuleList`` of decoder layers, a
    ``Sequential`` of ViT blocks or of a CNN's layers); hparams of one role are tied only when
    their choices are the same.
    """
    return _BLOCK_INDEX.sub("*", name)


class UniformCosts:
    """A cost model whose columns are roles: one per role shared by hparams with the same choices.

    Hparams whose role has members with other choices (the blocks of a CNN whose widths grow)
    keep a column each, under their own names; ``untied`` lists those roles. Rows and configs in
    role names expand to every member; ``config_of`` gives the expanded config, so candidates and
    the selected subnet name the model's own hparams.
    """

    def __init__(self, costs: CostModel) -> None:
        self.base = costs
        hparams = costs.space.hparams
        members: dict[str, list[str]] = {}
        for name in costs.names:
            members.setdefault(role_of(name), []).append(name)
        self.members: dict[str, list[str]] = {}
        self.untied: list[str] = []
        for role, names in members.items():
            if len(names) > 1 and len({tuple(hparams[n].choices) for n in names}) == 1:
                self.members[role] = names
            else:
                self.members.update({name: [name] for name in names})
                self.untied += [role] if len(names) > 1 else []
        self.names = list(self.members)
        self.hparams: dict[str, Hparam] = {role: hparams[names[0]] for role, names in self.members.items()}
        column = {role: i for i, role in enumerate(self.names)}
        owner = {name: role for role, names in self.members.items() for name in names}
        self._expand = np.array([column[owner[name]] for name in costs.names], dtype=np.int64)

    @property
    def space(self) -> Any:
        return self.base.space

    @property
    def memory_batch(self) -> int:
        return self.base.memory_batch

    def _value(self, role: str, config: dict[str, Any], active: dict[str, Any]) -> Any:
        """The role's value in ``config``, given by the role's name or by its members' (all alike),
        else the members' active value (all alike)."""
        members = self.members[role]
        given = {config[n] for n in members if n in config}
        if role in config:
            given.add(config[role])
        if not given:
            given = {active[n] for n in members}
        if len(given) > 1:
            raise ValueError(f"{role}: a uniform config needs one value for its members, got {sorted(given)}")
        return given.pop()

    def encode(self, configs: list[dict[str, Any]] | dict[str, Any]) -> np.ndarray:
        """Configs in role or hparam names (missing ones take the active value) as a matrix of roles."""
        if isinstance(configs, dict):
            configs = [configs]
        active = self.space.config()
        rows = [[self.base._code(self.members[r][0], self._value(r, c, active)) for r in self.names] for c in configs]
        return np.array(rows, dtype=np.int64).reshape(len(configs), len(self.names))

    def column_values(self, role: str) -> np.ndarray:
        return self.base.column_values(self.members[role][0])

    def expand(self, matrix: np.ndarray) -> np.ndarray:
        """A (rows, roles) matrix as rows of the model's hparams."""
        return np.asarray(matrix, dtype=np.int64)[:, self._expand]

    def config_of(self, row: Any) -> dict[str, Any]:
        """The config of one role row, naming every hparam of the model."""
        return self.base.config_of(self.expand(np.array([row]))[0])

    def evaluate(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        return self.base.evaluate(self.expand(matrix))

    def cost(self, config: dict[str, Any] | None = None, metrics: tuple[str, ...] = METRICS) -> dict[str, int]:
        result = self.evaluate(self.encode(config or {}))
        return {kind: int(result[kind][0]) for kind in metrics}

    def named(self, which: str) -> dict[str, Any]:
        """The "min", "centroid" or "max" choice of every role."""
        return {role: getattr(hp, which) for role, hp in self.hparams.items()}
