"""Sweeps run as a user runs them, `python -m aikd run sweep.yaml`, each in its own process and Ray
(with the dashboard, which Ray Train needs to free a stopped trial's workers). Each trial is a
1-worker CPU distillation of 7 steps, validated (and checkpointed) at steps 0 and 7; the runs are
shared between the tests below. (A search does not depend on its trials' worker count: the cluster
test's sweep runs 2-worker trials.)"""

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import PurePosixPath

import pyarrow.fs as pafs
import pytest
import yaml
from mlflow import MlflowClient

from aikd.cli import main
from aikd.job import SUMMARY_FILE, SUMMARY_KEYS
from aikd.storage import resolve
from console_check import doubled, noise  # beside conftest.py

pytestmark = pytest.mark.slow
# 56 steps an epoch: a validation every 7 steps is a few seconds less per trial than the default's every 3
FIXED = {"max_steps": 7, "optim.val_every": 0.125}
# both teachers and both strengths, each setting varied from a shared one
GRID = [{"data.label": "q_serfiq", "data.misalignment": 1.0}, {"data.label": "q_serfiq", "data.misalignment": 4.0},
        {"data.label": "q_norm", "data.misalignment": 1.0}]


def _spec(root, labelled_run, fr_run, name: str, **fields) -> str:
    job, _ = labelled_run
    cfg_fr, _ = fr_run
    half = {"workers": 1, "cpus_per_worker": 0.5}  # with its decode actor and driver: one trial at a time
    base = {"data": {"shards": [job.out], "label": "q_serfiq", "image_size": 64, "val_fraction": 0.1,
                     "resources": half},
            "student": {"weights": cfg_fr.out}, "engine": {"micro_batch": 32}, "resources": half}
    spec = {"job": "sweep", "name": name, "storage": str(root / "sweeps"), "base": base,
            "fixed": FIXED} | fields  # storage: local unless fields name one
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@contextlib.contextmanager
def _sweep(spec: str, log_path, env: dict | None = None):
    """`python -m aikd run spec` in a session of its own; whatever is left of it is killed on the way out."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "aikd", "run", spec], cwd=os.path.dirname(spec),
                                env=os.environ | (env or {}),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the sweep's Ray went with its session
            proc.wait()


def _wait_for(condition, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(1)


def _mtime(location) -> int:
    return location.fs.get_file_info(location.path).mtime_ns


def _table(home) -> list[dict]:
    return list(csv.DictReader(home.join("trials.csv").read_text().splitlines()))


@pytest.fixture(scope="module")
def grid_sweep(labelled_run, fr_run, s3_server, proxy, tmp_path_factory):
    """A 3-trial sweep over 2 teachers and 2 strengths, living in the local S3 bucket behind the fault
    proxy (10 % of its requests fail), killed (SIGKILL, its Ray with it) once a trial finished and a
    second has a checkpoint, then started again and run out."""
    root = tmp_path_factory.mktemp("grid")
    storage = f"s3://aikd-test/sweeps-{uuid.uuid4().hex[:8]}"
    spec = _spec(root, labelled_run, fr_run, "grid", storage=storage, trials=3, early_stop=None,
                 space={"data.label": {"type": "choice", "values": ["q_serfiq", "q_norm"]},
                        "data.misalignment": {"type": "choice", "values": [1.0, 4.0]}},
                 start_with=GRID, register={"name": "sweep-test", "aliases": ["candidate"]})
    home = resolve(storage).join("grid")
    trials = home.join("trials")

    def files() -> list[PurePosixPath]:
        # one listing per look, hidden files included: the trials' summaries are `_summary.json`
        if not trials.exists():
            return []
        found = trials.fs.get_file_info(pafs.FileSelector(trials.path, recursive=True))
        return [PurePosixPath(f.path) for f in found if f.type == pafs.FileType.File]

    def finished(found) -> set[str]:
        return {f.parent.name for f in found if f.name == SUMMARY_FILE}

    def interrupted_with_checkpoint():
        # Ray Train's snapshot, not the sidecar: a checkpoint counts once Ray has registered it (with S3
        # faults slowing uploads, a kill between the upload and the registration restarts the trial at 0)
        found = files()
        done = finished(found)
        return len(done) >= 1 and {f.parent.name for f in found if f.name == "checkpoint_manager_snapshot.json"} - done

    logs = [root / "first.log", root / "second.log"]
    through_faults = {"AWS_ENDPOINT_URL": proxy.url}
    faults_before = sum(proxy.figures()["faults"].values())
    with _sweep(spec, logs[0], through_faults) as proc:  # killed when the condition holds
        _wait_for(interrupted_with_checkpoint, proc, 600, "a finished trial and a second with a checkpoint")
    before = {name: (_mtime(trials.join(name, SUMMARY_FILE)), trials.join(name, SUMMARY_FILE).read_bytes())
              for name in finished(files())}
    with _sweep(spec, logs[1], through_faults) as proc:
        assert proc.wait(timeout=900) == 0, logs[1].read_text()[-3000:]
    faults = sum(proxy.figures()["faults"].values()) - faults_before
    return home, home.join("_summary.json").read_json(), before, [p.read_text() for p in logs], spec, faults


def test_a_grid_sweep_runs_every_trial_and_registers_the_one_with_the_lowest_metric(grid_sweep):
    home, summary, *_ = grid_sweep
    table = _table(home)
    assert set(SUMMARY_KEYS) <= set(summary) and summary["job"] == "sweep"  # the job shell's summary
    assert MlflowClient().get_run(summary["mlflow_run"]).info.status == "FINISHED"
    assert summary["counts"]["trials"] == len(table) == 3 and summary["counts"]["completed"] == 3
    assert sorted((r["data.label"], float(r["data.misalignment"])) for r in table) == sorted(
        (p["data.label"], p["data.misalignment"]) for p in GRID)
    lowest = min(table, key=lambda r: float(r["metric"]))
    assert summary["best"]["trial"] == lowest["trial"]
    version = MlflowClient().get_model_version("sweep-test", summary["registered"]["version"])
    assert version.tags["aikd.trial"] == lowest["trial"] and version.run_id == lowest["mlflow_run"]
    assert float(version.tags["sweep.val_pauc_misaligned"]) == pytest.approx(float(lowest["metric"]))
    assert version.tags["sweep.param.data.label"] == lowest["data.label"]
    # the registered student is the one the trial saved at its best metric
    card = resolve(summary["best"]["student"]).join("card.json").read_json()
    assert card["lineage"]["metrics"]["val_pauc_misaligned"] == pytest.approx(float(lowest["metric"]))
    for name in ("trials.csv", "trials.md", "trials.png", "importances.json"):
        assert home.join(name).exists()
    assert set(summary["importances"]["importances"]) == {"data.label", "data.misalignment"}


def test_every_trial_is_an_mlflow_run_under_the_sweep(grid_sweep):
    home, summary, *_ = grid_sweep
    client = MlflowClient()
    parent = client.get_run(home.join("_mlflow_run.json").read_json()["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(r["trial"] for r in _table(home))
    assert all(r.info.status == "FINISHED" and r.data.tags["aikd.trial_status"] == "completed" for r in children)
    assert all("val_pauc_misaligned" in r.data.metrics for r in children)
    assert parent.info.status == "FINISHED"


def test_a_killed_sweep_started_again_keeps_its_finished_trials(grid_sweep):
    home, summary, before, (first, second), _, faults = grid_sweep
    assert faults > 0  # its state, checkpoints and results were written through injected S3 faults
    assert len(before) >= 1 and "continuing" in second
    for trial, (mtime, data) in before.items():  # finished trials were not trained again
        summary_file = home.join("trials", trial, "_summary.json")
        assert (_mtime(summary_file), summary_file.read_bytes()) == (mtime, data)
    assert len({f.parent().name for f in home.join("trials").list_files("config.json")}) == 3
    # the trial interrupted by the kill continued its distill run from its checkpoint
    assert "distill: resumed at step" in second


def test_a_sweeps_console_has_a_line_per_ended_trial_and_none_of_rays(grid_sweep):
    *_, (first, second), _, _ = grid_sweep
    line = r"^sweep: trial (\w+) ended at step 7: val_pauc_misaligned [\d.]+ \(data.label="
    ended = re.findall(line, first + second, re.M)
    assert len(set(ended)) == 3, (first + second)[-3000:]  # each trial's line, in the run that finished it
    for log in (first, second):
        assert not noise(log) and not doubled(log, "distill:"), (noise(log), doubled(log, "distill:"))
        assert not re.search(r"^distill: (step|validation) ", log, re.M)  # the trials' details: in their logs


def test_a_finished_sweep_started_again_registers_nothing_new(grid_sweep, capsys):
    home, summary, *_, spec, _ = grid_sweep
    assert main(["sweep", spec]) == 0
    assert "has finished; its summary stands" in capsys.readouterr().out
    versions = MlflowClient().search_model_versions("name = 'sweep-test'")
    assert [str(v.version) for v in versions] == [summary["registered"]["version"]]
    # another search under the same name is refused, naming what changed
    assert main(["sweep", spec, "--set", "trials=6"]) == 2
    assert "was started with another spec (changed: trials): a different search needs a new name" in (
        capsys.readouterr().err)


def test_early_stopping_reports_a_stopped_trial_as_stopped(labelled_run, fr_run, tmp_path):
    """The second trial regresses the raw norm labels (about 20 +- 5) with an untrained head: its quality
    loss is tens of times the first trial's (standardised labels) from its first validation on, so ASHA
    (grace 1) stops it at the first rung."""
    spec = _spec(tmp_path, labelled_run, fr_run, "asha", trials=2, metric="val_quality_loss",
                 fixed=FIXED | {"data.label": "q_norm"}, early_stop={"grace": 1, "reduction_factor": 2},
                 space={"objective.label_scaling": {"type": "choice", "values": ["standardize", "none"]}},
                 start_with=[{"objective.label_scaling": "standardize"}, {"objective.label_scaling": "none"}])
    with _sweep(spec, tmp_path / "asha.log") as proc:
        assert proc.wait(timeout=600) == 0, (tmp_path / "asha.log").read_text()[-3000:]
    home = resolve(str(tmp_path / "sweeps" / "asha"))
    summary = home.join("_summary.json").read_json()
    table = {r["objective.label_scaling"]: r for r in _table(home)}
    assert (summary["counts"]["completed"], summary["counts"]["stopped"], summary["counts"]["failed"]) == (1, 1, 0)
    assert table["none"]["status"] == "stopped" and table["none"]["validations"] == "1"
    assert float(table["none"]["metric"]) > 10 * float(table["standardize"]["metric"])
    assert table["standardize"]["status"] == "completed" and table["standardize"]["steps"] == "7"
    run = MlflowClient().get_run(table["none"]["mlflow_run"])
    assert run.info.status == "KILLED" and run.data.tags["aikd.trial_status"] == "stopped"


TEACHERS = {"type": "choice", "values": ["q_serfiq", "q_crfiqa"]}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"fixed.data.val_fraction": 0.001}, "teacher q_serfiq labels none of the held-out identities"),
    ({"fixed.validation.min_mated_pairs": 10**6}, r"teacher q_serfiq gives \d+ mated pairs among the held-out "
                                                  "identities it labels, fewer than validation.min_mated_pairs"),
    # CR-FIQA scores only identities its FR head trained on: the sweep's held-out identities are others
    ({"space": {"data.label": TEACHERS}}, "teacher q_crfiqa labels none of the held-out identities"),
])
def test_a_sweep_whose_trials_could_not_measure_the_metric_fails_before_any_trial(labelled_run, fr_run, tmp_path,
                                                                                 overrides, message):
    from aikd.config import SweepConfig
    from aikd.errors import ConfigError
    from aikd.spec import load_spec
    from aikd.sweep.run import run_sweep

    spec = _spec(tmp_path, labelled_run, fr_run, "unmeasured")
    fixed = FIXED | {k.removeprefix("fixed."): v for k, v in overrides.items() if k.startswith("fixed.")}
    with pytest.raises(ConfigError, match=message):
        run_sweep(load_spec(spec, SweepConfig, {"fixed": fixed} | {k: v for k, v in overrides.items()
                                                                   if not k.startswith("fixed.")}))
    assert not (tmp_path / "sweeps" / "unmeasured").exists()


def test_a_bad_space_entry_fails_before_any_trial_with_one_line(labelled_run, fr_run, tmp_path, capsys):
    spec = _spec(tmp_path, labelled_run, fr_run, "bad", space={"data.misalignmnet": {"type": "uniform",
                                                                                      "low": 0, "high": 2}})
    assert main(["sweep", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aikd sweep: error: space 'data.misalignmnet': 'misalignmnet' is not a field")
    assert "\n" not in err and not (tmp_path / "sweeps" / "bad" / "tune").exists()
