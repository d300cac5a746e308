"""The flow of ModelOpt's FastNAS pruning notebook (examples/pruning/cifar_resnet.ipynb), with
only its imports switched, on random CIFAR-shaped data and a ResNet-20 small enough for seconds."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models.resnet import BasicBlock

import nascli.opt as mto  # was: import modelopt.torch.opt as mto
import nascli.prune as mtp  # was: import modelopt.torch.prune as mtp


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class CifarResNet(nn.Module):
    """The notebook's ResNet-20 layout: 3 stages of BasicBlocks, zero-padded strided shortcuts."""

    def __init__(self, num_blocks=3, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            self._stage(16, num_blocks, 1),
            self._stage(32, num_blocks, 2),
            self._stage(64, num_blocks, 2),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(64, num_classes),
        )

    def _stage(self, planes, num_blocks, stride):
        blocks = []
        for s in [stride] + [1] * (num_blocks - 1):
            shortcut = None
            if s != 1 or self.in_planes != planes:
                pad = planes // 4
                shortcut = LambdaLayer(lambda x, pad=pad: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad)))
            blocks.append(BasicBlock(self.in_planes, planes, s, shortcut))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        return self.layers(x)


def loaders():
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    return DataLoader(TensorDataset(x, y), batch_size=16), DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    correct = total = 0
    for imgs, labels in loader:
        correct += (model(imgs).argmax(1) == labels).sum().item()
        total += len(labels)
    return 100 * correct / total


def train_one_epoch(model, loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for imgs, labels in loader:
        loss = F.cross_entropy(model(imgs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_notebook_flow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_loader, val_loader = loaders()
    torch.save(CifarResNet().state_dict(), "resnet20.pth")

    def resnet20(ckpt=None):
        model = CifarResNet()
        if ckpt is not None:
            model.load_state_dict(torch.load(ckpt))
        return model

    config = mtp.fastnas.FastNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 16
    config["nn.BatchNorm2d"]["*"]["feature_divisor"] = 16
    dummy_input = torch.randn(1, 3, 32, 32)

    def score_func(model):
        return evaluate(model, val_loader)

    original_params = sum(p.numel() for p in resnet20().parameters())
    pruned_model, _ = mtp.prune(
        model=resnet20(ckpt="resnet20.pth"),
        mode=[("fastnas", config)],
        constraints={"flops": 30e6},  # the notebook's 60e6 in ModelOpt's flops (2 per multiply-accumulate)
        dummy_input=dummy_input,
        config={
            "data_loader": train_loader,
            "score_func": score_func,
            "checkpoint": "modelopt_seaarch_checkpoint_fastnas.pth",
        },
    )
    assert sum(p.numel() for p in pruned_model.parameters()) < original_params
    mto.save(pruned_model, "modelopt_pruned_model_fastnas.pth")
    accuracy = evaluate(pruned_model, val_loader)

    pruned_model = mto.restore(resnet20(), "modelopt_pruned_model_fastnas.pth")
    assert evaluate(pruned_model, val_loader) == accuracy

    train_one_epoch(pruned_model, train_loader)
    mto.save(pruned_model, "modelopt_pruned_model_fastnas_finetuned.pth")
    optimized_model = mto.restore(resnet20(), "modelopt_pruned_model_fastnas_finetuned.pth")
    x = torch.randn(4, 3, 32, 32)
    pruned_model.eval()
    assert torch.allclose(optimized_model.eval()(x), pruned_model(x))
