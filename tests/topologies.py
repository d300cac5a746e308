"""Small models, one per topology the tracer must handle."""

import torch
from torch import nn


class Residual(nn.Module):
    """conv -> two residual blocks: the stem and both blocks' outputs share one channel group."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.a1 = nn.Conv2d(64, 64, 3, padding=1)
        self.a2 = nn.Conv2d(64, 64, 3, padding=1)
        self.b1 = nn.Conv2d(64, 64, 3, padding=1)
        self.b2 = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.a2(torch.relu(self.a1(x)))
        x = x + self.b2(torch.relu(self.b1(x)))
        return self.head(x)


class SqueezeExcite(nn.Module):
    """A gate multiplied into the features ties the gate's out-channels to the gated tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.reduce = nn.Conv2d(64, 32, 1)
        self.expand = nn.Conv2d(32, 64, 1)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        x = self.conv(x)
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return self.head(x * gate)


class Depthwise(nn.Module):
    """A depthwise conv ties its input and output channels."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 64, 1)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.pw2 = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.pw2(self.dw(self.pw1(x)))


class Grouped(nn.Module):
    """A grouped conv (4 groups of 16) keeps its per-group width; choices stay multiples of 16."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 64, 1)
        self.gc = nn.Conv2d(64, 64, 3, padding=1, groups=4)
        self.pw2 = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.pw2(self.gc(self.pw1(x)))


class SharedModule(nn.Module):
    """One conv applied twice: its input channels are tied to both producers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 1)
        self.b = nn.Conv2d(3, 64, 1)
        self.shared = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.head(self.shared(self.a(x)) + self.shared(self.b(x)))


class Concat(nn.Module):
    """Concatenation is not mapped yet: the channels it touches stay fixed, the rest is searchable."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 1)
        self.b = nn.Conv2d(3, 64, 1)
        self.mid = nn.Conv2d(128, 64, 1)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.head(self.mid(torch.cat([self.a(x), self.b(x)], dim=1)))


class MLP(nn.Module):
    """Flatten -> linear layers: hidden features searchable, input and output features fixed."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 128)
        self.bn = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 96)
        self.fc3 = nn.Linear(96, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.bn(self.fc1(x))))))


class Conv1dNet(nn.Module):
    """Conv1d and Conv3d use the same dynamic code as Conv2d."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 64, 5, padding=2)
        self.bn = nn.BatchNorm1d(64)
        self.c2 = nn.Conv1d(64, 8, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c1(x))))


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv3d(2, 64, 3, padding=1)
        self.bn = nn.BatchNorm3d(64)
        self.c2 = nn.Conv3d(64, 4, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c1(x))))


class DataDependent(nn.Module):
    """A block whose forward branches on tensor values: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return -self.conv(x)


class Untraceable(nn.Module):
    """Searchable convs around an untraceable block: only the block's channels are frozen."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 1)
        self.block = DataDependent()
        self.mid = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.head(self.mid(self.block(self.stem(x))))


class DenseBlock(nn.Module):
    """DenseNet-style: each layer reads the concatenation of all earlier features, normalized first."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(64)
        self.conv1 = nn.Conv2d(64, 64, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(192, 10, 1)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.conv1(torch.relu(self.norm1(x)))], 1)
        x = torch.cat([x, self.conv2(torch.relu(self.norm2(x)))], 1)
        return self.conv3(x)


class SelfConcat(nn.Module):
    """A tensor concatenated with itself: both halves of the consumer follow one hparam."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 1)
        self.b = nn.Conv2d(128, 10, 1)

    def forward(self, x):
        y = self.a(x)
        return self.b(torch.cat((y, y), dim=1))


class ChannelSplit(nn.Module):
    """Splitting the channels (as ShuffleNet does) is not mapped: those channels stay fixed."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 1)
        self.b = nn.Conv2d(32, 64, 3, padding=1)
        self.c = nn.Conv2d(64, 64, 1)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        left, right = self.a(x).chunk(2, dim=1)
        return self.head(self.c(self.b(left) + right.repeat(1, 2, 1, 1)))
