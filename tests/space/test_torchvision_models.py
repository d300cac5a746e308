"""The foundation's model suite: convert, every kind of subnet, export and restore."""

import pytest
import torch
import torchvision

import nascli.nas as mtn
import nascli.opt as mto
from tests.helpers import assert_export_matches, n_params

MODELS = {
    "resnet18": (torchvision.models.resnet18, 64, False),
    "resnet50": (torchvision.models.resnet50, 64, True),
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, 64, True),
    "wide_resnet50_2": (torchvision.models.wide_resnet50_2, 64, True),
    "vgg11_bn": (torchvision.models.vgg11_bn, 32, True),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 64, False),
}
CASES = [
    pytest.param(name, mode, marks=[pytest.mark.slow] if slow else [], id=f"{name}-{mode}")
    for name, (_, _, slow) in MODELS.items()
    for mode in ("autonas", "fastnas")
]


@pytest.mark.parametrize("name, mode", CASES)
@torch.no_grad()
def test_model(name, mode, tmp_path, capsys):
    factory, size, _ = MODELS[name]
    x = torch.randn(2, 3, size, size)
    model = factory().eval()
    reference = model(x)
    full_params = n_params(model)

    mtn.convert(model, mode, dummy_input=x[:1])
    model.eval()
    torch.testing.assert_close(model(x), reference, atol=0, rtol=0)
    hparams = mtn.get_subnet_config(model, configurable=True)
    assert hparams
    with capsys.disabled():
        print(f"\n  {name} {mode}: {len(hparams)} hparams", end="")

    smallest = assert_export_matches(model, x, "min")
    assert n_params(smallest) < full_params
    assert_export_matches(model, x, "centroid")
    for _ in range(5):
        assert_export_matches(model, x, "random")

    mto.save(model, tmp_path / "model.pt")
    restored = mto.restore(factory, tmp_path / "model.pt").eval()
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    torch.testing.assert_close(restored(x), model(x), atol=0, rtol=0)
