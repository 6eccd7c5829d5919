"""The job shell: every job kind runs through it, writes one summary shape and a tracked run with its final status."""

from __future__ import annotations

import json
import re
import shutil
from typing import ClassVar

import pytest
from mlflow import MlflowClient

from aikd.cli import build_parser
from aikd.config import JobSpec
from aikd.errors import AikdError
from aikd.job import SUMMARY_FILE, SUMMARY_KEYS, Job, Outcome, Shape, finished, result_line, run_job
from aikd.jobs import HELP, KINDS, job_kind
from aikd.lock import LOCK_FILE
from aikd.storage import resolve

USES_SHARED_RUNS = True  # RUNS below: each job kind's session run, asked for by name (conftest.py)


class ProbeSpec(JobSpec):
    kind: ClassVar[str] = "probe"

    out: str


def _shape(out: str, **kw) -> Shape:
    return Shape(resolve(out), "probe", inputs={"faces": "s3://in/faces"}, outputs={"out": out},
                 **({"rerun": "recompute"} | kw))


def _status(tracking_db: str, run_id: str) -> str:
    return MlflowClient(tracking_db).get_run(run_id).info.status


def test_a_job_writes_the_common_summary_keys_beside_its_own_and_finishes_its_run(ray_local, tracking_db, tmp_path,
                                                                                 capsys):
    cfg = ProbeSpec(out=str(tmp_path / "out"))

    def work(job: Job) -> Outcome:
        job.out.join("result.txt").write_text("done")
        return Outcome(counts={"rows": 3, "rejected": 1}, rejects={"undecodable image": 1}, fields={"answer": 42},
                       metrics={"quality": {"mean": 0.5}}, files=["result.txt"])

    summary = run_job(cfg, _shape(cfg.out), work)
    assert set(summary) == set(SUMMARY_KEYS) | {"answer"}
    assert finished(resolve(cfg.out)) == summary  # written under the output, as returned
    assert summary["job"] == "probe" and summary["spec"]["out"] == cfg.out
    assert summary["counts"] == {"rows": 3, "rejected": 1} and summary["rejects"] == {"undecodable image": 1}
    assert summary["inputs"] == {"faces": "s3://in/faces"} and summary["models"] == [] and summary["seconds"] >= 0
    run = MlflowClient(tracking_db).get_run(summary["mlflow_run"])
    assert run.info.status == "FINISHED" and run.data.tags["aikd.job"] == "probe"
    assert run.data.metrics["quality.mean"] == 0.5 and run.data.metrics["counts.rows"] == 3
    artifacts = {a.path for a in MlflowClient(tracking_db).list_artifacts(run.info.run_id)}
    assert {SUMMARY_FILE, "result.txt"} <= artifacts
    lines = capsys.readouterr().out.splitlines()  # a start line, and a result line naming the summary
    assert lines[0] == f"probe: started, writing {resolve(cfg.out).uri}"
    assert re.fullmatch(rf"probe: done in \d+ s \(rows 3, rejected 1\); rejected: undecodable image 1; "
                        rf"summary: {re.escape(resolve(cfg.out).join(SUMMARY_FILE).uri)}", lines[-1]), lines[-1]


def test_a_user_error_in_the_work_fails_the_run_and_writes_no_summary(ray_local, tracking_db, tmp_path):
    cfg = ProbeSpec(out=str(tmp_path / "out"))
    seen = {}

    def work(job: Job) -> Outcome:
        seen["run"] = job.tracker.run_id
        raise AikdError("no faces in s3://in/faces")

    with pytest.raises(AikdError, match="no faces"):  # unchanged: the CLI prints it as one line
        run_job(cfg, _shape(cfg.out), work)
    assert finished(resolve(cfg.out)) is None
    assert _status(tracking_db, seen["run"]) == "FAILED"


def test_a_finished_job_that_skips_finished_work_returns_its_summary_without_working(ray_local, tmp_path):
    cfg = ProbeSpec(out=str(tmp_path / "out"))
    first = run_job(cfg, _shape(cfg.out, skip_finished=True), lambda job: Outcome(counts={"rows": 1}))

    def must_not_run(job: Job) -> Outcome:
        raise AssertionError("a finished job worked again")

    again = run_job(cfg, _shape(cfg.out, skip_finished=True), must_not_run)
    assert again == first | {"skipped": True}


def test_a_resumable_job_continues_its_tracked_run_and_a_recomputed_one_opens_a_new_one(ray_local, tmp_path):
    cfg = ProbeSpec(out=str(tmp_path / "out"))
    runs = [run_job(cfg, _shape(cfg.out, rerun="resume"), lambda job: Outcome(counts={}))["mlflow_run"]
            for _ in range(2)]
    assert runs[0] == runs[1]
    other = ProbeSpec(out=str(tmp_path / "other"))
    fresh = [run_job(other, _shape(other.out), lambda job: Outcome(counts={}))["mlflow_run"] for _ in range(2)]
    assert fresh[0] != fresh[1]


def test_the_result_line_names_the_commonest_reject_reasons_and_counts_the_rest():
    summary = {"job": "label", "seconds": 12.4, "counts": {"rows": 10, "rejected": 7},
               "rejects": {"undecodable image": 1, "no face": 4, "too small": 1, "missing file": 1}}
    line = result_line(summary, "s3://b/out/_summary.json")
    assert line == ("label: done in 12 s (rows 10, rejected 7); rejected: no face 4, undecodable image 1, too small 1 "
                    "and 1 more reasons (in the summary); summary: s3://b/out/_summary.json")


def test_a_job_on_a_shared_output_holds_its_lock_while_it_works(ray_local, tmp_path):
    cfg = ProbeSpec(out=str(tmp_path / "out"))
    held = []
    run_job(cfg, _shape(cfg.out, lock=True), lambda job: held.append(job.out.join(LOCK_FILE).exists()) or Outcome({}))
    assert held == [True] and not resolve(cfg.out).join(LOCK_FILE).exists()


def test_job_fields_cannot_overwrite_the_summary_keys(ray_local, tmp_path):
    cfg = ProbeSpec(out=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"\['models'\]"):
        run_job(cfg, _shape(cfg.out), lambda job: Outcome(counts={}, fields={"models": []}))


def test_the_cli_has_a_command_for_every_job_kind_and_each_kind_its_spec_and_runner():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(KINDS) == set(HELP) and set(KINDS) <= set(commands)
    for kind in KINDS:
        job = job_kind(kind)
        assert job.kind == kind == job.spec.kind and callable(job.run)


@pytest.fixture(scope="session")
def experiment_run(labelled_run, fr_run, s3_run, tmp_path_factory):
    """The smallest experiment: one teacher, one seed, AI-KD only, on the session's default inputs. Its one
    distill run is the session's finished one (an experiment keeps finished runs), so it only evaluates."""
    from aikd.config import ExperimentConfig
    from aikd.experiment.run import run_experiment

    job, _ = labelled_run
    cfg_fr, _ = fr_run
    _, distilled, _ = s3_run  # teacher norm, like the experiment's
    root = tmp_path_factory.mktemp("experiment")
    default = root / "default"
    shutil.copytree(cfg_fr.data.shards[0], default / "faces")  # the embedded default's layout, built already
    shutil.copytree(cfg_fr.out, default / "fr_model")
    shutil.copytree(job.out, default / "labelled")
    finished_run = root / "out" / "distill" / "norm-ai-kd-s0"
    finished_run.mkdir(parents=True)
    (finished_run / SUMMARY_FILE).write_text(json.dumps(distilled))
    cfg = ExperimentConfig.model_validate({
        "name": "tiny", "root": str(root / "out"), "teachers": ["norm"], "seeds": [0],
        "default": {"root": str(default), "image_size": 64, "teachers": ["norm"], "teacher": "norm"},
        "variants": {"ai-kd": {}}, "eval_identities": 8, "eval_samples_per_identity": 4, "misalignment": [3.0],
        "fmr": [1e-2], "non_mated": 2000, "ci_resamples": 100})
    return cfg, run_experiment(cfg)


# each job kind's run in this session, by the fixture that made it
RUNS = {"ingest": "ingest_run", "fr-train": "fr_run", "label": "labelled_run", "distill": "s3_run",
        "evaluate": "report", "score": "score_run", "experiment": "experiment_run"}


@pytest.fixture(scope="session")
def score_run(report, tmp_path_factory):
    """The evaluation's faces scored with its student."""
    from aikd.config import ScoreConfig
    from aikd.score.run import run_score

    cfg, _ = report
    student = next(m.student for m in cfg.models if m.student)
    spec = ScoreConfig(shards=cfg.shards, out=str(tmp_path_factory.mktemp("score") / "scores"), backend="torch",
                       models=[{"name": "student", "model": student}])
    return spec, run_score(spec)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_job_kind_writes_the_same_summary_shape_and_a_finished_tracked_run(kind, request, tracked_in):
    if kind == "sweep":  # its sweep runs in subprocesses, killed and restarted: its module checks the same
        pytest.skip("the sweep's summary and run are checked where its sweeps run (tests/sweep/test_sweep_run.py)")
    summary = request.getfixturevalue(RUNS[kind])[1]  # each fixture gives (spec, summary, ...)
    assert set(SUMMARY_KEYS) <= set(summary) and summary["job"] == kind
    assert isinstance(summary["counts"], dict) and summary["counts"]
    assert all(isinstance(v, int) for v in summary["rejects"].values())
    written = finished(resolve(summary["outputs"][next(iter(summary["outputs"]))]))
    assert written is not None and set(SUMMARY_KEYS) <= set(written)
    assert _status(tracked_in(RUNS[kind]), summary["mlflow_run"]) == "FINISHED"
