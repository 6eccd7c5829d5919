import math

import pytest
import torch

from aikd.config import ObjectiveConfig
from aikd.distill.objective import aikd_loss


def test_loss_equals_a_hand_computation():
    e_mis = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    e_al = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    q = torch.tensor([0.2, 1.0])
    y = torch.tensor([0.0, 2.0])
    # consistency: 1 - cos: (1 - 1/sqrt(2)) and (1 - 1), mean
    consistency = ((1 - 1 / math.sqrt(2)) + 0.0) / 2
    # smooth L1, beta 0.5: |d| < beta -> 0.5 d^2 / beta ; else |d| - 0.5 beta
    quality = ((0.5 * 0.2**2 / 0.5) + (1.0 - 0.25)) / 2
    total, parts = aikd_loss(e_mis, e_al, q, y, ObjectiveConfig())
    assert total.item() == pytest.approx(consistency + quality, rel=1e-6)
    assert parts == pytest.approx({"consistency": consistency, "quality": quality}, rel=1e-6)
    weighted, _ = aikd_loss(e_mis, e_al, q, y, ObjectiveConfig(consistency_weight=2.0, quality_weight=0.5))
    assert weighted.item() == pytest.approx(2 * consistency + 0.5 * quality, rel=1e-6)


def test_the_aligned_embedding_is_only_a_target():
    e_mis = torch.randn(4, 8, requires_grad=True)
    e_al = torch.randn(4, 8, requires_grad=True)
    total, _ = aikd_loss(e_mis, e_al, torch.zeros(4, requires_grad=True), torch.ones(4), ObjectiveConfig())
    total.backward()
    assert e_mis.grad is not None and e_al.grad is None
