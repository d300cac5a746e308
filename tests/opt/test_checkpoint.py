import errno
import fractions
import os

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.errors import CheckpointError, NasCliError
from nascli.models import resnet20, small_cnn
from nascli.opt.checkpoint import FORMAT, read_checkpoint, write_checkpoint

X = torch.randn(2, 1, 8, 8)


def _factory():
    return resnet20(in_channels=1, width=64)


@pytest.fixture
def saved(tmp_path):
    model = mtn.convert(_factory(), dummy_input=X[:1])
    mtn.sample(model, "random")
    path = mto.save(model, tmp_path / "space.pt")
    return model.eval(), path


def test_restore_gives_the_same_subnet_and_output(saved):
    model, path = saved
    restored = mto.restore(_factory, path).eval()
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    torch.testing.assert_close(restored(X), model(X), rtol=0, atol=0)


def test_checkpoint_holds_plain_data_and_loads_weights_only(saved, tmp_path):
    model, path = saved
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format"] == FORMAT and checkpoint["stage"] == "convert"
    assert checkpoint["modes"][0][0] == "autonas"
    # mtn.sample leaves drawing in train mode on (as in ModelOpt): no pinned subnet, the sampled one is active
    assert checkpoint["subnet"] is None
    assert {k: v["active"] for k, v in checkpoint["space"].items()} == mtn.get_subnet_config(model, configurable=True)
    mtn.random_sampling(model, enabled=False)
    pinned = torch.load(mto.save(model, tmp_path / "pinned.pt"), weights_only=True)
    assert pinned["subnet"] == {k: v["active"] for k, v in pinned["space"].items()}


def test_a_plain_model_saves_and_restores(tmp_path):
    model = small_cnn().eval()
    path = mto.save(model, tmp_path / "plain.pt")
    restored = mto.restore(small_cnn, path).eval()
    torch.testing.assert_close(restored(X), model(X))


def test_a_different_model_is_refused_with_what_differs(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="does not match the model.*hparams"):
        mto.restore(lambda: resnet20(in_channels=1, width=32), path)
    with pytest.raises(CheckpointError, match=r"fc.weight \[10, 256\] vs model \[7, 256\]"):
        mto.restore(lambda: resnet20(num_classes=7, in_channels=1, width=64), path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty or truncated"),
        (b"not a checkpoint", "damaged or not written by torch.save"),
    ],
)
def test_damaged_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        mto.restore(_factory, path)


def test_truncated_file_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        read_checkpoint(cut)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"format": FORMAT, "model": _factory()}, path)
    with pytest.raises(CheckpointError, match="holds a pickled object"):
        read_checkpoint(path)


def test_other_files_and_missing_keys_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a nascli checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    torch.save({"format": FORMAT, "stage": "convert"}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing nascli_version, model"):
        read_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.pt")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_checkpoint({"format": FORMAT, "n": 1}, tmp_path / "c.pt")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint({"format": FORMAT, "n": 2}, path)
    assert torch.load(path, weights_only=True)["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_restore_into_a_converted_model_is_refused(saved):
    model, path = saved
    with pytest.raises(CheckpointError, match="needs the original model"):
        mto.restore(model, path)


def test_a_flipped_byte_in_tensor_data_is_refused(saved, tmp_path):
    model, path = saved
    data = bytearray(path.read_bytes())
    weights = model.state_dict()["fc.weight"].numpy().tobytes()
    at = data.find(weights[:64])
    assert at > 0
    data[at + 5] ^= 0x01
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.pt: damaged checkpoint"):
        read_checkpoint(flipped)


def test_an_unknown_stage_is_refused(saved, tmp_path):
    _, path = saved
    checkpoint = read_checkpoint(path)
    bogus = write_checkpoint({**checkpoint, "stage": "bogus"}, tmp_path / "bogus.pt")
    with pytest.raises(CheckpointError, match="bogus.pt: damaged checkpoint, unknown stage 'bogus'"):
        read_checkpoint(bogus)


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_checkpoint({"format": FORMAT}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_checkpoint({"format": FORMAT, "n": 1}, tmp_path / "c.pt")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(NasCliError, match=f"^no space left on device while writing {path}: free space") as caught:
        write_checkpoint({"format": FORMAT, "n": 2}, path)
    assert caught.value.exit_code == 1
    assert torch.load(path, weights_only=True)["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    "payload, name", [(fractions.Fraction(1, 3), "fractions.Fraction"), (_Payload(), f"{os.system.__module__}.system")]
)
def test_a_pickled_object_is_named_without_torchs_advice(tmp_path, payload, name):
    path = tmp_path / "object.pt"
    torch.save({"format": FORMAT, "x": payload}, path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert f"holds a pickled object of type {name};" in message
    assert "weights_only" not in message and "\n" not in message


def test_a_checkpoint_without_a_checksum_asks_for_the_stage_again(saved, tmp_path):
    _, path = saved
    old = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "checksum"}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="old.pt: written by a nascli without checksums; run the stage"):
        read_checkpoint(tmp_path / "old.pt")


def test_save_restore_take_modelopts_names_and_torch_arguments(tmp_path):
    import inspect

    assert list(inspect.signature(mto.save).parameters) == ["model", "f", "kwargs"]
    assert list(inspect.signature(mto.restore).parameters) == ["model", "f", "kwargs"]
    assert list(inspect.signature(mto.load_modelopt_state).parameters) == ["modelopt_state_path", "kwargs"]
    model = mtn.convert(_factory(), dummy_input=X[:1])
    path = tmp_path / "m.pt"
    mto.save(model=model, f=path, pickle_protocol=2)
    restored = mto.restore(model=_factory(), f=path, map_location="cpu", weights_only=True)
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    with pytest.raises(NasCliError, match="weights_only must be True"):
        mto.restore(_factory(), path, weights_only=False)
    with pytest.raises(NasCliError, match="pickle_protocol"):
        mto.save(model, tmp_path / "n.pt", pickle_protocol=4)
    torch.save(mto.modelopt_state(model), tmp_path / "state.pt")
    state = mto.load_modelopt_state(modelopt_state_path=tmp_path / "state.pt", map_location="cpu")
    assert state == mto.modelopt_state(model)
    with pytest.raises(NasCliError, match="weights_only must be True"):
        mto.load_modelopt_state(tmp_path / "state.pt", weights_only=False)
    assert issubclass(mtn.ExportNASModeDescriptor, mto.ModeDescriptor)
