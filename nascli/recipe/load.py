"""Read a recipe file, apply ``key=value`` overrides and validate it, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nascli.errors import UserInputError
from nascli.recipe.factory import import_factory
from nascli.recipe.schema import Recipe
from nascli.space.rules import validate_rules


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently, so ``epochs: 90`` hidden further down a recipe
    would win over the ``epochs: 3`` the user is looking at.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """``a.b=3`` -> (["a", "b"], 3); the value is read as YAML, so ``[1, 2]`` is a list."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserInputError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise UserInputError(f"override {item!r}: value is not valid YAML ({exc.problem})") from exc
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for path, value in parse_overrides(overrides):
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:  # an absent or unset section (finetune.lora: null) takes its defaults
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise UserInputError(f"override {'.'.join(path)}: {where} is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    return f"{where}: {error['msg']} (got {error['input']!r})"


def validate_recipe(data: Any, source: str) -> Recipe:
    """Validate recipe data; also checks the rules and that the model factory imports."""
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from exc
    try:
        recipe.rules = validate_rules(recipe.rules)
        import_factory(recipe.model.factory)
    except UserInputError as exc:
        raise UserInputError(f"{source}: {exc}") from exc
    return recipe


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML data of a recipe file; a missing, undecodable or invalid file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such recipe file")
    try:
        return safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise UserInputError(f"{path}: not UTF-8 text (byte {byte:#04x} at offset {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"{path}: invalid YAML{where}: {problem}") from exc


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """The validated recipe of a YAML file with overrides applied; run_dir defaults to runs/<stem>."""
    data = read_yaml(path)
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [])
    recipe = validate_recipe(data, str(path))
    if recipe.run_dir is None:
        recipe.run_dir = str(Path("runs") / Path(path).stem)
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
