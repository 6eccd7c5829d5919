"""Joining or starting Ray, in one place and only when a job asks for it (never at import)."""

from __future__ import annotations

import os

import ray


class JobFailed(RuntimeError):
    """A Ray job or training run that ended in failure (its own log says why)."""


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local one.

    Storage variables (AWS_*) must be set before this: workers inherit the environment
    of the process that starts Ray.
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
