"""Keep Ray Data's scheduler from spinning while the consumer is the bottleneck.

Ray Data's streaming executor runs a scheduling loop that only blocks (in ``ray.wait``)
while it has tasks whose output it may read. Once backpressure holds everything (the
steady state of a training stream, whose consumer is slower than its decoders) it
loops without blocking. Measured on 2 vCPUs with Ray 2.60: the training stream's
executor, inside Ray Train's ``SplitCoordinator``, took 0.6-0.9 of a core while the two
training workers, the real bottleneck, got 0.53 each.

:class:`PacedScheduling` is an execution callback that gives each loop step at least
``MIN_STEP_S``: a step that blocked on tasks for that long is not delayed, one that
spun sleeps the rest. The face pipeline's tasks are whole row groups (hundreds of
images, a tenth of a second or more each), and consumers read finished blocks from
another thread, so 50 steps a second lose nothing but the spinning.
"""

from __future__ import annotations

import time

import ray.data

try:  # a developer interface of Ray Data (2.60); without it streams simply run unpaced
    from ray.data._internal.execution.execution_callback import ExecutionCallback
except ImportError:  # pragma: no cover - other Ray versions
    ExecutionCallback = object

MIN_STEP_S = 0.02


class PacedScheduling(ExecutionCallback):
    def __init__(self) -> None:
        self._last_step_end: float | None = None

    def on_execution_step(self, executor) -> None:
        now = time.monotonic()
        if self._last_step_end is not None:
            rest = MIN_STEP_S - (now - self._last_step_end)
            if rest > 0:
                time.sleep(rest)
                now += rest
        self._last_step_end = now


def paced(ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` with :class:`PacedScheduling` in its own DataContext (the global one is untouched)."""
    callbacks = getattr(ds.context, "custom_execution_callback_classes", None)
    if callbacks is not None and ExecutionCallback is not object and PacedScheduling not in callbacks:
        callbacks.append(PacedScheduling)
    return ds
