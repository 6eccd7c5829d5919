"""Paced scheduling: Ray Data's loop pauses only while output waits for the consumer."""

import numpy as np

from aikd.data import pacing
from aikd.data.pacing import PacedScheduling, paced


class FakeExecutor:
    def __init__(self, output_waiting: bool):
        self.output_waiting = output_waiting

    def _consumer_idling(self) -> bool:
        return not self.output_waiting


def pauses(monkeypatch, executor) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(pacing.time, "sleep", slept.append)
    PacedScheduling().on_execution_step(executor)
    return slept


def test_pauses_while_output_waits_for_the_consumer(monkeypatch):
    assert pauses(monkeypatch, FakeExecutor(output_waiting=True)) == [pacing.PAUSE_S]


def test_never_pauses_a_consumer_that_waits_for_data(monkeypatch):
    assert pauses(monkeypatch, FakeExecutor(output_waiting=False)) == []


def test_an_executor_without_the_signal_gets_a_short_pause(monkeypatch):
    assert pauses(monkeypatch, object()) == [pacing.PAUSE_S / 10]


def test_paced_dataset_keeps_every_row_and_leaves_the_global_context_alone(ray_local):
    import ray

    ds = paced(ray.data.range(1000, override_num_blocks=20).map_batches(lambda b: {"id": b["id"] * 2}))
    paced(ds)  # idempotent
    assert ds.context.custom_execution_callback_classes.count(PacedScheduling) == 1
    assert PacedScheduling not in ray.data.DataContext.get_current().custom_execution_callback_classes
    ids = np.concatenate([b["id"] for b in ds.iter_batches(batch_size=64, batch_format="numpy")])
    assert sorted(ids.tolist()) == list(range(0, 2000, 2))
