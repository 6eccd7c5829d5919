"""The AI-KD student: an FR backbone plus a quality head, returning (embedding, quality).

Parameter names match the reference release (``feature_extractor.*``,
``quality_head.l1.*``, ``quality_head.l2.*``) so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from aikd.models.registry import create_model


class QualityHead(nn.Module):
    """512 -> 1024 -> GELU -> 1."""

    def __init__(self, embedding_dim: int = 512, hidden: int = 1024):
        super().__init__()
        self.l1 = nn.Linear(embedding_dim, hidden)
        self.act = nn.GELU()
        self.l2 = nn.Linear(hidden, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(embedding))).squeeze(-1)


class Student(nn.Module):
    def __init__(self, feature_extractor: nn.Module, embedding_dim: int = 512):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.quality_head = QualityHead(embedding_dim)

    @property
    def input_size(self) -> int:
        return self.feature_extractor.input_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.feature_extractor(x)
        return embedding, self.quality_head(embedding)


def create_student(backbone: str, **overrides) -> Student:
    model = create_model(backbone, **overrides)
    return Student(model, embedding_dim=model.fc.out_features)
