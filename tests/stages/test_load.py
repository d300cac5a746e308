"""A stage takes only the checkpoints it can use: the right stage, finished, of the same model."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nascli.cli.app import app
from nascli.errors import UserInputError
from nascli.stages.load import load_stage_input
from tests.stages.common import RECIPE, as_stage, convert

runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert(tmp_path_factory.mktemp("load"))


@pytest.mark.parametrize(
    "command, stage, expected",
    [
        ("finetune", "convert", "nascli finetune takes search.pt"),
        ("export", "convert", "nascli export takes search.pt or finetune.pt"),
        ("export", "train", "nascli export takes search.pt or finetune.pt"),
        ("train", "search", "nascli train takes convert.pt or train.pt"),
    ],
)
def test_another_stages_checkpoint_is_refused_naming_the_expected_one(converted, tmp_path, command, stage, expected):
    path = as_stage(converted, tmp_path / f"{stage}.pt", stage)
    with pytest.raises(UserInputError, match=f"{stage}.pt: a {stage} checkpoint; {expected}$"):
        load_stage_input(path, [], command)


def test_a_recipe_is_refused_without_converting_it(tmp_path):
    with pytest.raises(UserInputError, match="digits.yaml: a recipe; nascli finetune takes search.pt"):
        load_stage_input(Path(RECIPE), [f"run_dir={tmp_path}"], "finetune")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["finetune", "export"])
def test_an_unfinished_search_is_refused(converted, tmp_path, command):
    path = as_stage(converted, tmp_path / "search.pt", "search", trainer={"iteration": 1})
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: search unfinished: nascli search --resume\n"


def test_resume_refuses_a_stale_checkpoint_of_another_model(tmp_path):
    given = convert(tmp_path / "run")
    other = convert(tmp_path / "other", "model.kwargs.width=16")
    as_stage(other, tmp_path / "run" / "train.pt", "train")
    result = runner.invoke(app, ["train", str(given), "--resume"])
    assert result.exit_code == 2, result.stdout
    assert result.stderr == (
        f"error: --resume: {tmp_path}/run/train.pt holds another model than the input (model, search space differ);"
        " remove it or give another run_dir\n"
    )


def test_resume_takes_the_checkpoint_of_the_same_model_with_other_settings(tmp_path):
    given = convert(tmp_path / "run", "train.epochs=3")
    as_stage(convert(tmp_path / "other", "train.epochs=9", "seed=5"), tmp_path / "run" / "train.pt", "train")
    result = runner.invoke(app, ["-q", "train", str(given), "--resume", "--json"])
    assert result.exit_code == 0, result.stderr
    assert '"finished": true' in result.stdout
