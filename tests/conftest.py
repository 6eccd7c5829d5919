"""Shared fixtures: a real S3 API server and an MLflow tracking server on 127.0.0.1, storage roots.

The S3 server is moto in server mode (pyarrow's C++ client cannot see moto's in-process
mock). Its endpoint is published through the standard AWS variables, so code under
test reaches it exactly as it reaches a production store. Every job a test runs is
tracked in a session SQLite file (MLFLOW_TRACKING_URI), never in the repository's runs/.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

BUCKET = "aikd-test"

# `make test` runs this suite in two pytest-xdist workers (`-n 2`); the tests of one scope run in one worker.
# A module is a scope, so its module fixtures run once. The FR run and its labels are built once for both
# workers (see `built_once`). The session's other shared runs (the S3 distillation and all built on it, the
# reliability suite's ingested faces, the evaluation report, the ingested photos) live in one worker, so the
# modules that use them are one scope. A module that asks for them by name while it runs
# (request.getfixturevalue) says so with `USES_SHARED_RUNS = True`.
SHARED_RUNS = {"s3_run", "faces", "report", "photos"}
SHARED_RUN_MODULES = {
    "tests/detect/test_detected_condition.py", "tests/distill/test_distill_run.py", "tests/evaluate/test_report.py",
    "tests/ingest/test_ingest_run.py", "tests/reliability/test_driver_crash.py",
    "tests/reliability/test_object_store.py", "tests/reliability/test_worker_loss.py", "tests/test_job.py"}
# the longest scopes start first, so neither worker is left with a long one at the end
LONGEST_FIRST = ["shared runs", "tests/test_demo.py", "tests/sweep/test_sweep_run.py", "tests/test_registry.py"]
# ... but the cluster's scope is handed out last: run beside other scopes, its Train runs across three nodes slow
# down more than the machine's idle share gives back (measured: 450 s instead of 290 s with 240 s of overlap)
LAST = "tests/test_multinode.py"


def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduler by scope, with the scopes above (its own `loadgroup` marks are lost on pytest 9.2)."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunsScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "shared runs" if module in SHARED_RUN_MODULES else module

        def _assign_work_unit(self, node) -> None:
            for scope in reversed(LONGEST_FIRST):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            if LAST in self.workqueue:
                self.workqueue.move_to_end(LAST)
            super()._assign_work_unit(node)

    return SharedRunsScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A module that uses a shared run but is not in SHARED_RUN_MODULES would run that job again."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        uses = SHARED_RUNS & set(item.fixturenames) or getattr(item.module, "USES_SHARED_RUNS", False)
        if uses and module not in SHARED_RUN_MODULES:
            raise pytest.UsageError(f"{module} uses the session's shared runs: add it to SHARED_RUN_MODULES "
                                    f"in tests/conftest.py")


BUILT_BY: dict[str, str] = {}  # a run built once -> the tracking URI of the worker that built it


def built_once(name: str, tmp_path_factory, build):
    """``build(root)``'s result, built once for all of the session's xdist workers: the first to ask builds it in
    a folder they share, under a file lock, and saves it; the others wait for the lock and load it. The jobs
    it ran are tracked in the builder's database (`tracked_in`)."""
    import pickle

    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent / name  # the session's base temp, above each worker's own
    saved = root / "result.pickle"
    with FileLock(f"{root}.lock"):
        if saved.exists():
            result, BUILT_BY[name] = pickle.loads(saved.read_bytes())
            return result
        root.mkdir(exist_ok=True)
        result = build(root)
        saved.write_bytes(pickle.dumps((result, os.environ["MLFLOW_TRACKING_URI"])))
        return result


@pytest.fixture(scope="session")
def tracked_in(tracking_db):
    """``tracked_in(run)``: the tracking URI a session run's jobs were tracked in (their builder's, for a run
    built once for every worker)."""
    return lambda run: BUILT_BY.get(run, tracking_db)


@pytest.fixture(scope="session", autouse=True)
def tracking_db(tmp_path_factory):
    """The serverless default's SQLite tracking + registry file, one per test session."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    yield os.environ["MLFLOW_TRACKING_URI"]
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """`mlflow server` on 127.0.0.1: SQLite backend, artifacts proxied to the local S3 bucket."""
    from servers import mlflow_server as start

    with start(tmp_path_factory.mktemp("mlflow-server"), s3_server, f"s3://{BUCKET}/mlflow") as url:
        yield url


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def proxy(s3_server):
    """A fault-injecting proxy in front of the S3 server: 10 % of requests fail (seeded). Jobs reach it
    as their endpoint; the reliability suite and the killed sweep run through it. It refuses access
keys other than the test server's (which checks none)."""
    from fault_proxy import FaultProxy

    p = FaultProxy(s3_server, rate=0.10, seed=16, access_keys={os.environ["AWS_ACCESS_KEY_ID"]}).start()
    yield p
    p.stop()


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path) -> str:
    """A fresh, empty URI prefix: once on local disk, once in the local S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("s3_server")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray instance for the session, started after the S3 variables are set, with a local instance's
    settings (`local_instance_settings`)."""
    import ray

    from aikd.runtime import local_instance_settings

    local_instance_settings()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory) -> str:
    """A small synthetic face set on local disk, shared by the tests that only read it."""
    from aikd.data.synth import SynthConfig, write_synthetic

    out = tmp_path_factory.mktemp("synth") / "faces"
    write_synthetic(str(out), SynthConfig(identities=12, samples_per_identity=10, seed=5), rows_per_shard=40)
    return str(out)


def _crash(*args, **kwargs):
    raise RuntimeError("driver killed")


@pytest.fixture(scope="session")
def fr_run(ray_local, tmp_path_factory):
    """One FR pretraining run on 2,000 synthetic faces, shared by every test that needs a model (built once for
    every worker); its driver is killed once after training and the job started again (it resumes from its
    checkpoint)."""
    from aikd.config import DataConfig, FRTrainConfig, Resources
    from aikd.data.synth import SynthConfig, write_synthetic
    from aikd.frtrain import run as frtrain_run
    from aikd.frtrain.run import run_fr_train

    def build(root):
        faces = str(root / "faces")
        write_synthetic(faces, SynthConfig(identities=100, samples_per_identity=20, seed=21))
        half = Resources(workers=2, cpus_per_worker=0.5)
        data = DataConfig(shards=[faces], image_size=64, split_by="subject_id", val_fraction=0.2,
                          misalignment=0.0, resources=half)
        cfg = FRTrainConfig(data=data, out=str(root / "model"), epochs=3, resources=half,
                            model_args={"dropout": 0.4}, checkpoint_every=10,
                            register={"name": "fr-test", "aliases": ["production"]})
        with pytest.MonkeyPatch.context() as patch:  # the driver dies after training, before the model is out
            patch.setattr(frtrain_run, "_copy", _crash)
            with pytest.raises(RuntimeError, match="driver killed"):
                run_fr_train(cfg)
        return cfg, run_fr_train(cfg)  # started again: resumes from its last checkpoint

    return built_once("fr_run", tmp_path_factory, build)


@pytest.fixture(scope="session")
def labelled_run(fr_run, tmp_path_factory):
    """The FR run's faces labelled by three teachers (serfiq, crfiqa, norm), built once for every worker."""
    from aikd.config import LabelConfig, Resources, TeacherSpec
    from aikd.label.run import run_label

    cfg, _ = fr_run

    def build(root):
        job = LabelConfig(shards=cfg.data.shards, out=str(root / "shards"),
                          resources=Resources(workers=2, cpus_per_worker=0.5), teachers=[
                              TeacherSpec(name="serfiq", options={"model": cfg.out, "passes": 30}),
                              TeacherSpec(name="crfiqa", options={"model": cfg.out}),
                              TeacherSpec(name="norm", options={"model": cfg.out}),
                          ])
        return job, run_label(job)

    return built_once("labelled_run", tmp_path_factory, build)


@pytest.fixture(scope="session")
def s3_run(labelled_run, fr_run, s3_server):
    """A 2-worker ZeRO-0 distillation with data, model and run storage in the local S3 bucket (30 steps);
    then the same run again, longer (40). The reliability suite reruns the first through faults."""
    from aikd.config import DataConfig, DistillConfig, EngineConfig, Resources, StudentConfig
    from aikd.distill.run import run_distill
    from aikd.storage import copy_tree, resolve

    job, _ = labelled_run
    cfg_fr, _ = fr_run
    root = f"s3://{BUCKET}/distill"
    copy_tree(resolve(job.out), resolve(f"{root}/labelled"))
    copy_tree(resolve(cfg_fr.out), resolve(f"{root}/fr_model"))
    half = Resources(workers=2, cpus_per_worker=0.5)
    data = DataConfig(shards=[f"{root}/labelled"], label="q_norm", image_size=64, val_fraction=0.1, resources=half)
    first = DistillConfig(name="zero0", storage=f"{root}/runs", data=data,
                          student=StudentConfig(weights=f"{root}/fr_model"),
                          engine=EngineConfig(zero_stage=0, micro_batch=32), epochs=2, max_steps=30, resources=half)
    summary_first = run_distill(first)
    second = first.model_copy(update={"max_steps": 40})
    return first, summary_first, run_distill(second)


@pytest.fixture(scope="session")
def report(fr_run, tmp_path_factory):
    """An evaluation of a teacher and an untrained student on 96 new synthetic faces, every condition."""
    from aikd.config import EvaluateConfig, FIQASpec, Resources
    from aikd.data.synth import SynthConfig, write_synthetic
    from aikd.evaluate.run import run_evaluate
    from aikd.models.student import create_student
    from aikd.models.weights import card_for, save_model

    cfg_fr, _ = fr_run
    root = tmp_path_factory.mktemp("eval")
    faces = str(root / "faces")
    write_synthetic(faces, SynthConfig(identities=12, samples_per_identity=8, seed=99))
    student = create_student("iresnet_tiny")
    save_model(student, str(root / "student"), card_for(student, "student"))
    cfg = EvaluateConfig(shards=[faces], out=str(root / "report"), fr_model=cfg_fr.out,
                         models=[FIQASpec(name="norm", teacher="norm", options={"model": cfg_fr.out}),
                                 FIQASpec(name="student", student=str(root / "student"))],
                         misalignment=[3.0], fmr=[1e-2], non_mated=5000,
                         ci_resamples=200, compare=[("student", "norm")],
                         resources=Resources(workers=2, cpus_per_worker=0.5))
    return cfg, run_evaluate(cfg)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict:
    """Raw photos as a user keeps them, `<subject>/<file>`, no landmarks: 12 synthetic portraits of 3 people, the
    astronaut (a real photo), a photo of two people, and a blank, a broken and a tiny image."""
    import cv2
    import numpy as np
    from skimage import data

    from aikd.data.synth import SynthConfig, generate_rows

    root = tmp_path_factory.mktemp("photos") / "photos"
    rows = list(generate_rows(SynthConfig(identities=3, samples_per_identity=4, seed=17, degraded_share=0.0)))
    for row in rows:
        (root / row["subject_id"]).mkdir(parents=True, exist_ok=True)
        (root / row["image_id"]).write_bytes(row["image"])
    (root / "astronaut").mkdir()
    cv2.imwrite(str(root / "astronaut" / "nasa.jpg"), data.astronaut()[:, :, ::-1])
    two = [cv2.imdecode(np.frombuffer(rows[k]["image"], np.uint8), cv2.IMREAD_COLOR) for k in (0, 5)]
    height = max(im.shape[0] for im in two)
    (root / "group").mkdir()
    cv2.imwrite(str(root / "group" / "two.jpg"),
                np.hstack([cv2.copyMakeBorder(im, 0, height - im.shape[0], 0, 0, cv2.BORDER_REPLICATE) for im in two]))
    (root / "other").mkdir()
    cv2.imwrite(str(root / "other" / "blank.png"), np.full((120, 160, 3), 128, np.uint8))
    (root / "other" / "broken.jpg").write_bytes(rows[0]["image"][:300])
    cv2.imwrite(str(root / "other" / "tiny.png"), np.full((10, 12, 3), 90, np.uint8))
    return {"root": str(root), "portraits": [r["image_id"] for r in rows], "group": "group/two.jpg",
            "real": "astronaut/nasa.jpg",
            "rejects": {"other/blank.png": "no face detected", "other/broken.jpg": "undecodable image",
                        "other/tiny.png": "image too small (12x10 px, less than 16 px a side)"}}


@pytest.fixture(scope="session")
def ingest_run(ray_local, photos, tmp_path_factory):
    """The photos ingested by detection: 4 partitions of 5 photos, one detector actor."""
    from aikd.config import IngestConfig, Resources
    from aikd.ingest.run import run_ingest

    cfg = IngestConfig(images=photos["root"], out=str(tmp_path_factory.mktemp("ingest") / "faces"),
                       images_per_shard=5, resources=Resources(workers=1, cpus_per_worker=0.5))
    return cfg, run_ingest(cfg)
