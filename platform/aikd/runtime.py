"""Joining or starting Ray, and the device a worker was given, in one place (never at import)."""

from __future__ import annotations

import logging
import os

import ray
import torch

PROCESSES_PER_CPU = 4
# Ray Train starts an actor per run that polls the cluster for nodes about to be drained (preempted). A local
# instance is one node, the driver's own machine: nothing to watch, and a process less per run.
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def local_instance_settings() -> None:
    """What a local instance sets before it starts (its workers inherit the environment); a value set stays."""
    os.environ.setdefault(PREEMPTION_WATCHER, "0")


def ensure_ray(num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local instance; the
    console then shows aikd's lines only (:mod:`aikd.console`).

    Storage variables (AWS_*) must be set before this: workers inherit the environment
    of the process that starts Ray. ``dashboard``: a local instance runs it (its State
    API frees the workers of a Ray Train run that Tune stops early).
    """
    if ray.is_initialized():
        return
    from aikd.console import filter_native_stderr, quiet_libraries, quiet_ray, verbose

    quiet_libraries()
    filter_native_stderr()
    level = logging.INFO if verbose() else logging.WARNING  # "Started a local Ray instance" and kin
    if os.environ.get("RAY_ADDRESS"):
        context = ray.init(log_to_driver=True, logging_level=level)
    else:  # address="local": a new instance, never a cluster someone left running on this machine
        cpus = num_cpus or os.cpu_count() or 1
        local_instance_settings()
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=True,
                           logging_level=level, _system_config={
                               # the raylet warns once a node has started 4x this many worker processes (the
                               # default: its CPUs). aikd's jobs run several per CPU by design: half-CPU actors and
                               # Train workers, and zero-CPU coordinators (Train's controller, the data split, the
                               # progress board), so on a small machine the warning came with every job.
                               "worker_maximum_startup_concurrency": PROCESSES_PER_CPU * cpus})
    quiet_ray(context.address_info.get("session_dir"))


def actor_device() -> torch.device:
    """The device of a Ray actor or task: the GPU Ray assigned to it, else the CPU.

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the assigned GPUs, so the first visible one is
    ours. A process given no GPU stays on the CPU even on a GPU machine: it holds no
    claim on the cards other actors were given.
    """
    if ray.is_initialized() and ray.get_gpu_ids():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def train_device(gpus_per_worker: float) -> torch.device:
    """The device of a Ray Train worker: Ray Train's choice when GPUs were asked for, else the CPU."""
    if gpus_per_worker > 0:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")
