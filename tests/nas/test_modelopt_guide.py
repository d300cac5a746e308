"""The code of ModelOpt's NAS guide, with only its two imports changed."""

import io
from contextlib import redirect_stdout

import pytest

import nascli.nas as mtn  # was: import modelopt.torch.nas as mtn
import nascli.opt as mto  # was: import modelopt.torch.opt as mto


@pytest.mark.slow
def test_guide_convert_save_restore_and_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from torchvision.models import resnet50

    # User-defined model
    model = resnet50()

    # Generate the search space for AutoNAS
    model = mtn.convert(model, mode="autonas")

    # Save the search space for future use
    mto.save(model, "modelopt_model.pth")

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        mtn.print_search_space_summary(model)
    summary = buffer.getvalue()
    assert "* conv1.out_channels" in summary
    assert "  layer4.2.conv3.out_channels" in summary
    assert "Number of configurable hparams: 40" in summary
    assert "Total size of the search space: 1.90e+18" in summary

    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)  # include more channel choices
    model_or_model_factory = resnet50
    bigger = mtn.convert(model_or_model_factory, mode=[("autonas", config)])
    assert 32 in dict(mtn.sample(bigger, min)).values()

    # Provide the model before conversion to mto.restore
    restored = mto.restore(model_or_model_factory, "modelopt_model.pth")
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)

    # The pruning guide's conversion
    pruned_space = mtn.convert(resnet50(), mode="fastnas")
    assert mtn.get_subnet_config(pruned_space, configurable=True)
