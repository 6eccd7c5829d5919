"""Margin heads for FR training (CosFace, ArcFace), by name.

Each head holds one centre per training class; the CR-FIQA teacher later reads those
centres, so they are saved with the backbone.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from aikd.errors import ComponentError


class MarginHead(nn.Module, abc.ABC):
    """Normalised-softmax head: logits = s * margin(cos(embedding, centre))."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.35):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim).normal_(0.0, 0.01))
        self.scale, self.margin = scale, margin

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embedding), F.normalize(self.weight)).clamp(-1.0, 1.0)

    @abc.abstractmethod
    def apply_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        """The target class's logit before scaling, given its cosine."""

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embedding)
        target = cos.gather(1, labels[:, None])
        cos = cos.scatter(1, labels[:, None], self.apply_margin(target))
        return F.cross_entropy(cos * self.scale, labels)


class CosFace(MarginHead):
    """cos(theta) - m (Wang et al. 2018); arcface_torch's default m = 0.35 at s = 64."""

    def apply_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.margin


class ArcFace(MarginHead):
    """cos(theta + m) (Deng et al. 2019), with the usual fallback past theta + m > pi."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__(embedding_dim, num_classes, scale, margin)

    def apply_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        theta = torch.acos(cos_target.clamp(-1 + 1e-7, 1 - 1e-7))
        with_margin = torch.cos(theta + self.margin)
        # past pi - m the angle would wrap around: use a linear penalty instead (arcface's "easy margin" off)
        fallback = cos_target - math.sin(math.pi - self.margin) * self.margin
        return torch.where(theta + self.margin < math.pi, with_margin, fallback)


HEADS = {"cosface": CosFace, "arcface": ArcFace}


def list_heads() -> list[str]:
    return sorted(HEADS)


def head_class(name: str) -> type[MarginHead]:
    if name not in HEADS:
        raise ComponentError(f"unknown margin head {name!r}; valid: {', '.join(list_heads())}")
    return HEADS[name]


def create_head(name: str, embedding_dim: int, num_classes: int, **overrides) -> MarginHead:
    """A head on the backbone's embeddings (its ModelInfo.embedding_dim); overrides that are None are dropped."""
    return head_class(name)(embedding_dim, num_classes, **{k: v for k, v in overrides.items() if v is not None})
