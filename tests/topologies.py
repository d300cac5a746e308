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


class Decoder(nn.Module):
    """U-Net-style: a strided conv down, transposed convs up (one depthwise), a skip concatenation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.down = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1)
        self.refine = nn.ConvTranspose2d(64, 64, 3, padding=1, groups=64)
        self.head = nn.Conv2d(128, 10, 1)

    def forward(self, x):
        skip = torch.relu(self.stem(x))
        y = self.refine(self.up(torch.relu(self.down(skip))))
        return self.head(torch.cat([skip, y], 1))


class GroupAndInstanceNorm(nn.Module):
    """Group norm (3 groups, so channel choices stay multiples of 3) and instance norm with running stats."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 48, 3, padding=1)
        self.gn = nn.GroupNorm(3, 48)
        self.c2 = nn.Conv2d(48, 64, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(64, affine=True, track_running_stats=True)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.head(torch.relu(self.inorm(self.c2(torch.relu(self.gn(self.c1(x)))))))


class ChannelsLastBlock(nn.Module):
    """ConvNeXt-style: depthwise conv, permute to channels-last, layer norm and an MLP, permute back, add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 1)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.norm = nn.LayerNorm(64)
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 64)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(nn.functional.gelu(self.fc1(y))).permute(0, 3, 1, 2)
        return self.head(x + y)


class TokenMixer(nn.Module):
    """Tokens of (batch, tokens, features): layer norms, a feature MLP and a token-mixing conv after a transpose."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 64)
        self.norm1 = nn.LayerNorm(64)
        self.mix = nn.Conv1d(64, 64, 3, padding=1)
        self.norm2 = nn.LayerNorm(64)
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.mix(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.fc2(torch.relu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


class AttentionBlock(TokenMixer):
    """A pre-norm transformer block on (batch, tokens, features): heads and MLP width searchable."""

    def __init__(self):
        super().__init__()
        del self.mix
        self.attn = nn.MultiheadAttention(64, 8, batch_first=True)

    def forward(self, x):
        x = self.embed(x)
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.fc2(torch.relu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


class MaskedAttention(nn.Module):
    """Sequence-first attention with a padding mask and a causal mask, its weights returned and dropped."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 64)
        self.attn = nn.MultiheadAttention(64, 4)
        self.head = nn.Linear(64, 10)
        self.register_buffer("causal", torch.ones(6, 6, dtype=torch.bool).triu(1))

    def forward(self, x, padding):
        x = self.embed(x)
        out, _ = self.attn(x, x, x, key_padding_mask=padding, attn_mask=self.causal)
        return self.head(out + x)


class Activations(nn.Module):
    """Activation modules whose function can be searched (a ReLU module called twice, a Hardswish)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 64, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(64, 64, 3, padding=1)
        self.gate = nn.Hardswish()
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.head(self.gate(self.act(self.c2(self.act(self.c1(x))))))


class FlattenHead(nn.Module):
    """VGG-style: feature maps flattened into a linear layer (one branch concatenated, one viewed)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 64, 3, padding=1)
        self.bn = nn.BatchNorm2d(64)
        self.b = nn.Conv2d(3, 32, 3, padding=1)
        self.fc1 = nn.Linear(96 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.cat([torch.relu(self.bn(self.a(x))), self.b(x)], 1), 2)
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


class SyncNorm(nn.Module):
    """A model prepared for multi-GPU training: its batch norms are SyncBatchNorm."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn = nn.SyncBatchNorm(64)
        self.c2 = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c1(x))))


class GatedUnit(nn.Module):
    """A gated linear unit: one conv's output chunked in two halves, one gating the other."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 128, 3, padding=1)
        self.bn = nn.BatchNorm2d(128)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        value, gate = self.bn(self.conv(x)).chunk(2, dim=1)
        return self.head(value * torch.sigmoid(gate))
