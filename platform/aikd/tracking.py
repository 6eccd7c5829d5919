"""Every job is an MLflow run: its spec as params, its metrics, its outputs, its lineage (docs/tracking.md).

The driver opens the run (:func:`job_run`) and closes it FINISHED, FAILED or KILLED;
rank 0 of a Ray Train job attaches to the same run by id (:meth:`Tracker.attach`) and
logs each validation's metrics by step. Jobs that resume (label, distill) keep the
run id under their output, so a restarted job continues its run instead of opening a
new one. Everything recorded passes through :func:`aikd.redact.redact` first.

The tracking URI is the spec's ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else a
SQLite file ``runs/mlflow.db`` with artifacts in ``runs/mlartifacts/`` (no server);
the registry lives at the same URI. A cluster names a tracking server every node
reaches.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aikd
from aikd.config import JobSpec, TrackingConfig
from aikd.console import say
from aikd.redact import redact
from aikd.storage import Location

DEFAULT_DB = Path("runs") / "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite file
RUN_FILE = "_mlflow_run.json"  # under a resumable job's output: the run to continue
MAX_PARAM = 6000  # MLflow's limit on a param value


def tracking_uri(cfg: TrackingConfig) -> str:
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{DEFAULT_DB.resolve()}"


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _sqlite_dir(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):  # sqlite:///relative.db or sqlite:////absolute.db
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return None


def experiment_id(mlflow_client, uri: str, name: str) -> str:
    """The experiment's id, created on first use; with SQLite its artifacts live beside the database."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db_dir = _sqlite_dir(uri)
    if db_dir is not None:
        db_dir.mkdir(parents=True, exist_ok=True)
    location = str(db_dir / ARTIFACTS_DIR / re.sub(r"[^A-Za-z0-9_.-]", "_", name)) if db_dir else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another job
        return mlflow_client.get_experiment_by_name(name).experiment_id


def flatten(value, prefix: str = "") -> dict:
    """Nested mappings as dotted keys (``data.resources.workers``) to their leaves (lists stay whole)."""
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def param_text(value) -> str:
    """A param's value as MLflow stores it: text, lists as JSON, at most MAX_PARAM characters."""
    return (json.dumps(value) if isinstance(value, (list, dict)) else str(value))[:MAX_PARAM]


def code_version() -> str:
    """aikd's version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(aikd.__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{aikd.__version__}+{commit}" if commit else aikd.__version__


def metric_key(*parts: str) -> str:
    """A metric or tag key from free text (model names): MLflow allows letters, digits, _-. /"""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-. /]", "_", p).strip() for p in parts)


class Tracker:
    """One MLflow run, logged to through the client (no global state: safe in Ray workers)."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.client = client(uri)

    @classmethod
    def attach(cls, ref: dict | None) -> Tracker | None:
        """The run a driver opened, from :attr:`ref` (None when tracking is off)."""
        return cls(ref["uri"], ref["run_id"]) if ref else None

    @property
    def ref(self) -> dict:
        return {"uri": self.uri, "run_id": self.run_id}

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """The numbers of ``metrics`` (nested mappings as dotted names); other values are left out."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step or 0) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def log_params(self, params: dict) -> list[str]:
        """Log flattened params; a resumed run keeps its first values and names the keys that changed."""
        from mlflow.entities import Param

        flat = {k: param_text(v) for k, v in flatten(redact(params)).items()}
        existing = self.client.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[start:start + 100])
        if changed:
            self.set_tags({"aikd.resumed_with_changed_params": ",".join(changed)[:MAX_PARAM]})
        return changed

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        clean = redact({k: v for k, v in tags.items() if v is not None})
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:MAX_PARAM]) for k, v in clean.items()])

    def log_dir(self, local: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, local, artifact_path)

    def log_outputs(self, out: Location, names: list[str], artifact_path: str | None = None) -> None:
        """Copy small output files (summary, report, plots) from any URI into the run's artifacts."""
        present = [n for n in names if out.join(n).exists()]
        if not present:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name in present:
                data = out.join(name).read_bytes()
                if name.endswith((".json", ".md", ".html", ".yaml", ".txt", ".csv")):
                    data = redact(data.decode()).encode()
                (Path(tmp) / name).write_bytes(data)
            self.log_dir(tmp, artifact_path)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def log_from_worker(tracker: Tracker | None, metrics: dict, step: int, job: str) -> None:
    """Metrics from a training worker: a tracking outage is reported, never the end of training."""
    if tracker is None:
        return
    try:
        tracker.log_metrics(metrics, step=step)
    except Exception as err:  # the checkpoint, not the metric, is what must not be lost
        say(f"{job}: warning: MLflow metrics of step {step} not logged ({type(err).__name__}: {err})")  # in a worker


def _lineage_tags(kind: str, inputs: dict[str, list[str] | str], outputs: dict[str, str]) -> dict:
    tags = {"aikd.job": kind, "aikd.code_version": code_version()}
    for name, uris in inputs.items():
        tags[f"aikd.input.{name}"] = ", ".join(uris) if isinstance(uris, list) else uris
    for name, uri in outputs.items():
        tags[f"aikd.output.{name}"] = uri
    return tags


def _resumable(state: Location, uri: str, mlflow_client) -> str | None:
    """The run id a resumed job continues: recorded under its output, at the same tracking URI, still there."""
    from mlflow.exceptions import MlflowException

    if not state.exists():
        return None
    saved = json.loads(state.read_text())
    if saved.get("uri") != redact(uri):
        return None
    try:
        return mlflow_client.get_run(saved["run_id"]).info.run_id
    except MlflowException:
        return None


@contextlib.contextmanager
def job_run(cfg: JobSpec, name: str, inputs: dict, outputs: dict[str, str],
            resume_under: Location | None = None, tags: dict | None = None) -> Iterator[Tracker | None]:
    """The job's MLflow run (None when the spec switches tracking off), closed with the job's outcome.

    ``resume_under``: the output of a resumable job; the run id is kept there and a
    restart continues that run. ``tags`` are added to the lineage tags (a sweep's trial
    names its parent run with ``mlflow.parentRunId``).
    """
    if not cfg.tracking.enabled:
        yield None
        return
    uri = tracking_uri(cfg.tracking)
    mlflow_client = client(uri)
    state = resume_under.join(RUN_FILE) if resume_under is not None else None
    run_id = _resumable(state, uri, mlflow_client) if state is not None else None
    if run_id is None:
        experiment = experiment_id(mlflow_client, uri, cfg.tracking.experiment or f"aikd-{cfg.kind}")
        run_id = mlflow_client.create_run(experiment, run_name=name).info.run_id
        if state is not None:
            state.write_json({"uri": redact(uri), "run_id": run_id})
    else:
        mlflow_client.update_run(run_id, status="RUNNING")
        print(f"{cfg.kind}: continuing MLflow run {run_id}", flush=True)
    tracker = Tracker(uri, run_id)
    tracker.set_tags(_lineage_tags(cfg.kind, inputs, outputs) | (tags or {}))
    tracker.log_params(cfg.model_dump(mode="json"))
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
