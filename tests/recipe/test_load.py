import pytest

from nascli.errors import UserInputError
from nascli.recipe.load import apply_overrides, load_recipe, parse_overrides

GOOD = """
model:
  factory: nascli.models:resnet20
  kwargs: {in_channels: 1}
input_shape: [1, 8, 8]
"""


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_and_run_dir(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.mode == "autonas" and recipe.run_dir == "runs/r" and recipe.seed == 0


def test_overrides_are_yaml_values_at_dotted_paths(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD), ["model.kwargs.width=32", "mode=fastnas", "input_shape=[1, 16, 16]"])
    assert recipe.model.kwargs == {"in_channels": 1, "width": 32}
    assert recipe.mode == "fastnas" and recipe.input_shape == [1, 16, 16]


def test_override_syntax_errors():
    with pytest.raises(UserInputError, match="expected key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(UserInputError, match="a.b is not a mapping"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "epochz: 3\n", r"epochz: unknown key"),
        (GOOD.replace("[1, 8, 8]", "eight"), r"input_shape: .*list"),
        (GOOD + "mode: gradnas\n", r"mode: Input should be 'autonas' or 'fastnas'"),
        (GOOD.replace("resnet20", "resnet21"), r"model.factory: module 'nascli.models' has no attribute 'resnet21'"),
        (GOOD.replace("nascli.models", "nosuch.module"), r"model.factory: cannot import module 'nosuch.module'"),
        ("model: [\n", r"invalid YAML at line 2"),
        ("- 1\n", r"a recipe must be a mapping"),
        ("input_shape: [1]\n", r"model: required key is missing"),
        (GOOD + "rules: {nn.Conv2d: {'*': {channel_divisor: -1}}}\n", r"rules.nn.Conv2d.\*.channel_divisor"),
    ],
)
def test_bad_recipes_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(UserInputError, match=r"r\.yaml: .*" + message):
        load_recipe(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name", ["digits.yaml", "resnet50.yaml", "fashion_mnist.yaml"])
def test_shipped_recipes_validate(name):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / name)
    assert recipe.model.factory and recipe.run_dir.startswith("runs/")


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "input_shape: [1, 16, 16]\n", r"invalid YAML at line 6, column 1: duplicate key 'input_shape'"),
        (
            GOOD.replace("{in_channels: 1}", "{in_channels: 1, in_channels: 3}"),
            r"invalid YAML at line 4, column \d+: duplicate key 'in_channels'",
        ),
    ],
)
def test_duplicate_keys_are_refused_with_their_line(tmp_path, text, message):
    with pytest.raises(UserInputError, match=r"r\.yaml: " + message):
        load_recipe(_write(tmp_path, text))


def test_a_duplicate_key_in_an_override_value_is_refused():
    with pytest.raises(UserInputError, match="model.kwargs=.*duplicate key 'width'"):
        parse_overrides(["model.kwargs={width: 8, width: 16}"])
