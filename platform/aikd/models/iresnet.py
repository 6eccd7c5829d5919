"""IResNet, written from its structure so insightface arcface_torch weights load unchanged.

Layout and parameter names follow arcface_torch's ``iresnet.py``: stem conv1/bn1/prelu;
layer1..layer4 of IBasicBlock (bn1, conv1, bn2, prelu, conv2 carrying the stride, bn3,
and downsample.0/.1 on each stage's first block); head bn2 -> flatten -> dropout -> fc
-> features (BatchNorm1d with a frozen unit scale). No conv biases; BN eps 1e-5.

Small variants (fewer blocks, a width multiplier, a smaller input) keep the same names
and exist for CPU work: the embedded default and the tests.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from aikd.models.registry import ModelInfo, register_model

BN_EPS = 1e-5
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}
BASE_WIDTHS = (64, 128, 256, 512)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    def __init__(self, layers=(3, 4, 14, 3), widths=BASE_WIDTHS, num_features: int = 512,
                 input_size: int = 112, dropout: float = 0.0):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 (four stride-2 stages), got {input_size}")
        self.input_size = input_size
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0], eps=BN_EPS)
        self.prelu = nn.PReLU(widths[0])
        cin = widths[0]
        for i, (blocks, width) in enumerate(zip(layers, widths, strict=True), start=1):
            stage = [IBasicBlock(cin, width, stride=2)] + [IBasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        side = input_size // 16
        self.fc = nn.Linear(cin * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # arcface_torch keeps the embedding BN's scale fixed at 1
        self.features.weight.requires_grad = False

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything up to (and including) the flatten before dropout: shared by SER-FIQ passes."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.bn2(x), 1)

    def head(self, flat: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc(self.dropout(flat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _register(info: ModelInfo, layers: tuple[int, int, int, int], width: float = 1.0):
    """One entrypoint per variant. Its size defaults are its ModelInfo's, so the entry's metadata is what it
    builds; the arguments are named (no ``**kw``) so the registry can list and check them."""

    def entry(width: float = width, input_size: int = info.input_size, num_features: int = info.embedding_dim,
              dropout: float = 0.0) -> IResNet:
        widths = tuple(max(int(round(w * width)), 4) for w in BASE_WIDTHS)
        return IResNet(layers, widths, num_features=num_features, input_size=input_size, dropout=dropout)

    entry.__name__ = entry.__qualname__ = info.name
    return register_model(info)(entry)


for _depth, _layers in DEPTHS.items():
    _register(ModelInfo(f"iresnet{_depth}", description=f"arcface_torch IResNet-{_depth}"), _layers)

iresnet_tiny = _register(
    ModelInfo("iresnet_tiny", input_size=64,
              description="one block per stage, widths 16/32/64/128: CPU tests and the default"),
    (1, 1, 1, 1), width=0.25)
iresnet_small = _register(
    ModelInfo("iresnet_small", input_size=64, description="blocks 1/2/2/1, widths 32/64/128/256: a stronger CPU model"),
    (1, 2, 2, 1), width=0.5)
