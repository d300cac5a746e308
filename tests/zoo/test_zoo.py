"""The model-zoo conformance suite: every model converts, every subnet exports exactly and costs exactly.

For each model and mode: the converted model at max computes the original output; at min,
centroid and five random subnets the exported model holds only native layers, computes the
converted model's output, and its fvcore flops and parameter count equal the analytic cost
model's; save -> restore from the factory gives the same output. The number of hparams found is
printed beside the model's name.
"""

import functools

import pytest
import torch
import torchvision

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.cost.model import cost_model
from tests.helpers import assert_export_matches

tv = torchvision.models
# name: (factory, input side, slow)
ZOO = {
    "resnet18": (tv.resnet18, 64, False),
    "resnet50": (tv.resnet50, 64, True),
    "resnext50_32x4d": (tv.resnext50_32x4d, 64, True),
    "wide_resnet50_2": (tv.wide_resnet50_2, 64, True),
    "mobilenet_v2": (tv.mobilenet_v2, 64, False),
    "mobilenet_v3_large": (tv.mobilenet_v3_large, 64, False),
    "efficientnet_b0": (tv.efficientnet_b0, 64, True),
    "regnet_y_400mf": (tv.regnet_y_400mf, 64, True),
    "vgg11_bn": (tv.vgg11_bn, 32, True),
    "densenet121": (tv.densenet121, 64, True),
    "googlenet": (functools.partial(tv.googlenet, aux_logits=True, init_weights=False), 64, True),
    "squeezenet1_1": (tv.squeezenet1_1, 64, False),
    "shufflenet_v2_x1_0": (tv.shufflenet_v2_x1_0, 64, False),
    "mnasnet1_0": (tv.mnasnet1_0, 64, True),
    "convnext_tiny": (tv.convnext_tiny, 64, True),
    "vit_b_16": (functools.partial(tv.vit_b_16, image_size=32), 32, True),
}
CASES = [
    pytest.param(name, mode, marks=[pytest.mark.slow] if slow else [], id=f"{name}-{mode}")
    for name, (_, _, slow) in ZOO.items()
    for mode in ("autonas", "fastnas")
]


@pytest.mark.parametrize("name, mode", CASES)
@torch.no_grad()
def test_zoo_model(name, mode, tmp_path, capsys):
    factory, size, _ = ZOO[name]
    x = torch.randn(2, 3, size, size)
    model = factory().eval()
    reference = model(x)

    mtn.convert(model, mode, dummy_input=x[:1])
    model.eval()
    torch.testing.assert_close(model(x), reference, atol=0, rtol=0)
    hparams = mtn.get_subnet_config(model, configurable=True)
    assert hparams
    with capsys.disabled():
        print(f"\n  {name} {mode}: {len(hparams)} hparams", end="")

    costs = cost_model(model)
    for how in ("min", "centroid", *["random"] * 5):
        exported = assert_export_matches(model, x, how)
        analytic = costs.cost()
        assert analytic["params"] == count_params(exported), how
        assert analytic["flops"] == fvcore_flops(exported, (x[:1],)), how

    mto.save(model, tmp_path / "model.pt")
    restored = mto.restore(factory, tmp_path / "model.pt").eval()
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    torch.testing.assert_close(restored(x), model(x), atol=0, rtol=0)
