"""Every job is an MLflow run: spec as params, lineage tags, outcome as status; resumable jobs continue it."""

import pytest
from mlflow import MlflowClient

from aikd.config import LabelConfig, TrackingConfig
from aikd.storage import resolve
from aikd.tracking import RUN_FILE, flatten, job_run, metric_key, param_text, tracking_uri


def _spec(tmp_path, **tracking) -> LabelConfig:
    return LabelConfig(shards=[str(tmp_path / "faces")], out=str(tmp_path / "out"),
                       teachers=[{"name": "norm", "options": {"model": "runs/fr"}}], tracking=tracking)


def test_the_tracking_uri_comes_from_the_spec_then_the_environment_then_runs(monkeypatch):
    assert tracking_uri(TrackingConfig(uri="http://mlflow:5000")) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    assert tracking_uri(TrackingConfig()) == "sqlite:////tmp/x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(TrackingConfig()).startswith("sqlite:///") and tracking_uri(TrackingConfig()).endswith(
        "runs/mlflow.db")


def test_specs_flatten_to_dotted_params():
    flat = flatten({"data": {"resources": {"workers": 2}, "shards": ["a", "b"]}, "label": None})
    assert flat == {"data.resources.workers": 2, "data.shards": ["a", "b"], "label": None}
    assert [param_text(v) for v in flat.values()] == ["2", '["a", "b"]', "None"]
    key = metric_key("pauc_0.2", "AI-KD student (serfiq)", "misaligned_3")
    assert key == "pauc_0.2.AI-KD student _serfiq_.misaligned_3"


def test_a_job_run_records_params_tags_metrics_and_status(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    cfg = _spec(tmp_path, uri=uri)
    with job_run(cfg, "out", inputs={"shards": cfg.shards}, outputs={"shards": cfg.out}) as tracker:
        tracker.log_metrics({"rows": 10, "serfiq.mean": 0.5, "skipped": "text"}, step=3)
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "out"
    assert run.data.params["teachers"].startswith('[{"name": "norm"') and run.data.params["batch_size"] == "256"
    assert run.data.tags["aikd.job"] == "label" and run.data.tags["aikd.input.shards"] == cfg.shards[0]
    assert run.data.metrics == {"rows": 10.0, "serfiq.mean": 0.5}
    experiment = MlflowClient(uri).get_experiment(run.info.experiment_id)
    assert experiment.name == "aikd-label" and experiment.artifact_location.startswith(str(tmp_path))


def test_a_failing_job_ends_its_run_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    with pytest.raises(ValueError), job_run(_spec(tmp_path, uri=uri), "out", {}, {}) as tracker:
        raise ValueError("boom")
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FAILED"


def test_a_resumed_job_continues_its_run_and_names_changed_params(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    out = resolve(tmp_path / "out")
    with job_run(_spec(tmp_path, uri=uri), "out", {}, {}, resume_under=out) as first:
        first.log_metrics({"rows": 5}, step=1)
    assert out.join(RUN_FILE).exists()
    cfg = _spec(tmp_path, uri=uri).model_copy(update={"batch_size": 64})
    with job_run(cfg, "out", {}, {}, resume_under=out) as second:
        second.log_metrics({"rows": 9}, step=2)
    assert second.run_id == first.run_id
    run = MlflowClient(uri).get_run(first.run_id)
    assert run.data.tags["aikd.resumed_with_changed_params"] == "batch_size"
    assert [m.value for m in MlflowClient(uri).get_metric_history(first.run_id, "rows")] == [5.0, 9.0]


def test_tracking_switched_off_records_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    with job_run(_spec(tmp_path, uri=uri, enabled=False), "out", {}, {}, resume_under=resolve(tmp_path)) as tracker:
        assert tracker is None
    assert not (tmp_path / "t.db").exists() and not (tmp_path / RUN_FILE).exists()
