"""Jobs on a Ray cluster of three nodes: a head and two workers started with `ray start` on this machine.

Every node is a `ray start --block` process in its own session with its own temp dir
(so each unpacks its own copy of the job's working dir), torn down by pid. Worker nodes
carry the custom resource ``aikd_worker`` (and ``node_<name>``), so a job can be kept
off the head. Data, checkpoints, runs, registry artifacts (through the tracking server)
and outputs all live in the local S3 bucket: the only thing the nodes share is S3.

Marker ``cluster``: under pytest-xdist the last scope handed out (tests/conftest.py); the nodes get none of
the worker's own Ray settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import psutil
import pyarrow.compute as pc
import pytest

from aikd.models.weights import load_model
from aikd.score.run import read_scores
from aikd.storage import resolve
from servers import free_port  # beside conftest.py

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.multinode]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
BUCKET = "aikd-test"  # the s3_server fixture's bucket
ON_WORKERS = ["resources.custom={aikd_worker: 0.5}"]  # keep a job's workers or actors off the head


class Node:
    """One Ray node: a `ray start --block` process and its children, in a session of their own."""

    def __init__(self, name: str, args: list[str], env: dict, tmp) -> None:
        self.name, self.log = name, open(tmp / f"node-{name}.log", "w")
        # Ray's socket paths must stay under 108 bytes: a short temp dir of the node's own
        self.temp = tempfile.mkdtemp(prefix=f"aikd-{name}-", dir="/tmp")
        self.proc = subprocess.Popen([RAY, "start", "--block", "--temp-dir", self.temp, *args],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def raylet_pid(self) -> int:
        pids = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True) if p.name() == "raylet"]
        assert len(pids) == 1, f"node {self.name}: raylets {pids}"
        return pids[0]

    def kill_raylet(self) -> None:
        """Preemption: the node's raylet dies at once; its workers follow it."""
        os.kill(self.raylet_pid(), signal.SIGKILL)

    def kill(self) -> None:
        """The node and every process it started, SIGKILLed at once (a test's cluster keeps nothing: a graceful
        stop took 9 s at the end of the suite); then its files go. Actors run in process groups of their own."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [*psutil.Process(self.proc.pid).children(recursive=True), psutil.Process(self.proc.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


@dataclass
class Cluster:
    env: dict
    address: str
    gcs: str
    tmp: object
    nodes: dict[str, Node] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)  # node id -> name of nodes stopped by a test

    def add_worker(self, name: str, wait: bool = True) -> None:
        self.nodes[name] = Node(name, ["--address", self.gcs, "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                                       "--dashboard-agent-listen-port", str(free_port()),
                                       "--object-store-memory", str(400 * 2**20), "--resources",
                                       json.dumps({"aikd_worker": 1, f"node_{name}": 1})], self.env, self.tmp)
        if wait:
            self.wait_for(lambda nodes: name in nodes)

    def api(self, path: str, **query) -> dict:
        """The dashboard's HTTP API with the cluster's token (no Ray client state in this process)."""
        url = f"{self.address}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with open(os.path.expanduser("~/.ray/auth_token")) as f:
            token = f.read().strip()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def state(self, kind: str, **filters) -> list[dict]:
        """Ray's state API over HTTP: nodes or actors, filtered by equality."""
        query = {"limit": 10_000, "detail": 1, "filter_keys": list(filters), "filter_predicates": ["="] * len(filters),
                 "filter_values": list(filters.values())}
        url = f"/api/v0/{kind}?" + urllib.parse.urlencode(query, doseq=True)
        return self.api(url)["data"]["result"]["result"]

    def job_id(self, submission: str) -> str | None:
        return self.api(f"/api/jobs/{submission}").get("job_id")

    def alive(self) -> dict[str, str]:
        """Alive nodes by name (head, a, b, ...) -> node id."""
        names = {}
        for n in self.state("nodes", state="ALIVE"):
            tagged = [k[5:] for k in n["resources_total"] if k.startswith("node_")]
            names["head" if n["is_head_node"] else tagged[0]] = n["node_id"]
        return names

    def wait_for(self, ready, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes.values():
                assert node.proc.poll() is None or node.name in self.dead.values(), \
                    f"node {node.name} exited: {(self.tmp / f'node-{node.name}.log').read_text()[-2000:]}"
            try:
                if ready(self.alive()):
                    return
            except Exception:  # the dashboard is still starting
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready: alive {self.alive()}")
            time.sleep(1)

    def actor_nodes(self, job_id: str, class_part: str) -> list[str]:
        """Names of the nodes that ran the job's actors of this class asking for ``aikd_worker``."""
        by_id = {v: k for k, v in self.alive().items()} | self.dead
        return sorted(by_id.get(a["node_id"], a["node_id"]) for a in self.state("actors", job_id=job_id)
                      if class_part in a["class_name"] and a["node_id"]  # never placed: no node
                      and _asks_for(a.get("required_resources") or {}, "aikd_worker"))

    def next_name(self) -> str:
        """A new worker's name: the letter after the last worker's."""
        return chr(ord(max(n for n in self.nodes if n != "head")) + 1)

    def preempt(self, name: str) -> None:
        self.dead[self.alive()[name]] = name
        self.nodes[name].kill_raylet()
        self.wait_for(lambda nodes: name not in nodes)


def _asks_for(required: dict, resource: str) -> bool:
    """In a placement group the resource is named per bundle (``aikd_worker_group_0_<pg>``)."""
    return any(k == resource or k.startswith(f"{resource}_group_") for k in required)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # a stopped node would first drain for up to 30 s (Ray's SIGTERM handling): a test's cluster needs none. A
    # killed node is declared dead after 3 failed health checks a second apart, not Ray's 5 three seconds apart
    # (15 s of waiting in each preemption test); a check still waits up to Ray's 10 s for a busy node's answer.
    # nothing of this process's own Ray settings (a pytest-xdist worker's local instance set some) reaches the nodes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= dict(RAY_AUTH_MODE="token", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    gcs, dashboard = f"127.0.0.1:{free_port()}", free_port()
    c = Cluster(env, f"http://127.0.0.1:{dashboard}", gcs, tmp)
    c.nodes["head"] = Node("head", ["--head", "--node-ip-address", "127.0.0.1", "--port", gcs.split(":")[1],
                                    "--num-cpus", "1", "--object-store-memory", str(400 * 2**20),
                                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                                    # the job agent's own port: Ray's default is taken by any other Ray here
                                    "--dashboard-agent-listen-port", str(free_port()),
                                    "--disable-usage-stats"], env, tmp)
    try:
        c.wait_for(lambda nodes: "head" in nodes)
        for name in ("a", "b"):  # started together
            c.add_worker(name, wait=False)
        c.wait_for(lambda nodes: {"a", "b"} <= set(nodes))
        yield c
    finally:
        for node in c.nodes.values():
            node.kill()


def _submit_args(c: Cluster, spec: str, overrides: list[str], job_id: str, env_vars: dict | None = None) -> list[str]:
    args = [RAY, "job", "submit", "--address", c.address, "--submission-id", job_id, "--working-dir", "."]
    if env_vars:
        args += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
    args += ["--", spec]
    for o in overrides:
        args += ["--set", o]
    return args


def submit(c: Cluster, spec: str, overrides: list[str], env_vars: dict | None = None) -> str:
    """Run a spec through `ray job submit` and wait; returns the Ray job id."""
    job = f"aikd-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(_submit_args(c, spec, overrides, job, env_vars), cwd=REPO, env=c.env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]  # the job's own status
    return c.job_id(job)


@pytest.fixture(scope="module")
def shared(cluster, mlflow_server):
    """Inputs on S3 built once on the cluster by the embedded default, and the overrides every job shares."""
    root = f"s3://{BUCKET}/multinode-{uuid.uuid4().hex[:8]}"
    common = [f"tracking.uri={mlflow_server}"]
    bootstrap = [f"bootstrap.root={root}/default", "bootstrap.identities=24", "bootstrap.samples_per_identity=6",
                 "bootstrap.fr_epochs=1", "bootstrap.serfiq_passes=10"]
    # 2 workers x micro-batch 8 over ~130 training faces: 8 steps an epoch, a checkpoint every 4; the run stops at
    # step 8, before the data of its 2 epochs runs out, so an uninterrupted run's figures are known: 8 steps, 128 rows
    distill = bootstrap + common + ON_WORKERS + [
        f"storage={root}/runs", "resources.placement=strict_spread", "engine.zero_stage=1",
        "engine.micro_batch=8", "optim.val_every=0.5", "epochs=2", "max_steps=8"]
    return root, common, bootstrap, distill


@pytest.fixture(scope="module")
def distilled(cluster, shared):
    """The cluster's one distillation (the embedded default built first, on the cluster): a worker node holding a
    Train worker dies after the run's first checkpoint and a new node joins. Its Ray job id, its summary, the nodes
    its Train workers held before the kill and its output."""
    root, _, _, distill = shared
    run = resolve(f"{root}/runs/spread")
    job, placed, _ = _preempted_job(cluster, "jobs/distill.yaml", distill + ["name=spread"], "RayTrainWorker",
                                    "distill.log", ready=run.join("checkpoint_manager_snapshot.json").exists)
    return job, json.loads(run.join("_summary.json").read_text()), placed, (cluster.tmp / "distill.log").read_text()


def test_distillation_runs_its_two_train_workers_on_two_nodes(distilled):
    _, summary, placed, _ = distilled
    assert placed == ["a", "b"]  # strict spread, off the head
    assert summary["run"].startswith("s3://")
    assert summary["registered"]["uri"].startswith("models:/aikd-student/")
    _, card = load_model(summary["student"])  # best/ on S3
    assert card.kind == "student" and card.lineage["label"] == "q_serfiq"


def test_a_preempted_node_costs_steps_since_the_checkpoint_not_the_run(cluster, distilled):
    """The run that lost a node resumed from its checkpoint and ends as an uninterrupted one does: its 8 steps,
    each on a global batch of 2 workers x 8 (a resume that lost or replayed samples would show in the count)."""
    job, summary, _, output = distilled
    assert re.search(r"^distill: resumed at step \d+ ", output, re.M), output[-3000:]
    assert summary["steps"] == summary["plan"]["total_steps"] == 8 and summary["consumed"] == 8 * 2 * 8
    workers = cluster.actor_nodes(job, "RayTrainWorker")
    assert len(set(workers) - {"a", "b"}) == 1  # the run moved on to the new node


def _wait(done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_sweep_runs_its_trials_on_the_cluster(cluster, shared, distilled):
    root, common, bootstrap, _ = shared
    submit(cluster, "jobs/sweep.yaml", common + [
        f"storage={root}/sweeps", "trials=2", "fixed.max_steps=4", f"fixed.bootstrap.root={root}/default",
        "fixed.resources.custom={aikd_worker: 0.5}",
        "metric=val_quality_loss"])  # 24 identities hold too few mated pairs out for a pAUC
    summary = json.loads(resolve(f"{root}/sweeps/default-sweep/_summary.json").read_text())
    assert summary["counts"]["trials"] == 2 and summary["counts"]["failed"] == 0
    assert summary["registered"]["uri"].startswith("models:/aikd-student/")


WHOLE_POOL = {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"}  # Ray Data starts streaming once all actors are up


@pytest.fixture(scope="module")
def gallery(shared) -> tuple[str, int]:
    """A gallery of 12 shards on S3 (12 work units, so both scoring actors get work)."""
    from aikd.data.synth import SynthConfig, write_synthetic

    uri = f"{shared[0]}/gallery"
    summary = write_synthetic(uri, SynthConfig(identities=40, samples_per_identity=6, seed=11), rows_per_shard=20)
    return uri, summary["rows"]


def _score_overrides(gallery: str, common: list[str], out: str) -> list[str]:
    # a model actor takes a whole worker node's aikd_worker: the two land on the two worker nodes
    # (and the stream waits for both: a small gallery could otherwise be done before the second starts)
    return common + [f"shards=[{gallery}]", f"out={out}", "resources.workers=2", "resources.custom={aikd_worker: 1}",
                     "resources.placement=spread", "decode.workers=2"]


def _preempted_job(cluster: Cluster, spec: str, overrides: list[str], class_part: str, log_name: str,
                   ready=lambda: True) -> tuple[str, list[str], set[str]]:
    """Submit a job; once ``ready()`` and its live ``class_part`` actors hold every worker node, kill the first of
    those nodes and add one; wait for the job to succeed. Returns its Ray job id, the nodes the actors held before
    the kill, and the worker nodes alive when the job started.

    The stream waits for the whole actor pool (``WHOLE_POOL``): a small input could otherwise be done before the
    second actor starts.
    """
    workers = set(cluster.alive()) - {"head"}
    job = f"aikd-{uuid.uuid4().hex[:8]}"
    with open(cluster.tmp / log_name, "w") as log:
        proc = subprocess.Popen(_submit_args(cluster, spec, overrides, job, WHOLE_POOL), cwd=REPO, env=cluster.env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: ready() or proc.poll() is not None, 600)
            assert proc.poll() is None, f"the job ended before it was ready to lose a node: see {log_name}"
            placed = _actors_on_worker_nodes(cluster, job, proc, class_part, len(workers))
            cluster.preempt(placed[0])
            cluster.add_worker(cluster.next_name())
            assert proc.wait(timeout=900) == 0, (cluster.tmp / log_name).read_text()[-4000:]
        finally:
            proc.kill()
    return cluster.job_id(job), placed, workers


@pytest.fixture(scope="module")
def scored(cluster, shared, distilled, gallery) -> tuple[str, list[str], set[str]]:
    """The gallery scored while a worker node holding a scoring actor dies and another joins (one job for the two
    tests below): its output, the nodes its scoring actors held before the kill, the worker nodes alive at its
    start."""
    root, common, _, _ = shared
    out = f"{root}/scores"
    _, placed, workers = _preempted_job(cluster, "jobs/score.yaml", _score_overrides(gallery[0], common, out), "Scorer",
                                        "score-preempted.log")
    return out, placed, workers


def test_gallery_scoring_puts_its_actors_on_both_worker_nodes(scored, gallery):
    out, placed, workers = scored
    summary = json.loads(resolve(f"{out}/_summary.json").read_text())
    counts = summary["counts"]
    assert counts["rows"] == gallery[1] == counts["rows_scored"] + counts["rejected"]
    assert summary["scored_with"][0]["uri"].startswith("models:/aikd-student/")  # resolved from @candidate
    assert len(placed) == len(set(placed)) == 2 and set(placed) == workers  # a scoring actor on each worker node


def test_a_preempted_node_loses_no_gallery_face(scored, gallery):
    """A worker node holding a scoring actor dies mid-job and another joins: every face scored exactly once."""
    out, _, _ = scored
    summary = json.loads(resolve(f"{out}/_summary.json").read_text())
    scores = read_scores(out)
    ids = scores.filter(pc.equal(scores["model"], summary["scored_with"][0]["name"]))["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) == summary["counts"]["rows_scored"] == gallery[1] - summary["counts"]["rejected"]
    assert summary["counts"]["rows_scored"] > 0.9 * gallery[1]


def _maybe(fn, *args):
    try:
        return fn(*args)
    except urllib.error.HTTPError:  # the job is not registered yet
        return None


def _actors_on_worker_nodes(cluster: Cluster, submission: str, proc, class_part: str, count: int) -> list[str]:
    """The worker nodes (sorted) of a running job's live ``class_part`` actors, once they are on ``count`` of them."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        job_id = _maybe(cluster.job_id, submission)
        if job_id:
            names = {v: k for k, v in cluster.alive().items()}
            held = [names.get(a["node_id"], "head") for a in cluster.state("actors", job_id=job_id, state="ALIVE")
                    if class_part in a["class_name"]]
            if len(set(held) - {"head"}) >= count:
                return sorted(held)
        time.sleep(0.2)
    raise AssertionError(f"{class_part} actors were not on {count} worker nodes before the job ended")


@pytest.fixture(scope="module")
def raw_photos(shared) -> tuple[str, int]:
    """96 raw photos on S3, `<person>/<photo>.jpg`, no landmarks (synthetic, some of them degraded)."""
    from aikd.data.synth import SynthConfig, generate_rows

    root = resolve(f"{shared[0]}/photos")
    rows = list(generate_rows(SynthConfig(identities=12, samples_per_identity=8, seed=23)))
    for row in rows:
        root.join(row["image_id"]).write_bytes(row["image"])
    return root.uri, len(rows)


def _ingest_overrides(photos: str, common: list[str], out: str) -> list[str]:
    # an ingest actor takes a whole worker node's aikd_worker: the two land on the two worker nodes
    return common + [f"images={photos}", f"out={out}", "images_per_shard=8", "resources.workers=2",
                     "resources.custom={aikd_worker: 1}", "resources.placement=spread"]


def _ingested(out: str, photos: int) -> tuple[dict, list[str]]:
    """The ingest's summary and its image ids; every photo is in once, as faces or as a reject."""
    from aikd.data.shards import read_rejects, read_shards

    summary = json.loads(resolve(f"{out}/_summary.json").read_text())
    ids = read_shards(out).column("image_id").to_pylist()
    rejected = read_rejects(out).column("image_id").to_pylist()
    found = {i.rsplit("#", 1)[0] for i in ids}
    assert len(ids) == len(set(ids)) == summary["counts"]["faces"] and not found & set(rejected)
    assert len(found) + len(rejected) == photos == summary["counts"]["images"]
    return summary, ids


@pytest.fixture(scope="module")
def ingested(cluster, shared, raw_photos) -> tuple[str, list[str], set[str]]:
    """The photos ingested while a worker node holding an ingest actor dies and another joins (one job for the two
    tests below): its output, the nodes its ingest actors held before the kill, the worker nodes alive at its
    start."""
    root, common, _, _ = shared
    out = f"{root}/faces"
    _, placed, workers = _preempted_job(cluster, "jobs/ingest.yaml", _ingest_overrides(raw_photos[0], common, out),
                                        "IngestActor", "ingest-preempted.log")
    return out, placed, workers


def test_ingest_detects_faces_with_its_actors_on_both_worker_nodes(ingested, raw_photos):
    out, placed, workers = ingested
    summary, ids = _ingested(out, raw_photos[1])
    assert len(ids) > 0.6 * raw_photos[1] and summary["detected"] is True
    assert len(placed) == len(set(placed)) == 2 and set(placed) == workers  # an ingest actor on each worker node


def test_a_preempted_node_loses_no_photo_and_stores_no_face_twice(ingested, raw_photos):
    """A worker node holding an ingest actor dies mid-job and another joins: every photo in exactly once."""
    _ingested(ingested[0], raw_photos[1])
