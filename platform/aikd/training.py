"""Ray Train runs as every training job has them: resources, run files under the output, checkpoints.

What fr-train, distill and a sweep's trials share, so a reader learns it once:

* :func:`scaling_config` turns a spec's :class:`~aikd.config.Resources` into Ray Train's;
* :func:`fit` runs a ``TorchTrainer`` whose run files live under the job's output, with
  ``FailureConfig`` and a bounded number of checkpoints; a run that fails from a user
  error raises :class:`~aikd.errors.JobFailed` (one line in the CLI), one that fails from
  a bug keeps its traceback;
* :func:`latest_checkpoint` is the one definition of a run's latest checkpoint: Ray
  Train's own (its checkpoint-manager snapshot), the one ``ray.train.get_checkpoint()``
  hands the workers when the run is started again.
"""

from __future__ import annotations

import json
import os

from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    Result,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ray.train.torch import TorchTrainer

from aikd.config import Resources
from aikd.errors import AikdError, JobFailed
from aikd.storage import Location


def scaling_config(resources: Resources) -> ScalingConfig:
    per_worker = {"CPU": resources.cpus_per_worker} | resources.custom
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return ScalingConfig(num_workers=resources.workers, use_gpu=resources.use_gpu, resources_per_worker=per_worker,
                         placement_strategy=resources.placement.upper())


def _user_error(err: Exception) -> AikdError | None:
    """The user error behind a failed run, if every failing worker raised one."""
    failures = list(getattr(err, "worker_failures", {}).values())
    causes = [f if isinstance(f, AikdError) else getattr(f, "cause", None) for f in failures]
    if failures and all(isinstance(c, AikdError) for c in causes):
        return causes[0]
    return None


HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def fit(loop, config: dict, resources: Resources, run: Location, *, datasets: dict | None = None,
        dataset_config=None, max_failures: int = 0, keep_checkpoints: int | None = None,
        callbacks: list | None = None) -> Result:
    """Run ``loop`` on Ray Train workers; the run is ``run`` (Ray's files included): the same one resumes.

    A lost worker is replaced up to ``max_failures`` times; the workers then start from
    the latest checkpoint (if the loop writes any). Only the newest ``keep_checkpoints``
    are kept. ``callbacks`` are Ray Train callbacks (a sweep's trial passes the one that
    hands each report to Ray Tune).
    """
    # Ray Train's controller looks at its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), and a
    # run's start and end each wait for such looks: at 0.5 s every run ends about 5 s sooner (two one-worker runs
    # took 35 s, then 22 s). Ray hands the setting on to the controller; a value the user set stays.
    os.environ.setdefault(HEALTH_CHECK_INTERVAL, "0.5")
    trainer = TorchTrainer(
        loop, train_loop_config=config, scaling_config=scaling_config(resources),
        run_config=RunConfig(name=run.name, storage_path=run.parent().path,
                             storage_filesystem=run.fs, failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
                             callbacks=callbacks or []),
        datasets=datasets or {}, dataset_config=dataset_config,
    )
    try:
        return trainer.fit()
    except TrainingFailedError as err:
        cause = _user_error(err)
        if cause is None:
            raise  # a bug: keep the workers' traceback
        raise JobFailed(f"run {run.uri} failed: {cause}") from None


def latest_checkpoint(run: Location) -> Checkpoint | None:
    """The checkpoint Ray Train resumes ``run`` from (None for a new run)."""
    if not run.exists():
        return None
    try:
        return Result.from_path(run.path, storage_filesystem=run.fs).checkpoint
    except RuntimeError:  # a folder without Ray's snapshot: no checkpoint was ever reported
        return None


def read_json(checkpoint: Checkpoint, name: str) -> dict:
    """One JSON file of a checkpoint, read where it lies (no download of the rest)."""
    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{name}") as f:
        return json.loads(f.read())
