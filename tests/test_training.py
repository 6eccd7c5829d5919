"""The contract of every Ray Train run: user errors as JobFailed and bugs with their traceback, the controller's
look at its workers. Run files under the job's output, bounded checkpoints and the one definition of "latest"
are checked on the shared S3 distillation, which resumes (tests/distill/test_distill_run.py)."""

import os
import sys

import pytest
from ray import cloudpickle
from ray.train import TrainingFailedError

from aikd.config import Resources
from aikd.errors import AikdError, JobFailed
from aikd.storage import resolve
from aikd.training import fit

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
ONE = Resources(workers=1, cpus_per_worker=0.5)


def failing_loop(config: dict) -> None:
    if config["kind"] == "user":
        raise AikdError("weights file not found: s3://b/missing.pth")
    raise ZeroDivisionError("a bug")


def test_a_user_error_in_a_worker_ends_the_job_as_one_line(ray_local, tmp_path):
    with pytest.raises(JobFailed, match=r"run .*user failed: weights file not found: s3://b/missing.pth"):
        fit(failing_loop, {"kind": "user"}, ONE, resolve(str(tmp_path / "user")))


def test_a_bug_in_a_worker_is_not_disguised_as_a_user_error(ray_local, tmp_path):
    with pytest.raises(TrainingFailedError, match="ZeroDivisionError"):
        fit(failing_loop, {"kind": "bug"}, ONE, resolve(str(tmp_path / "bug")))


@pytest.mark.parametrize("user_value", [None, "3"])
def test_the_controller_looks_at_its_workers_every_half_second_unless_the_user_set_it(user_value, monkeypatch,
                                                                                         tmp_path):
    import aikd.training as training

    seen = {}

    class Trainer:  # what the controller will read: the environment when the trainer is made
        def __init__(self, *args, **kwargs):
            seen["interval"] = os.environ.get(training.HEALTH_CHECK_INTERVAL)

        def fit(self):
            return "result"

    monkeypatch.delenv(training.HEALTH_CHECK_INTERVAL, raising=False)
    if user_value is not None:
        monkeypatch.setenv(training.HEALTH_CHECK_INTERVAL, user_value)
    monkeypatch.setattr(training, "TorchTrainer", Trainer)
    assert fit(failing_loop, {"kind": "user"}, ONE, resolve(str(tmp_path / "run"))) == "result"
    assert seen["interval"] == (user_value or "0.5")
