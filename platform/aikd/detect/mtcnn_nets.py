"""MTCNN's three networks (P-, R- and O-Net) and their weights.

The weights are the three state dicts that the MIT-licensed ``facenet-pytorch==2.6.0``
wheel ships (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, converted from the original
Caffe models). That wheel pins an old torch, so it is installed without its
dependencies (``pip install --no-deps facenet-pytorch==2.6.0``) and never imported: the
files are found through the package metadata and checked against their SHA-256.
Layer names follow those files. R- and O-Net flatten their feature maps width-first
(the Caffe layout the weights were converted from), hence the permute before the dense
layers.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from aikd.errors import ComponentError

WHEEL = "facenet-pytorch==2.6.0"
SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
INSTALL = f"pip install --no-deps {WHEEL}"


class PNet(nn.Module):
    """Proposal net: fully convolutional over a whole pyramid level; per 12x12 cell a face probability and
    a box correction."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not a face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box correction

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refine net: 24x24 crops of the proposals; a face probability and a box correction each."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net: 48x48 crops; a face probability, a box correction and the 5 landmarks each."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # x1..x5 then y1..y5, as shares of the box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


def weights_file(net: str) -> Path:
    """The installed file of ``net``'s weights, checked; a one-line error says what to install."""
    try:
        dist = metadata.distribution("facenet-pytorch")
    except metadata.PackageNotFoundError:
        raise ComponentError(f"the mtcnn detector's weights are not installed: {INSTALL}") from None
    path = Path(dist.locate_file(f"facenet_pytorch/data/{net}.pt"))
    if not path.is_file():
        raise ComponentError(f"{path} is missing from facenet-pytorch {dist.version}: {INSTALL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[net]:
        raise ComponentError(f"{path} is not the file of {WHEEL} (SHA-256 {digest[:12]}...): {INSTALL}")
    return path


def load_nets(device: torch.device) -> tuple[PNet, RNet, ONet]:
    """The three networks with their weights, in eval mode on ``device``."""
    nets = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}
    for name, net in nets.items():
        net.load_state_dict(torch.load(weights_file(name), map_location="cpu", weights_only=True))
        net.to(device).eval().requires_grad_(False)
    return nets["pnet"], nets["rnet"], nets["onet"]
