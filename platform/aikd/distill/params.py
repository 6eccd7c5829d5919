"""Which student parameters train, and with which optimiser settings (the reference's two groups and warm-up)."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LambdaLR

from aikd.config import OptimConfig


def trainable_backbone_tensors(backbone: nn.Module, k: int) -> list[str]:
    """Names of the last ``k`` backbone tensors that FR training trains.

    Tensors the backbone itself keeps fixed (arcface_torch's unit-scale embedding BN)
    stay fixed and do not count towards ``k``. Call it before :func:`freeze_all_but`,
    which changes what "trainable" means.
    """
    if k == 0:
        return []
    names = [n for n, p in backbone.named_parameters() if p.requires_grad]
    return names[-k:]


def param_groups(student: nn.Module, cfg: OptimConfig) -> list[dict]:
    """SGD groups: the quality head, and the last K backbone tensors. Changes nothing on ``student``.

    Each group carries its configured rate as ``initial_lr``, the base torch's schedulers scale:
    a schedule built at a resumed step then needs no scheduler state from the checkpoint.
    """
    chosen = set(trainable_backbone_tensors(student.feature_extractor, cfg.train_last_k))
    backbone = [p for name, p in student.feature_extractor.named_parameters() if name in chosen]
    groups = [{"params": list(student.quality_head.parameters()), "lr": cfg.head_lr, "momentum": cfg.head_momentum,
               "weight_decay": cfg.weight_decay, "name": "head", "initial_lr": cfg.head_lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.backbone_lr, "momentum": cfg.backbone_momentum,
                       "weight_decay": cfg.weight_decay, "name": "backbone", "initial_lr": cfg.backbone_lr})
    return groups


def freeze_all_but(model: nn.Module, groups: list[dict]) -> None:
    """Gradients only for the parameters the optimiser steps: no backward work for the frozen rest."""
    trained = {id(p) for g in groups for p in g["params"]}
    for p in model.parameters():
        p.requires_grad = id(p) in trained


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Reference warm-up: sin((step / warmup_end) * pi / 2) until warmup_end, then 1."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return math.sin(step / warmup_steps * math.pi / 2)


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, step: int = 0) -> LambdaLR:
    """The sine warm-up as a torch scheduler: each group's rate is ``initial_lr * warmup_factor(step)``.

    Built at ``step`` (0, or the step a run resumes at), it sets the rate of that optimizer step at once;
    call its ``step()`` after each optimizer step. Its position is the loop's step count, so a resumed
    run needs only the groups' ``initial_lr``, whether or not the optimizer state was restored.
    """
    return LambdaLR(optimizer, partial(warmup_factor, warmup_steps=warmup_steps), last_epoch=step - 1)
