"""A checkpoint never makes nascli call code its user did not sign or name again."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.errors import CheckpointError
from nascli.models import small_cnn
from nascli.opt.checkpoint import write_checkpoint
from nascli.opt.trust import KEY_FILE

ROOT = Path(__file__).resolve().parents[2]


def _nascli(*args):
    return subprocess.run([sys.executable, "-m", "nascli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trust")
    done = _nascli("-q", "convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={run_dir}", "model.kwargs.width=8")
    assert done.returncode == 0, done.stderr
    return run_dir / "convert.pt"


def _forged(source: Path, tmp_path: Path, **recipe_changes) -> tuple[Path, Path]:
    """``source`` with its recipe pointing at os:system, which would create the returned marker file."""
    marker = tmp_path / "code-ran"
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["recipe"]["model"] = {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    checkpoint["model"] = checkpoint["recipe"]["model"]
    for key, value in recipe_changes.items():
        checkpoint["recipe"][key].update(value)
    path = tmp_path / "forged.pt"
    write_checkpoint(checkpoint, path)  # a forger recomputes the checksum
    return path, marker


@pytest.mark.parametrize("stage", ["train", "profile", "search", "finetune", "export"])
def test_a_forged_factory_is_never_called_by_a_stage(converted, tmp_path, stage):
    path, marker = _forged(converted, tmp_path)
    done = _nascli(stage, str(path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "not written by this user on this machine" in done.stderr
    assert "model.factory=os:system with kwargs {'command':" in done.stderr
    assert done.stdout == ""
    assert not marker.exists()


def test_a_forged_factory_is_never_called_by_restore(converted, tmp_path):
    path, marker = _forged(converted, tmp_path)
    with pytest.raises(CheckpointError, match=r"will not call .*os:system.*nascli.opt.restore\(factory, path\)"):
        mto.restore(None, path)
    assert not marker.exists()


def test_a_forged_score_function_is_refused_and_naming_it_again_trusts_it(converted, tmp_path):
    checkpoint = torch.load(converted, weights_only=True)
    checkpoint["recipe"]["search"]["score_func"] = "os:system"
    path = tmp_path / "score.pt"
    write_checkpoint(checkpoint, path)  # a forger recomputes the checksum
    done = _nascli("profile", str(path))
    assert done.returncode == 2 and "search.score_func=os:system" in done.stderr
    # the signature covers all the code a checkpoint names: once broken, every piece must be named
    trusted = ["model.factory=nascli.models:resnet20", "search.score_func=os:getcwd"]
    assert _nascli("-q", "profile", str(path), trusted[0]).returncode == 2
    assert _nascli("-q", "profile", str(path), *trusted).returncode == 0


def test_own_checkpoints_load_and_another_users_need_the_factory_named(converted, tmp_path, monkeypatch):
    assert _nascli("-q", "profile", str(converted)).returncode == 0
    assert mto.restore(None, converted) is not None
    monkeypatch.setenv("NASCLI_CONFIG_DIR", str(tmp_path / "another-user"))
    done = _nascli("profile", str(converted))
    assert done.returncode == 2 and "model.factory=nascli.models:resnet20 with kwargs" in done.stderr
    assert _nascli("-q", "profile", str(converted), "model.factory=nascli.models:resnet20").returncode == 0
    with pytest.raises(CheckpointError, match="not written by this user"):
        mto.restore(None, converted)


def test_the_key_is_private_and_python_saves_restore_with_their_model(tmp_path):
    model = mtn.convert(small_cnn(), dummy_input=torch.randn(1, 1, 8, 8))
    path = mto.save(model, tmp_path / "space.pt")
    key = Path(os.environ["NASCLI_CONFIG_DIR"]) / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    assert mtn.get_subnet_config(mto.restore(small_cnn, path)) == mtn.get_subnet_config(model)


def test_a_key_another_process_makes_first_is_the_one_used(tmp_path, monkeypatch):
    """Two torchrun ranks signing their first checkpoint at once must end with one key."""
    from nascli.opt import trust

    monkeypatch.setenv("NASCLI_CONFIG_DIR", str(tmp_path))
    theirs = bytes(range(32))
    link = os.link

    def another_process_first(source, target):
        Path(target).write_text(theirs.hex())
        return link(source, target)

    monkeypatch.setattr(os, "link", another_process_first)
    references = {"model.factory": "nascli.models:resnet20", "model.kwargs": {}, "search.score_func": None}
    assert trust.sign(references) == trust._digest(theirs, references)
    assert trust.is_signed_here(references, trust.sign(references))
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]
