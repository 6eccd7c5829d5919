"""What a job prints: aikd's lines once each, Ray's own output left in its log files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from aikd.console import shown
from console_check import noise  # beside conftest.py


@pytest.mark.parametrize(("line", "kept"), [
    ("sweep: trial 1f5e0fae ended at step 14: val_pauc_misaligned 0.0952 (data.label=q_norm)", True),
    ("registry: downloading student version 3 failed (timed out); retrying", True),
    ("distill: done in 62 s (steps 14, consumed 896); summary: runs/x/_summary.json", True),
    ("distill: resumed at step 8 (512 samples consumed)", True),
    # a training worker's details: its progress bar in the driver stands for them
    ("distill: step 10/40 consistency 0.13 quality 0.54 41 img/s/worker", False),
    ("distill: validation step=8 consumed=512 val_spearman=0.5763", False),
    ("fr-train: step 20/60 loss 3.2 epoch 1 80 img/s/worker", False),
    ("Execution plan of Dataset train_0: InputDataBuffer[Input] -> ActorPoolMapOperator[MapBatches(Align)]", False),
    ("Exception in thread PlacementGroupCleanerMonitor:", False),
    ("Checkpoint successfully created at: Checkpoint(filesystem=s3, path=...)", False),
    ("distiller: not ours, only a prefix of ours", False),
])
def test_the_console_shows_aikds_lines_less_the_training_details(line, kept):
    assert shown(line) is kept


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` (which starts Ray through ensure_ray) in a fresh process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=os.environ | (env or {}), timeout=300)


def _job_output(code: str, env: dict | None = None) -> str:
    """What ``code`` printed, stdout and stderr; it must succeed."""
    done = _run(code, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


# one quiet job for the tests below: a one-worker Ray Train run, then a Ray Data actor pool, then the driver's
# own log read back; it ends with a message of its own (exit status 1)
QUIET = """
    import glob, os, sys

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from aikd.actor_pool import map_actors
    from aikd.config import Resources
    from aikd.console import say
    from aikd.runtime import ensure_ray

    def work():
        print("Execution plan of Dataset x: a line Ray would print")
        say("distill: resumed at step 1 from the worker")

    class Echo:
        def __call__(self, batch):
            return batch

    ensure_ray(num_cpus=2)
    TorchTrainer(work, scaling_config=ScalingConfig(num_workers=1),
                 run_config=RunConfig(storage_path="{storage}", name="console")).fit()
    rows = map_actors([{{"x": 1}}, {{"x": 2}}], Echo, {{}}, Resources(workers=1, cpus_per_worker=0.5)).take_all()
    print("score: rows", len(rows))
    print("a line of ours on stderr", file=sys.stderr)
    logs = os.path.join(ray._private.worker.global_worker.node.get_session_dir_path(), "logs")
    driver_log = "".join(open(p).read() for p in glob.glob(os.path.join(logs, "python-core-driver-*.log")))
    print("in the driver's log:", "has constructor arguments in the object store" in driver_log)
    raise SystemExit("pool: the end")
"""


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> subprocess.CompletedProcess:
    return _run(QUIET.format(storage=tmp_path_factory.mktemp("console")), {"AIKD_VERBOSE": "0"})


def test_a_worker_line_reaches_the_console_once_and_ray_noise_stays_in_the_log_files(quiet):
    out = quiet.stdout + quiet.stderr
    assert quiet.returncode == 1 and quiet.stderr.rstrip().endswith("pool: the end"), quiet.stderr[-3000:]
    assert out.count("distill: resumed at step 1 from the worker") == 1, out[-3000:]
    assert "ray: its own output is in " in out
    assert not noise(out) and "core_worker.cc" not in out, out[-3000:]


TASK = """
    import time

    import ray

    from aikd.actor_pool import map_actors
    from aikd.config import Resources
    from aikd.runtime import ensure_ray

    @ray.remote
    def work():
        print("Execution plan of Dataset x: a line Ray would print")
        print("score: a line of ours")

    class Echo:
        def __call__(self, batch):
            return batch

    ensure_ray(num_cpus=1)
    ray.get(work.remote())
    map_actors([{"x": 1}], Echo, {}, Resources(workers=1, cpus_per_worker=0.5)).take_all()
    time.sleep(2)  # the log monitor forwards worker lines every few hundred ms
"""


def test_verbose_brings_rays_output_back():  # the quiet cases: the Train run's and the pool's above
    loud = _job_output(TASK, env={"AIKD_VERBOSE": "1"})
    assert "Execution plan of Dataset x" in loud and "score: a line of ours" in loud
    assert "has constructor arguments in the object store" in loud  # the core worker's line, unfiltered


def test_the_core_workers_note_on_actor_pools_stays_in_the_driver_log(quiet):
    """Ray Data's actor pools make Ray's core worker print an error-level line that asks for nothing; the
    console drops that line alone (the job's own stderr and its exit message still come through)."""
    assert quiet.returncode == 1, quiet.stderr[-3000:]
    assert "score: rows 2" in quiet.stdout and "in the driver's log: True" in quiet.stdout, quiet.stdout[-2000:]
    assert "a line of ours on stderr" in quiet.stderr and quiet.stderr.rstrip().endswith("pool: the end")
    assert "has constructor arguments in the object store" not in quiet.stderr, quiet.stderr[-3000:]
