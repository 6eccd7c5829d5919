import pytest
import torch
import yaml
from mlflow import MlflowClient

from aikd.config import DataConfig, FRTrainConfig
from aikd.errors import ConfigError
from aikd.frtrain.model import build_models
from aikd.frtrain.run import run_fr_train
from aikd.frtrain.worker import load_state, poly_schedule, save_checkpoint
from aikd.models.weights import SPEC_FILE, WEIGHTS_FILE, class_centres, load_model, read_card
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


def test_a_killed_fr_train_resumes_from_its_latest_checkpoint_not_from_step_0(fr_run):
    cfg, summary = fr_run  # its first start was killed after training, before the model was copied out
    assert summary["resumed_from_step"] == summary["train"]["steps"] > cfg.checkpoint_every


def test_the_model_directory_holds_the_spec_that_made_it(fr_run):
    cfg, _ = fr_run
    saved = yaml.safe_load(resolve(cfg.out).join(SPEC_FILE).read_text())
    assert FRTrainConfig.model_validate(saved) == cfg


def test_a_checkpoint_restores_model_head_optimizer_and_schedule(tmp_path):
    cfg = FRTrainConfig(data=DataConfig(shards=["x"], image_size=64, split_by="subject_id"), out="y", lr=0.1)
    parts = _trained(cfg, steps=3)
    state = {"step": 3, "consumed": 48, "world_size": 2, "config_hash": "h"}
    save_checkpoint(str(tmp_path), cfg, *parts, classes=["a", "b", "c"], state=state, metrics={})
    backbone, head, optimizer, schedule = _trained(cfg, steps=0)
    assert load_state(str(tmp_path), backbone, head, optimizer, schedule) == state
    for a, b in zip((*parts[0].parameters(), parts[1].weight), (*backbone.parameters(), head.weight), strict=True):
        assert torch.equal(a, b)
    assert schedule.get_last_lr() == parts[3].get_last_lr() and schedule.last_epoch == 3
    momentum = [s["momentum_buffer"] for s in optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(
        [s["momentum_buffer"] for s in parts[2].state_dict()["state"].values()], momentum, strict=True))


def _trained(cfg: FRTrainConfig, steps: int):
    backbone, head = build_models(cfg, 3)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=cfg.lr, momentum=cfg.momentum)
    schedule = poly_schedule(optimizer, total_steps=10)
    for _ in range(steps):
        loss = head(backbone(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return backbone, head, optimizer, schedule


def test_the_schedule_is_the_polynomial_decay_fr_train_always_had():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule, total, seen = poly_schedule(optimizer, total_steps=7), 7, []
    for _ in range(total + 2):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [0.1 * max(1.0 - step / total, 0.0) ** 2 for step in range(total + 2)]  # lr * (1 - step/total)^2
    assert seen == pytest.approx(expected, abs=1e-12)


def test_a_finished_model_is_skipped_and_keeps_no_ray_run_files(fr_run):
    cfg, summary = fr_run
    assert not resolve(cfg.out).join("_ray").exists()  # the model dir holds the model, its card and summary
    again = run_fr_train(cfg)
    assert again["skipped"] is True and again["verification"] == summary["verification"]


def test_the_model_is_registered_and_tracked_in_the_serverless_default(fr_run, tracked_in):
    cfg, summary = fr_run  # the spec says register: {name: fr-test, aliases: [production]}
    tracking_db = tracked_in("fr_run")  # the SQLite file of the session that ran it
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
