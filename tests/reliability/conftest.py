"""What the reliability suite shares: the fault-injecting S3 proxy, a tracking server behind it,
jobs run as CLI processes (each its own driver and local Ray) and the faces they work on.

Jobs here run as `python -m aikd ...` processes for two reasons: a driver must be
killable without killing the test, and a job's Ray workers must reach S3 through the
proxy (workers inherit the environment of the process that starts Ray, so the test
session's own Ray instance cannot be pointed at it).
"""

from __future__ import annotations

import os
import sys

import psutil
import pytest
import yaml
from harness import BUCKET, FIGURES, Job, delta, write_images  # beside this file (pytest puts the folder on sys.path)

from servers import mlflow_server

FAULT_SEED = 16


@pytest.fixture(scope="session")
def faulty_tracking(proxy, tmp_path_factory):
    """An `mlflow server` whose artifact store (the registry's files) is reached through the proxy."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-faulty"), proxy.url, f"s3://{BUCKET}/mlflow-faulty") as url:
        yield url


@pytest.fixture(scope="session")
def job_env(proxy, faulty_tracking):
    """The environment of a job process: S3 and the tracking server's artifacts through the proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return env | {"AWS_ENDPOINT_URL": proxy.url, "MLFLOW_TRACKING_URI": faulty_tracking, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def run_job(job_env, tmp_path_factory):
    """Start a CLI job: ``run_job(args, spec=None)``; a spec dict is written to a YAML file first."""
    cwd = tmp_path_factory.mktemp("jobs")

    def start(args: list[str], spec: dict | None = None, env: dict | None = None) -> Job:
        if spec is not None:
            path = cwd / f"spec-{len(list(cwd.glob('spec-*')))}.yaml"
            path.write_text(yaml.safe_dump(spec))
            args = [*args, str(path)]
        return Job(args, job_env | (env or {}), str(cwd))

    return start


@pytest.fixture(scope="session")
def faces(s3_server, proxy, run_job):
    """160 faces ingested from an S3 folder through the proxy into 8 shards: (shards URI, ids, faults seen)."""
    root = f"s3://{BUCKET}/reliability"
    ids = write_images(s3_server, "reliability", identities=8, per_identity=20, seed=3)
    before = proxy.figures()
    run_job(["ingest"], {"job": "ingest", "images": f"{root}/images", "landmarks": f"{root}/landmarks.csv",
                         "out": f"{root}/faces", "images_per_shard": 20}).succeed()
    return f"{root}/faces", ids, delta(before, proxy.figures(), "ingest 160 images (folder on S3 to shards)")


@pytest.fixture(scope="session")
def worker_loss_run(s3_run, run_job, proxy):
    """The uninterrupted reference run's spec again, through the proxy, one Train worker killed at a
    random step; the best student is registered on the tracking server behind the proxy."""
    import random

    first, reference, _ = s3_run
    spec = first.model_dump(mode="json") | {
        "job": "distill", "name": "worker-loss", "storage": f"s3://{BUCKET}/reliability/runs", "log_every": 1,
        "register": {"name": "reliability-student", "aliases": ["candidate"]}}
    kill_at = random.Random(FAULT_SEED).randint(8, 20)
    before = proxy.figures()
    # a progress line each time the driver reads the workers' board (about a second): the kill comes at the
    # first step at or after kill_at
    job = run_job(["distill"], spec, env={"AIKD_PROGRESS_EVERY_S": "0"})
    steps = "|".join(str(n) for n in range(kill_at, 31))
    kill_at = int(job.wait_for(rf"^distill: \d+% \(({steps})/30 steps", timeout=400).group(1))
    workers = [p for p in psutil.Process(job.proc.pid).children(recursive=True)
               if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, f"expected two Train workers, found {[p.cmdline() for p in workers]}"
    victim = random.Random(FAULT_SEED).choice(sorted(workers, key=lambda p: p.pid))
    victim.kill()
    output = job.succeed(timeout=600)
    return {"spec": spec, "kill_at": kill_at, "reference": reference, "output": output,
            "proxy": delta(before, proxy.figures(), "distill, a Train worker killed, registered")}


@pytest.fixture(scope="session", autouse=True)
def fault_figures(proxy):
    """At the end, the proxy's totals go to the file named by AIKD_FAULT_FIGURES (docs/reliability.md); each
    pytest-xdist worker has its own proxy and writes its own file, the name with the worker's id appended."""
    yield
    if target := os.environ.get("AIKD_FAULT_FIGURES"):
        import json

        if worker := os.environ.get("PYTEST_XDIST_WORKER"):
            target = f"{target}.{worker}"
        with open(target, "w") as f:
            json.dump({"total": proxy.figures(), "jobs": FIGURES}, f, indent=1)


@pytest.fixture
def no_ray(monkeypatch, tmp_path):
    """Ray cannot start: every way a job joins or starts it fails the test (a refused spec or file must
    never get that far). Relative paths land in tmp_path."""
    import ray

    from aikd.jobs import KINDS, job_kind

    def ray_started(*args, **kwargs):
        pytest.fail("a refused input reached Ray")

    for kind in KINDS:  # every job's module imported now, so each one's ensure_ray is patched below
        job_kind(kind)
    monkeypatch.setattr(ray, "init", ray_started)
    for name, module in list(sys.modules.items()):  # modules that imported ensure_ray by name
        if name.startswith("aikd") and hasattr(module, "ensure_ray"):
            monkeypatch.setattr(module, "ensure_ray", ray_started)
    monkeypatch.chdir(tmp_path)
    return tmp_path
