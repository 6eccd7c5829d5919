"""Trying a whole operation again: one stated policy per operation, built on tenacity.

A :class:`Policy` says how many attempts an operation gets in all, how long to wait
before each new one, and which errors are worth one. Any other error, and the error of
the last attempt, reach the caller unchanged, so callers keep their own final messages.
Use it only for idempotent operations (reading a small object, downloading a model):
clients with their own request retries (botocore, pyarrow's S3 client) keep them, and a
policy here only adds whole attempts where those give up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity
from tenacity.wait import wait_base

T = TypeVar("T")


def doubling(first: float) -> wait_base:
    """Waits of ``first``, then twice the previous: first, 2 first, 4 first, ... seconds."""
    return tenacity.wait_exponential(multiplier=first, exp_base=2)


def growing(step: float) -> wait_base:
    """Waits that grow by ``step``: step, 2 step, 3 step, ... seconds."""
    return tenacity.wait_incrementing(start=step, increment=step)


@dataclass(frozen=True)
class Policy:
    attempts: int  # in all, the first included
    wait: wait_base  # the pause before each new attempt
    retryable: Callable[[BaseException], bool]  # whether an error is worth another attempt

    def call(self, fn: Callable[[], T], on_retry: Callable[[BaseException], None] | None = None) -> T:
        """``fn()``, tried again after each retryable error until the attempts run out.

        ``on_retry`` hears each error that is followed by another attempt (to log it).
        """
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts), wait=self.wait,
            retry=tenacity.retry_if_exception(self.retryable), reraise=True,
            sleep=time.sleep,  # looked up per call, so a test can replace it
            before_sleep=None if on_retry is None else lambda state: on_retry(state.outcome.exception()),
        )(fn)
