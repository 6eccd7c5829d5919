"""`ray start --head` on 127.0.0.1, then `ray job submit --working-dir . -- jobs/<spec>.yaml`.

Runs in its own pytest process (marker ``cluster``, see the Makefile): `ray stop` ends
every Ray process on the machine, including the test session's local instance.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from aikd.models.weights import load_model
from aikd.submit import runtime_env

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    gcs, dashboard = _free_port(), _free_port()
    subprocess.run([os.path.join(bin_dir, "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
                    "--port", str(gcs), "--num-cpus", "2", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(dashboard), "--disable-usage-stats"], env=env, check=True,
                   capture_output=True)
    yield env, f"http://127.0.0.1:{dashboard}"
    subprocess.run([os.path.join(bin_dir, "ray"), "stop", "--force"], env=env, capture_output=True)


def _submit(address: str, env: dict, spec: str, overrides: list[str]) -> None:
    args = [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit", "--address", address,
            "--working-dir", ".", "--", spec]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # the job's own status


@pytest.fixture(scope="module")
def submitted(cluster, tmp_path_factory):
    """jobs/distill.yaml through `ray job submit`, tracked in a SQLite file the spec names."""
    env, address = cluster
    env = dict(env, RAY_AUTH_MODE="token")  # what the README tells users to set after `ray start`
    tmp = tmp_path_factory.mktemp("submitted")
    root, tracking = tmp / "default", f"tracking.uri=sqlite:///{tmp}/mlflow.db"
    # the spec's embedded default, smaller and elsewhere: its data and student paths follow the root
    _submit(address, env, "jobs/distill.yaml", [
        f"bootstrap.root={root}", "bootstrap.identities=24", "bootstrap.samples_per_identity=6",
        "bootstrap.fr_epochs=1", "bootstrap.serfiq_passes=10", f"storage={tmp}/runs", "max_steps=4", tracking])
    return env, address, tmp, tracking


def test_ray_job_submit_runs_the_executable_distill_spec(submitted):
    _, _, tmp, _ = submitted
    _, card = load_model(str(tmp / "runs" / "default-serfiq" / "best"))
    assert card.kind == "student" and card.lineage["label"] == "q_serfiq"
    summary = json.loads((tmp / "runs" / "default-serfiq" / "summary.json").read_text())
    assert summary["registered"]["uri"].startswith("models:/aikd-student/")  # the spec's register: section


def test_ray_job_submit_scores_a_gallery_with_the_registered_student(submitted):
    env, address, tmp, tracking = submitted
    _submit(address, env, "jobs/score.yaml", [f"shards=[{tmp}/default/faces]", f"out={tmp}/scores", tracking])
    summary = json.loads((tmp / "scores" / "_summary.json").read_text())
    assert summary["rows"] == 24 * 6 == summary["rows_scored"] + summary["rejected"]
    assert summary["models"][0]["uri"].startswith("models:/aikd-student/")  # resolved from @candidate


def test_ray_job_submit_runs_the_executable_sweep_spec(submitted):
    """jobs/sweep.yaml over the same default inputs: 2 trials, each a Ray Train run inside a Tune trial."""
    env, address, tmp, tracking = submitted
    _submit(address, env, "jobs/sweep.yaml", [
        f"storage={tmp}/sweeps", "trials=2", "fixed.max_steps=4", f"fixed.bootstrap.root={tmp}/default",
        "metric=val_quality_loss", tracking])  # 24 identities hold too few mated pairs out for a pAUC
    summary = json.loads((tmp / "sweeps" / "default-sweep" / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["failed"] == 0
    assert summary["registered"]["uri"].startswith("models:/aikd-student/")


def test_submitting_passes_the_tracking_server_on(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert runtime_env(".") == {"working_dir": ".", "env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}}
