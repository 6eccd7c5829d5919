import pytest
from mlflow import MlflowClient

from aikd.config import DataConfig, FRTrainConfig
from aikd.errors import ConfigError
from aikd.frtrain.run import run_fr_train
from aikd.models.weights import WEIGHTS_FILE, class_centres, load_model, read_card
from aikd.registry import lookup
from aikd.spec import load_spec
from aikd.storage import resolve


def test_fr_training_improves_held_out_verification(fr_run):
    cfg, summary = fr_run
    trained, untrained = summary["verification"], summary["verification_untrained"]
    assert trained["identities"] >= 10 and trained["non_mated_pairs"] > 10_000
    assert trained["tar_at_far_0.001"] > untrained["tar_at_far_0.001"] + 0.2
    assert trained["mean_non_mated_score"] < untrained["mean_non_mated_score"]
    assert summary["train"]["steps"] > 0


def test_fr_training_writes_backbone_and_class_centres(fr_run):
    cfg, summary = fr_run
    model, card = load_model(cfg.out)
    assert card.kind == "backbone" and card.architecture == "iresnet_tiny" and card.input_size == 64
    centres, classes = class_centres(cfg.out)
    assert centres.shape == (summary["classes"], 512) and len(classes) == summary["classes"]
    assert read_card(cfg.out).lineage["head"] == "cosface"


def test_a_finished_model_is_skipped_and_keeps_no_ray_run_files(fr_run):
    cfg, summary = fr_run
    assert not resolve(cfg.out).join("_ray").exists()  # the model dir holds the model, its card and summary
    again = run_fr_train(cfg)
    assert again["skipped"] is True and again["verification"] == summary["verification"]


def test_the_model_is_registered_and_tracked_in_the_serverless_default(fr_run, tracking_db):
    cfg, summary = fr_run  # the spec says register: {name: fr-test, aliases: [production]}
    ref = lookup("models:/fr-test@production", tracking_db)
    assert summary["registered"]["uri"] == ref.uri
    # artifacts lie on disk beside the SQLite file: jobs read the version in place, bit for bit
    assert resolve(ref.source).join(WEIGHTS_FILE).read_bytes() == resolve(cfg.out).join(WEIGHTS_FILE).read_bytes()
    client = MlflowClient(tracking_db)
    run = client.get_run(summary["mlflow_run"])
    assert run.info.status == "FINISHED" and run.data.params["model"] == "iresnet_tiny"
    assert run.data.metrics["verification.tar_at_far_0.001"] == summary["verification"]["tar_at_far_0.001"]
    losses = client.get_metric_history(run.info.run_id, "train_loss")  # rank 0, every log_every steps
    assert len(losses) == summary["train"]["steps"] // cfg.log_every >= 1
    assert [m.step for m in losses] == [cfg.log_every * (i + 1) for i in range(len(losses))]


def test_fr_spec_must_hold_out_identities():
    with pytest.raises(ValueError, match="split_by: subject_id"):
        FRTrainConfig(data=DataConfig(shards=["x"]), out="y")


def test_the_shipped_spec_validates_and_typos_name_the_field(tmp_path):
    cfg = load_spec("jobs/fr_train.yaml", FRTrainConfig, {"epochs": 2})
    assert cfg.epochs == 2 and cfg.data.split_by == "subject_id" and cfg.out.endswith("runs/default/fr_model")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {shards: [x], split_by: subject_id}\nout: y\nepocs: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid FRTrainConfig: epocs: Extra inputs"):
        load_spec(str(bad), FRTrainConfig)
