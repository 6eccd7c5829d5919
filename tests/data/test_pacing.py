"""Paced scheduling: every step of Ray Data's loop lasts at least MIN_STEP_S, spinning ones sleep the rest."""

import numpy as np
import pytest

from aikd.data import pacing
from aikd.data.pacing import MIN_STEP_S, PacedScheduling, paced


class Clock:
    """time.monotonic and time.sleep of the pacing module, without waiting."""

    def __init__(self, monkeypatch):
        self.now, self.slept = 100.0, []
        monkeypatch.setattr(pacing.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(pacing.time, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_step_that_spun_sleeps_the_rest_of_the_minimum(monkeypatch):
    clock, callback = Clock(monkeypatch), PacedScheduling()
    callback.on_execution_step(None)  # the first step: nothing to measure against
    clock.now += 0.002  # a step that never blocked
    callback.on_execution_step(None)
    assert clock.slept == [pytest.approx(MIN_STEP_S - 0.002)]


def test_a_step_that_blocked_on_tasks_is_not_delayed(monkeypatch):
    clock, callback = Clock(monkeypatch), PacedScheduling()
    callback.on_execution_step(None)
    clock.now += 0.1  # ray.wait's timeout
    callback.on_execution_step(None)
    assert clock.slept == []


def test_spinning_steps_run_at_most_once_per_minimum(monkeypatch):
    clock, callback = Clock(monkeypatch), PacedScheduling()
    start = clock.now
    for _ in range(11):
        callback.on_execution_step(None)
        clock.now += 0.001
    assert clock.now - start >= 10 * MIN_STEP_S


def test_paced_dataset_keeps_every_row_and_leaves_the_global_context_alone(ray_local):
    import ray

    ds = paced(ray.data.range(1000, override_num_blocks=20).map_batches(lambda b: {"id": b["id"] * 2}))
    paced(ds)  # idempotent
    assert ds.context.custom_execution_callback_classes.count(PacedScheduling) == 1
    assert PacedScheduling not in ray.data.DataContext.get_current().custom_execution_callback_classes
    ids = np.concatenate([b["id"] for b in ds.iter_batches(batch_size=64, batch_format="numpy")])
    assert sorted(ids.tolist()) == list(range(0, 2000, 2))
