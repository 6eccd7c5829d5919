"""2-worker CPU distillation runs with DeepSpeed (the S3 one, `s3_run`, is shared with the reliability suite; the
ZeRO-1 run is the registry tests' shared run, tests/test_registry.py)."""

import yaml
from mlflow import MlflowClient

from aikd.config import DistillConfig
from aikd.distill.worker import SIDECAR
from aikd.models.weights import SPEC_FILE, load_model
from aikd.storage import resolve
from aikd.training import latest_checkpoint, read_json


def test_zero0_run_on_s3_writes_checkpoints_and_a_student(s3_run):
    cfg, summary, after_resume = s3_run
    run = resolve(cfg.storage).join(cfg.name)
    assert summary["steps"] == 30
    checkpoints = [f for f in run.list_files() if f.path.endswith("sidecar.json")]
    assert len(checkpoints) == 2  # keep_checkpoints: only the newest two remain (after both runs)
    # Ray Train's own files live under the job's output, beside the checkpoints (no local disk shared)
    assert all(f.parent().name.startswith("checkpoint_") and f.parent().parent().path == run.path
               for f in checkpoints)
    assert run.join("checkpoint_manager_snapshot.json").exists()
    assert summary["student"] == run.join("best").uri  # found without a scan of checkpoints
    student, card = load_model(summary["student"])
    assert card.kind == "student" and card.lineage["label"] == "q_norm"
    assert set(card.lineage["label_scaling"]) == {"mean", "std"}
    # best/ holds the EMA student of the lowest validation loss of the whole run
    assert card.lineage["metrics"]["val_quality_loss"] == after_resume["best_val_quality_loss"]


def test_the_best_student_holds_the_spec_that_made_it(s3_run):
    cfg, summary, _ = s3_run  # best/ was last written by the first run or by the resumed, longer one
    saved = DistillConfig.model_validate(yaml.safe_load(resolve(summary["student"]).join(SPEC_FILE).read_text()))
    assert saved in (cfg, cfg.model_copy(update={"max_steps": 40}))


def test_student_tracks_the_teacher_on_misaligned_views_better_than_the_initial_head(s3_run):
    _, summary, _ = s3_run
    initial = summary["history"][0]
    assert initial["initial"] is True and initial["step"] == 0
    best = max(h["val_spearman_misaligned"] for h in summary["history"][1:])
    assert best > initial["val_spearman_misaligned"] + 0.3
    assert summary["best_val_quality_loss"] < initial["val_quality_loss"]
    # what AI-KD is for, at every validation: the EDC pAUC of each view (frozen FR comparisons)
    assert all(0 <= h["val_pauc_misaligned"] <= 0.3 and 0 <= h["val_pauc_aligned"] <= 0.3 for h in summary["history"])


def test_starting_the_same_run_again_resumes_from_its_checkpoint(s3_run):
    cfg, first, second = s3_run
    assert second["steps"] == 40
    steps = [h["step"] for h in second["history"]]
    assert steps[: len(first["history"])] == [h["step"] for h in first["history"]]  # history carried over
    assert min(s for s in steps[len(first["history"]):]) > 30  # step count continued, no restart at 0
    assert second["consumed"] > first["consumed"]
    assert read_json(latest_checkpoint(resolve(cfg.storage).join(cfg.name)), SIDECAR)["step"] == 40


def test_runs_are_tracked_in_the_serverless_sqlite_default(s3_run, tracking_db):
    cfg, first, second = s3_run
    client = MlflowClient(tracking_db)  # MLFLOW_TRACKING_URI: no server, a SQLite file
    assert second["mlflow_run"] == first["mlflow_run"]  # the resumed run continued its MLflow run
    run = client.get_run(first["mlflow_run"])
    assert run.info.status == "FINISHED" and run.data.params["engine.zero_stage"] == "0"
    assert run.data.tags["aikd.resumed_with_changed_params"] == "max_steps"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_spearman_misaligned")]
    assert sorted(steps) == [h["step"] for h in second["history"]]
    assert "_summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
