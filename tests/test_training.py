"""The contract of every Ray Train run: run files under its output, bounded checkpoints, one definition of
"latest", user errors as JobFailed and bugs with their traceback."""

import json
import os
import sys
import tempfile

import pytest
import ray.train
from ray import cloudpickle
from ray.train import Checkpoint, TrainingFailedError

from aikd.config import Resources
from aikd.errors import AikdError, JobFailed
from aikd.storage import resolve
from aikd.training import fit, latest_checkpoint, read_json

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
ONE = Resources(workers=1, cpus_per_worker=0.5)


def counting_loop(config: dict) -> None:
    """Reports ``config['reports']`` checkpoints, continuing the step count of the checkpoint it was given."""
    given = ray.train.get_checkpoint()
    start = 0
    if given is not None:
        with given.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            start = json.load(f)["step"]
    for step in range(start + 1, start + 1 + config["reports"]):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"step": step, "resumed_from": start}, f)
            ray.train.report({"step": step}, checkpoint=Checkpoint.from_directory(d))


def failing_loop(config: dict) -> None:
    if config["kind"] == "user":
        raise AikdError("weights file not found: s3://b/missing.pth")
    raise ZeroDivisionError("a bug")


def _checkpoint_dirs(run) -> list[str]:
    from pyarrow.fs import FileSelector, FileType

    return [i.path for i in run.fs.get_file_info(FileSelector(run.path))
            if i.type == FileType.Directory and os.path.basename(i.path).startswith("checkpoint_")]


def test_a_run_keeps_its_newest_checkpoints_and_resumes_from_the_latest(ray_local, s3_server):
    run = resolve("s3://aikd-test/job/counting")  # no local disk shared with the workers
    assert latest_checkpoint(run) is None  # a new run
    fit(counting_loop, {"reports": 4}, ONE, run, keep_checkpoints=2)
    assert read_json(latest_checkpoint(run), "state.json")["step"] == 4
    assert len(_checkpoint_dirs(run)) == 2  # Ray's files and checkpoints live under the job's output
    # the same run again: its workers get the checkpoint the driver calls latest
    result = fit(counting_loop, {"reports": 1}, ONE, run, keep_checkpoints=2)
    state = read_json(result.checkpoint, "state.json")
    assert state == {"step": 5, "resumed_from": 4}
    assert read_json(latest_checkpoint(run), "state.json") == state


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
    assert fit(counting_loop, {"reports": 1}, ONE, resolve(str(tmp_path / "run"))) == "result"
    assert seen["interval"] == (user_value or "0.5")
