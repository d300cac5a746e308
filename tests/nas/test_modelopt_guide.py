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


def test_guide_profile_search_and_restore(tmp_path, monkeypatch):
    """The guide's profile, search, save and restore steps, on resnet18 with a tiny search."""
    monkeypatch.chdir(tmp_path)
    import torch
    from torchvision.models import resnet18

    model = mtn.convert(resnet18(num_classes=10), mode="autonas")
    constraints = {"flops": 1.0e9}
    dummy_input = torch.randn(1, 3, 224, 224)
    is_sat, search_space_stats = mtn.profile(model, dummy_input, constraints=constraints, verbose=False)
    assert is_sat and search_space_stats["max"]["flops"] > 1.0e9

    images = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))) for _ in range(2)]

    @torch.no_grad()
    def score_func(model):
        return -float(sum(model(x).square().mean() for x, _ in images))

    searched_model, search_history = mtn.search(
        model,
        constraints,
        dummy_input,
        config={
            "checkpoint": "modelopt_search_checkpoint.pth",
            "data_loader": images,
            "score_func": score_func,
            "num_iters": 2,
            "population_size": 6,
            "candidate_size": 2,
        },
    )
    assert search_history["best"]["flops"] <= 1.0e9
    assert searched_model is model and not mtn.is_dynamic(searched_model)  # exported in place, as in ModelOpt
    assert sum(p.numel() for p in searched_model.parameters()) == search_history["best"]["params"]
    shapes = {name: tensor.shape for name, tensor in searched_model.state_dict().items()}
    mto.save(searched_model, "modelopt_searched_model.pth")
    restored = mto.restore(resnet18(num_classes=10), "modelopt_searched_model.pth")
    assert {name: tensor.shape for name, tensor in restored.state_dict().items()} == shapes
    from_search = mto.restore(resnet18(num_classes=10), "modelopt_search_checkpoint.pth")
    assert {name: tensor.shape for name, tensor in from_search.state_dict().items()} == shapes
