"""Bad specs and bad flags: one line naming the field (and the allowed values of a choice), exit 2, no Ray.

Every case runs the real CLI in-process (``aikd.cli.main``) with Ray made unusable: a
spec that got past validation would reach its job's ``ensure_ray`` and fail the test
there. One case runs ``python -m aikd`` to check the real exit status and stderr.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aikd.cli import main
from aikd.jobs import job_kind
from aikd.spec import load_spec
from minimal_specs import MINIMAL  # beside conftest.py

MISSING = object()  # the field is left out

TEACHERS = "crfiqa, external, norm, serfiq"
MODELS = "iresnet100, iresnet18, iresnet200, iresnet34, iresnet50, iresnet_small, iresnet_tiny"
PLAIN = "must be a plain name"

# (job, dotted field, bad value, what the line must also say): the line always names the field
CASES = [
    # fr-train
    ("fr-train", "epochs", "three", "valid integer"),
    ("fr-train", "epochs", 0, "greater than or equal to 1"),
    ("fr-train", "head", "sphereface", "'cosface' or 'arcface'"),
    ("fr-train", "model", "resnet9", MODELS),
    ("fr-train", "out", MISSING, "Field required"),
    ("fr-train", "epocs", 3, "did you mean 'epochs'"),
    ("fr-train", "data.split_by", "person", "'image_id' or 'subject_id'"),
    ("fr-train", "data.image_size", 8, "greater than or equal to 16"),
    ("fr-train", "data.colour", "rgb", "valid fields: batch_size, image_size"),
    ("fr-train", "resources.placement", "random", "'pack', 'spread' or 'strict_spread'"),
    ("fr-train", "resources.gpus_per_worker", -1, "greater than or equal to 0"),
    ("fr-train", "register.aliases", ["v1"], "not 'v<number>'"),
    ("fr-train", "tracking.enabled", "perhaps", "valid boolean"),
    # label
    ("label", "teachers.0.name", "faceqnet", TEACHERS),
    ("label", "teachers", [], "at least 1 item"),
    ("label", "teachers.0.label", "../q", PLAIN),
    ("label", "shards", "faces", "valid list"),
    ("label", "batch_size", 0, "greater than or equal to 1"),
    ("label", "resources.workers", 0, "greater than or equal to 1"),
    ("label", "teachers.0.optoins", {}, "did you mean 'options'"),
    # distill
    ("distill", "strategy", "horovod", "'deepspeed' or 'ddp'"),
    ("distill", "engine.precision", "fp8", "'fp32', 'bf16' or 'fp16'"),
    ("distill", "engine.zero_stage", 3, "0, 1 or 2"),
    ("distill", "objective.consistency_target", "moving", "'frozen' or 'shared'"),
    ("distill", "validation.select", "accuracy", "val_pauc_misaligned"),
    ("distill", "optim.warmup_fraction", 1.5, "less than or equal to 1"),
    ("distill", "student.backbone", "resnet9", MODELS),
    ("distill", "student", MISSING, "Field required"),
    ("distill", "data.label", "serfiq", "q_<teacher>"),
    ("distill", "max_steps", "many", "valid integer"),
    ("distill", "name", "../escape", PLAIN),
    ("distill", "bootstrap.identities", 1, "greater than or equal to 4"),
    ("distill", "bootstrap.teacher", "magface", "['serfiq', 'crfiqa', 'norm']"),
    ("distill", "data.resources.gpus_per_worker", 1, "set data.resources.gpus_per_worker: 0"),
    # evaluate
    ("evaluate", "mode", "adaptive", "'fixed' or 'reestimated'"),
    ("evaluate", "pair_quality", "max", "'min' or 'mean'"),
    ("evaluate", "models.0.teacher", "faceqnet", TEACHERS),
    ("evaluate", "models.0.colour", "red", "valid fields: name, options, student, teacher"),
    ("evaluate", "fmr", [2], "(0, 1)"),
    ("evaluate", "ci_level", 1.5, "less than 1"),
    ("evaluate", "models", MISSING, "Field required"),
    # score
    ("score", "backend", "tensorrt", "'auto', 'torch' or 'onnx'"),
    ("score", "alignment", "eyes", "'landmarks', 'box', 'aligned' or 'detect'"),
    ("score", "models.0.name", "../x", PLAIN),
    ("score", "decode.workers", 0, "greater than or equal to 1"),
    ("score", "images_per_file", "many", "valid integer"),
    # sweep
    ("sweep", "metric", "accuracy", "val_pauc_misaligned"),
    ("sweep", "mode", "up", "'min' or 'max'"),
    ("sweep", "trials", 0, "greater than or equal to 1"),
    ("sweep", "early_stop.reduction_factor", 1, "greater than 1"),
    ("sweep", "base", 5, "valid string or a valid dictionary"),
    ("sweep", "space", {"optim.head_lr": {"type": "normal", "low": 0.1, "high": 1}},
     "'uniform', 'loguniform', 'int' or 'choice'"),
    ("sweep", "name", "/abs/sweep", PLAIN),
    # experiment
    ("experiment", "default.teachers", ["faceqnet"], TEACHERS),
    ("experiment", "seeds", [], "at least 1 item"),
    ("experiment", "variants", {"../x": {}}, PLAIN),
    ("experiment", "ci_resamples", 10, "greater than or equal to 100"),
    ("experiment", "sweep.mode", "up", "'min' or 'max'"),
    ("experiment", "sweep.metric", "accuracy", "val_pauc_misaligned"),
    ("experiment", "default", MISSING, "Field required"),
]
# where the path the line names is deeper than the field set, or a check across a section's fields
NAMED_AS = {"space": "space.optim.head_lr.type", "default.teachers": "default.teachers.0",
            "bootstrap.teacher": "bootstrap: teacher 'magface'", "sweep.metric": "sweep: metric must be one of"}


def with_field(spec: dict, dotted: str, value) -> dict:
    """A copy of ``spec`` with one dotted field set (list items by index), or removed for MISSING."""
    out = copy.deepcopy(spec)
    node, *parents = out, *dotted.split(".")[:-1]
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    leaf = dotted.split(".")[-1]
    if value is MISSING:
        del node[leaf]
    else:
        node[leaf] = value
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``aikd argv``, whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, out: str, err: str, command: str) -> str:
    assert code == 2, err
    assert out == ""  # no summary: nothing ran
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"aikd {command}: error: ") and "Traceback" not in err, err
    return err


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("job", sorted(MINIMAL))
def test_each_minimal_spec_is_valid_so_each_case_fails_for_its_one_field(job, tmp_path):
    load_spec(write_spec(tmp_path, MINIMAL[job]), job_kind(job).spec)


@pytest.mark.parametrize(("job", "field", "value", "says"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_bad_field_is_one_line_naming_it_exit_2_and_no_ray(job, field, value, says, no_ray, capsys):
    spec = write_spec(no_ray, with_field(MINIMAL[job], field, value))
    err = one_error_line(*run_cli([job, spec], capsys), job)
    assert spec in err  # the file
    named = NAMED_AS.get(field, f"{field}:")
    assert named in err and says in err, err


@pytest.mark.parametrize("job", sorted(MINIMAL))
def test_a_spec_that_is_not_yaml_names_the_file_and_the_line(job, no_ray, capsys):
    spec = no_ray / "broken.yaml"
    spec.write_text("out: model\ndata: {shards: [faces\n")
    err = one_error_line(*run_cli([job, str(spec)], capsys), job)
    assert f"{spec}: not valid YAML" in err and "line 3" in err, err


@pytest.mark.parametrize("job", sorted(MINIMAL))
def test_a_spec_file_that_does_not_exist_is_named(job, no_ray, capsys):
    err = one_error_line(*run_cli([job, str(no_ray / "nowhere.yaml")], capsys), job)
    assert f"job spec not found: {no_ray / 'nowhere.yaml'}" in err


@pytest.mark.parametrize(("given", "says"), [("weights", "not a YAML job spec (not UTF-8 text)"),
                                             ("folder", "cannot read the job spec")])
def test_a_spec_path_that_is_a_binary_file_or_a_folder_is_named(given, says, no_ray, capsys):
    path = no_ray / "model"
    if given == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"PK\x03\x04\x14\x00\x00\x08\x08\x00\xff\xfe")  # a zip: what torch.save writes
    err = one_error_line(*run_cli(["distill", str(path)], capsys), "distill")
    assert f"{path}: {says}" in err, err


@pytest.mark.parametrize(("text", "says"), [
    ("- a list\n- of things\n", "a job spec is a mapping of fields, got list"),
    ("just words\n", "a job spec is a mapping of fields, got str"),
    ("job: distil\nname: n\n", "field 'job' must be one of ['distill', 'evaluate', 'experiment', 'fr-train', "
                               "'ingest', 'label', 'score', 'sweep'], got 'distil'"),
    ("name: n\n", "field 'job' must be one of"),
])
def test_aikd_run_names_the_job_field_or_the_shape_it_needs(text, says, no_ray, capsys):
    spec = no_ray / "spec.yaml"
    spec.write_text(text)
    err = one_error_line(*run_cli(["run", str(spec)], capsys), "run")
    assert says in err, err


@pytest.mark.parametrize(("override", "says"), [
    ("epochs=[1", "--set epochs: not a valid YAML value"),
    ("epochs", "--set expects key=value"),
    ("data.shards.x=1", "cannot set data.shards.x: 'x' is not an index of a list of 1 items"),
    ("epochs=-1", "epochs: Input should be greater than or equal to 1"),
])
def test_a_bad_override_is_one_line_naming_the_key(override, says, no_ray, capsys):
    spec = write_spec(no_ray, MINIMAL["fr-train"])
    err = one_error_line(*run_cli(["fr-train", spec, "--set", override], capsys), "fr-train")
    assert says in err, err


@pytest.mark.parametrize(("argv", "command", "says"), [
    (["distil", "spec.yaml"], "aikd", "invalid choice: 'distil' (choose from 'synth', 'ingest', 'fr-train'"),
    (["synth", "--out", "faces", "--identities", "many"], "aikd synth", "argument --identities: invalid int"),
    (["synth", "--out", "faces", "--identities", "0"], "aikd synth", "identities"),
    (["synth", "--identities", "3"], "aikd synth", "required: --out"),
    (["ingest", "spec.yaml", "--set"], "aikd ingest", "argument --set: expected one argument"),
    (["demo", "--identities", "lots"], "aikd demo", "argument --identities: invalid int"),
    (["models", "promote", "student", "3"], "aikd models promote", "required: alias"),
    (["distill"], "aikd distill", "required: spec"),
])
def test_bad_flags_are_one_line_naming_the_flag_and_the_choices(argv, command, says, no_ray, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"{command}: error: ") and says in err, err


def test_submit_refuses_a_bad_spec_before_it_reaches_a_cluster(no_ray, capsys, monkeypatch):
    import aikd.submit

    monkeypatch.setattr(aikd.submit, "submit", lambda *a, **k: pytest.fail("a bad spec was submitted"))
    spec = write_spec(no_ray, {"job": "distill"} | with_field(MINIMAL["distill"], "strategy", "horovod"))
    err = one_error_line(*run_cli(["submit", spec], capsys), "submit")
    assert "strategy: Input should be 'deepspeed' or 'ddp'" in err


def test_the_real_command_exits_2_with_one_stderr_line(tmp_path):
    spec = write_spec(tmp_path, {"job": "distill"} | with_field(MINIMAL["distill"], "engine.zero_stage", 3))
    proc = subprocess.run([sys.executable, "-m", "aikd", "run", spec], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"aikd run: error: {spec}: invalid DistillConfig: engine.zero_stage: "
                                        "Input should be 0, 1 or 2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no run dir, no tracking db
