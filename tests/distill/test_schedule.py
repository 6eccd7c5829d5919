"""The sine warm-up as torch's LambdaLR: the rates the loop once set by hand, also after a resume."""

import math

import numpy as np
import pytest
import torch

from aikd.config import OptimConfig
from aikd.distill.params import param_groups, warmup_schedule
from aikd.models.student import create_student

WARMUP = 8


def _old_rate(base: float, step: int, warmup_steps: int) -> float:
    """What the loop set before optimizer step ``step``: base_lr * sin(step / warmup * pi / 2), 1 after."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return base
    return base * math.sin(step / warmup_steps * math.pi / 2)


def _optimizer() -> torch.optim.SGD:
    torch.manual_seed(0)
    groups = param_groups(create_student("iresnet_tiny"), OptimConfig(head_lr=0.05, backbone_lr=0.02))
    return torch.optim.SGD(groups, lr=groups[0]["lr"])


def _rates(optimizer: torch.optim.Optimizer, schedule, steps: int) -> list[list[float]]:
    """Each optimizer step's rate per group, the schedule stepped after it as the loop does."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    return out


def _expected(start: int, steps: int, warmup_steps: int = WARMUP) -> list[list[float]]:
    return [[_old_rate(b, s, warmup_steps) for b in (0.05, 0.02)] for s in range(start, start + steps)]


def _assert_rates(got: list[list[float]], start: int, warmup_steps: int = WARMUP) -> None:
    np.testing.assert_allclose(got, _expected(start, len(got), warmup_steps), rtol=1e-12)


def test_every_step_gets_the_old_sine_factor_then_the_full_rate():
    optimizer = _optimizer()
    _assert_rates(_rates(optimizer, warmup_schedule(optimizer, WARMUP), 12), start=0)


@pytest.mark.parametrize("warmup_steps", [0, 1])
def test_no_or_a_one_step_warmup(warmup_steps):
    optimizer = _optimizer()
    _assert_rates(_rates(optimizer, warmup_schedule(optimizer, warmup_steps), 3), start=0, warmup_steps=warmup_steps)


def test_a_schedule_resumed_with_the_optimizer_state_continues_where_it_stopped():
    before = _optimizer()
    _rates(before, warmup_schedule(before, WARMUP), 5)
    saved = before.state_dict()  # what the ddp strategy's checkpoint holds
    after = _optimizer()
    after.load_state_dict(saved)
    _assert_rates(_rates(after, warmup_schedule(after, WARMUP, step=5), 6), start=5)


def test_a_schedule_resumed_without_the_optimizer_state_starts_at_the_resumed_step():
    # DeepSpeed's module-only load (another world size under ZeRO) keeps the fresh optimizer
    optimizer = _optimizer()
    _assert_rates(_rates(optimizer, warmup_schedule(optimizer, WARMUP, step=3), 6), start=3)


def test_building_the_schedule_sets_the_rate_of_the_coming_step():
    optimizer = _optimizer()
    warmup_schedule(optimizer, WARMUP, step=4)
    _assert_rates([[g["lr"] for g in optimizer.param_groups]], start=4)
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.05, 0.02]  # the base is never scaled
