"""The Model Registry on a real MLflow tracking server (SQLite backend, artifacts on the local S3 server).

One distillation run, shared by the tests: its student initialised from a registered FR
model by alias, trained with ZeRO stage 1, tracked on the server (credentials planted in
its URI and environment), its best student registered. Then: aliases, pulls, an
evaluation by alias, the ONNX export, concurrent registrations, and a grep for the
planted credentials.
"""

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from aikd.cli import main
from aikd.config import (
    DataConfig,
    DistillConfig,
    EngineConfig,
    EvaluateConfig,
    FIQASpec,
    RegisterConfig,
    Resources,
    StudentConfig,
    TrackingConfig,
)
from aikd.data.pipeline import aligned_views, decode_valid
from aikd.data.shards import shard_files
from aikd.distill.run import run_distill
from aikd.errors import ConfigError
from aikd.evaluate.run import run_evaluate
from aikd.models.weights import WEIGHTS_FILE, load_model, preprocess_of
from aikd.registry import ONNX_FILE, RegistryError, lookup, register, resolve_models
from aikd.storage import resolve
from aikd.tracking import Tracker, experiment_id

PLANTED_KEY_ID = "AKIAPLANTEDKEY000042"
PLANTED_SECRET = "pLaNtEd/SeCrEt+kEy/0123456789abcdefGHIJ"
HALF = Resources(workers=2, cpus_per_worker=0.5)


def _tracker(uri: str, name: str) -> Tracker:
    client = MlflowClient(uri)
    experiment = experiment_id(client, uri, "registry-tests")  # with SQLite: artifacts beside the database
    return Tracker(uri, client.create_run(experiment, run_name=name).info.run_id)


def _register_dir(uri: str, model_dir: str, name: str, aliases: list[str], onnx: bool = False) -> dict:
    return register(resolve(model_dir), RegisterConfig(name=name, aliases=aliases), _tracker(uri, name),
                    spec={"made_by": "test"}, tags={"origin": "test"}, description="test version", onnx=onnx)


@pytest.fixture(scope="module")
def server_run(mlflow_server, labelled_run, fr_run, tmp_path_factory, monkeypatch_module):
    """Distil from models:/fr-server@production with ZeRO-1, tracked on the server (a planted secret in its URI)."""
    job, _ = labelled_run
    cfg_fr, _ = fr_run
    fr = _register_dir(mlflow_server, cfg_fr.out, "fr-server", ["production"])
    monkeypatch_module.setenv("AWS_ACCESS_KEY_ID", PLANTED_KEY_ID)
    monkeypatch_module.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    authed = mlflow_server.replace("http://", f"http://aikd:{PLANTED_SECRET.replace('/', '')}@")
    root = tmp_path_factory.mktemp("registry")
    cfg = DistillConfig(
        name="registered", storage=str(root / "runs"), resources=HALF,
        data=DataConfig(shards=[job.out], label="q_norm", image_size=64, val_fraction=0.1, resources=HALF),
        student=StudentConfig(weights="models:/fr-server@production"),
        engine=EngineConfig(micro_batch=32, zero_stage=1), max_steps=12, tracking=TrackingConfig(uri=authed),
        register=RegisterConfig(name="student-server", aliases=["candidate"],
                                description=f"an operator pasted {PLANTED_SECRET} here"))
    return cfg, run_distill(cfg), fr


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_run_is_tracked_with_params_metrics_per_validation_and_artifacts(server_run, mlflow_server):
    cfg, summary, _ = server_run
    client = MlflowClient(mlflow_server)
    run = client.get_run(summary["mlflow_run"])
    assert run.info.status == "FINISHED" and run.info.run_name == "registered"
    assert run.data.params["data.label"] == "q_norm" and run.data.params["engine.micro_batch"] == "32"
    assert run.data.tags["aikd.job"] == "distill" and run.data.tags["aikd.output.run"].endswith("registered")
    history = client.get_metric_history(run.info.run_id, "val_quality_loss")
    assert sorted(m.step for m in history) == [h["step"] for h in summary["history"]]  # every validation, by step
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"_summary.json", "config.json", "model"} <= files
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")} == {
        "model.safetensors", "card.json", "spec.yaml", "model.onnx"}


def test_a_zero1_run_finishes_on_local_disk_with_its_stage_in_the_run_config(server_run):
    cfg, summary, _ = server_run
    assert summary["steps"] == 12 and summary["student"] is not None
    config = json.loads(resolve(cfg.storage).join(cfg.name, "config.json").read_text())
    assert config["engine"]["zero_stage"] == 1


def test_the_student_is_registered_with_lineage_tags_and_its_alias(server_run, mlflow_server):
    _, summary, _ = server_run
    registered = summary["registered"]
    assert registered["uri"] == f"models:/student-server/{registered['version']}"
    version = MlflowClient(mlflow_server).get_model_version("student-server", registered["version"])
    assert version.run_id == summary["mlflow_run"]
    assert version.tags["aikd.teacher"] == "q_norm" and version.tags["aikd.misalignment"] == "3 px"
    assert version.tags["aikd.init.student.weights"] == "models:/fr-server/1"
    assert "val.val_quality_loss" in version.tags and "model.onnx" in version.description
    assert lookup("models:/student-server@candidate", mlflow_server).version == registered["version"]


def test_student_initialisation_resolved_the_alias_and_says_what_it_got(server_run):
    cfg, summary, fr = server_run
    (ref,) = summary["models"]
    assert ref["field"] == "student.weights" and ref["uri"] == "models:/fr-server@production"
    assert (ref["name"], ref["version"]) == ("fr-server", fr["version"])
    # the server proxies its artifacts: the version was copied under the run for every worker to read
    assert ref["files"] == resolve(cfg.storage).join(cfg.name, "_models", "fr-server", fr["version"]).uri
    assert json.loads(resolve(cfg.storage).join(cfg.name, "_summary.json").read_text())["models"] == summary["models"]


def test_pulling_a_version_gives_bit_identical_weights(server_run, mlflow_server, tmp_path, capsys):
    cfg, summary, _ = server_run
    assert main(["models", "pull", "student-server@candidate", "--out", str(tmp_path / "pulled"),
                 "--tracking-uri", mlflow_server]) == 0
    pulled = (tmp_path / "pulled" / WEIGHTS_FILE).read_bytes()
    assert pulled == resolve(summary["student"]).join(WEIGHTS_FILE).read_bytes()
    assert json.loads(capsys.readouterr().out)["version"] == summary["registered"]["version"]


def test_promoting_moves_the_alias(server_run, mlflow_server, capsys):
    _, summary, _ = server_run
    first = summary["registered"]["version"]
    second = _register_dir(mlflow_server, summary["student"], "student-server", [])["version"]
    assert main(["models", "promote", "student-server", second, "candidate", "--tracking-uri", mlflow_server]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert (moved["previous_version"], moved["version"]) == (first, second)
    assert lookup("models:/student-server@candidate", mlflow_server).version == second
    assert main(["models", "promote", "student-server", first, "candidate", "--tracking-uri", mlflow_server]) == 0
    capsys.readouterr()
    assert main(["models", "show", "student-server", "--tracking-uri", mlflow_server]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {v["version"]: v["aliases"] for v in shown["versions"]} == {first: ["candidate"], second: []}
    assert main(["models", "list", "--tracking-uri", mlflow_server]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["student-server"]["aliases"] == {"candidate": first}
    assert main(["models", "show", "nobody@production", "--tracking-uri", mlflow_server]) == 2  # one line, no trace
    assert "aikd models: error: models:/nobody@production not found" in capsys.readouterr().err


def test_evaluation_resolves_registered_models_and_tags_the_student_version(server_run, mlflow_server, synth_shards,
                                                                             tmp_path):
    _, summary, fr = server_run
    cfg = EvaluateConfig(shards=[synth_shards], out=str(tmp_path / "report"), fr_model="models:/fr-server@production",
                         models=[FIQASpec(name="student", student="models:/student-server@candidate")],
                         misalignment=[3.0], box=False, fmr=[1e-2], non_mated=2000, resources=HALF,
                         tracking=TrackingConfig(uri=mlflow_server))
    result = run_evaluate(cfg)
    resolved = {m["field"]: m["resolved_uri"] for m in result["models"]}
    assert resolved == {"fr_model": f"models:/fr-server/{fr['version']}",
                        "models.0.student": summary["registered"]["uri"]}
    assert summary["registered"]["uri"] in resolve(result["report"]).read_text()
    tags = MlflowClient(mlflow_server).get_model_version("student-server", summary["registered"]["version"]).tags
    row = next(r for r in result["pauc"] if r["condition"] == "misaligned_3")
    assert float(tags["eval.pauc_0.2.misaligned_3.fmr0.01"]) == pytest.approx(row["pauc_0.2"], abs=1e-5)
    assert tags["eval.run"] == result["mlflow_run"]


def test_an_unknown_model_uri_is_one_clear_error(mlflow_server, tmp_path):
    with pytest.raises(RegistryError, match="models:/nobody@production not found in the registry"):
        lookup("models:/nobody@production", mlflow_server)
    cfg = EvaluateConfig(shards=["x"], out=str(tmp_path), fr_model="models:/fr-server/x1",
                         models=[FIQASpec(name="s", teacher="norm")], tracking=TrackingConfig(uri=mlflow_server))
    with pytest.raises(ConfigError, match="models:/<name>/<version> or models:/<name>@<alias>"):
        resolve_models(cfg, resolve(tmp_path))


def test_the_onnx_export_in_a_version_scores_like_the_torch_student(server_run, mlflow_server, synth_shards, tmp_path):
    import onnxruntime as ort

    _, summary, _ = server_run
    ref = lookup(summary["registered"]["uri"], mlflow_server)
    onnx = mlflow.artifacts.download_artifacts(artifact_uri=f"{ref.source}/{ONNX_FILE}", dst_path=str(tmp_path),
                                               tracking_uri=mlflow_server)
    student, card = load_model(summary["student"])
    shard = shard_files(synth_shards)[0]
    batch = pq.read_table(shard.path, filesystem=shard.fs).slice(0, 24).to_pydict()
    rows, images, landmarks, _ = decode_valid(batch, np.arange(24))
    crops = aligned_views(images, landmarks[rows], card.input_size)  # what a user's aligner hands over
    x = preprocess_of(student)(crops).contiguous()
    with torch.no_grad():
        expected = student.eval()(x)[1].numpy()
    got = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).run(["quality"], {"image": x.numpy()})[0]
    assert len(rows) > 20 and np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("where", ["server", "sqlite"])
def test_eight_concurrent_registrations_of_one_name_give_eight_versions(where, mlflow_server, fr_run, tmp_path):
    cfg_fr, _ = fr_run
    uri = mlflow_server if where == "server" else f"sqlite:///{tmp_path}/registry.db"
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda i: _register_dir(uri, cfg_fr.out, f"race-{where}", [])["version"], range(8)))
    assert sorted(int(v) for v in versions) == list(range(1, 9))


def test_no_planted_credential_appears_in_params_tags_or_artifacts(server_run, mlflow_server):
    _, summary, _ = server_run
    client = MlflowClient(mlflow_server)
    run = client.get_run(summary["mlflow_run"])
    version = client.get_model_version("student-server", summary["registered"]["version"])
    texts = [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(version.tags), version.description]
    assert "***" in run.data.params["tracking.uri"]  # the secret was there, and was masked
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=tmp, tracking_uri=mlflow_server)
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        assert len(files) >= 6
        texts += [p.read_bytes().decode("latin-1") for p in files]
    secret_in_uri = PLANTED_SECRET.replace("/", "")
    for text in texts:
        assert PLANTED_KEY_ID not in text and PLANTED_SECRET not in text and secret_in_uri not in text
