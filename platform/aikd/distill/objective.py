"""The AI-KD objective: embedding consistency under misalignment + quality regression.

    loss = w_c * (1 - cos(e_misaligned, e_aligned)) + w_q * SmoothL1_beta(q_misaligned, label)

``e_aligned`` carries no gradient: it is the target the misaligned view must match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aikd.config import ObjectiveConfig


def aikd_loss(e_misaligned: torch.Tensor, e_aligned: torch.Tensor, q_pred: torch.Tensor, q_label: torch.Tensor,
              cfg: ObjectiveConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (as floats, for logging)."""
    consistency = (1.0 - F.cosine_similarity(e_misaligned.float(), e_aligned.detach().float(), dim=1)).mean()
    quality = F.smooth_l1_loss(q_pred.float(), q_label.float(), beta=cfg.smooth_l1_beta)
    total = cfg.consistency_weight * consistency + cfg.quality_weight * quality
    return total, {"consistency": consistency.item(), "quality": quality.item()}


def quality_loss(q_pred: torch.Tensor, q_label: torch.Tensor, cfg: ObjectiveConfig) -> float:
    return F.smooth_l1_loss(q_pred.float(), q_label.float(), beta=cfg.smooth_l1_beta).item()
