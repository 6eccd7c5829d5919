"""Untrusted input: files that would run code, specs that name code, names that leave their prefix, secrets.

A user hands aikd pickles, .pth files, model directories, YAML specs and names. None of
them may run code, write outside the job's output, or carry a credential into what a
job records. Each payload here is live: a control test shows that loading it the
unsafe way does run it (it creates a marker file), so "no marker" means "refused".
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aikd.cli import main
from aikd.config import DistillConfig, SweepConfig
from aikd.errors import AikdError
from aikd.models.registry import create_model
from aikd.models.weights import CARD_FILE, WEIGHTS_FILE, WeightsError, card_for, save_model

PLATFORM = Path(__file__).resolve().parents[2] / "platform" / "aikd"


class Touches:
    """Unpickling this runs a shell command that creates ``marker``: the proof that a load ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def yaml_payload(marker: Path) -> str:
    """A YAML value that, loaded the unsafe way, runs a shell command creating ``marker``."""
    return f"!!python/object/apply:os.system [{json.dumps('touch ' + shlex.quote(str(marker)))}]"


def cli_error(argv: list[str], capsys) -> str:
    """The one stderr line of a refused command (exit status 2, nothing on stdout)."""
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, (code, out, err)
    return err


def one_line(err: BaseException) -> str:
    text = str(err)
    assert isinstance(err, AikdError) and "\n" not in text, repr(err)
    return text


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------ 1. files that would run code
def test_the_planted_payloads_run_code_when_loaded_the_unsafe_way(tmp_path):
    pickle.loads(pickle.dumps(Touches(tmp_path / "pickle")))
    buffer = io.BytesIO()
    torch.save({"conv1.weight": Touches(tmp_path / "pth")}, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    yaml.unsafe_load(f"name: {yaml_payload(tmp_path / 'yaml')}")
    assert {p.name for p in tmp_path.iterdir()} == {"pickle", "pth", "yaml"}


@pytest.mark.parametrize("planted_in", ["--landmarks", "--quality"])
def test_ingest_aikd_refuses_a_data_pickle_that_would_run_code(planted_in, no_ray, capsys):
    marker = no_ray / "ran"
    plain = {"--landmarks": {"a.jpg": (np.zeros(4), np.zeros((5, 2)))}, "--quality": {"a.jpg": 0.5}}
    files = {}
    for flag, data in plain.items():
        files[flag] = no_ray / f"{flag[2:]}.pkl"
        files[flag].write_bytes(pickle.dumps({"a.jpg": Touches(marker)} if flag == planted_in else data))
    spec = no_ray / "ingest.yaml"
    spec.write_text(yaml.safe_dump({"job": "ingest", "images": str(no_ray), "landmarks": str(files["--landmarks"]),
                                    "quality": str(files["--quality"]), "out": str(no_ray / "out")}))
    err = cli_error(["ingest", str(spec)], capsys)
    assert f"{files[planted_in]}: refusing to load posix.system" in err
    assert not marker.exists() and not (no_ray / "out").exists()


def _distill(tmp_path: Path, weights: Path) -> DistillConfig:
    return DistillConfig(name="run", storage=str(tmp_path), data={"shards": ["x"], "label": "q_norm"},
                         student={"weights": str(weights), "backbone": "iresnet_tiny"})


def test_a_student_pth_that_would_run_code_is_refused_in_one_line(tmp_path):
    from aikd.distill.worker import build_student

    weights = tmp_path / "backbone.pth"
    torch.save({"state_dict": {"conv1.weight": Touches(tmp_path / "ran")}}, weights)
    with pytest.raises(WeightsError) as err:
        build_student(_distill(tmp_path, weights))
    assert "refused: not a plain tensor checkpoint" in one_line(err.value) and "posix.system" in str(err.value)
    assert "weights_only` set to `False`" not in str(err.value)  # no advice to load it the unsafe way
    assert not (tmp_path / "ran").exists()


def test_a_pickle_named_safetensors_is_refused_not_unpickled(tmp_path):
    from aikd.distill.worker import build_student

    weights = tmp_path / "backbone.safetensors"
    torch.save({"conv1.weight": Touches(tmp_path / "ran")}, weights)
    with pytest.raises(WeightsError) as err:
        build_student(_distill(tmp_path, weights))
    assert f"{weights}: not a safetensors file" in one_line(err.value)
    assert not (tmp_path / "ran").exists()


def _model_dir(root: Path) -> Path:
    model = create_model("iresnet_tiny")
    save_model(model, str(root), card_for(model, "backbone"))
    return root


def test_teacher_weights_that_are_a_pickle_are_refused(tmp_path):
    from aikd.teachers import create_teacher

    model = _model_dir(tmp_path / "fr")
    buffer = io.BytesIO()
    torch.save({"conv1.weight": Touches(tmp_path / "ran")}, buffer)
    (model / WEIGHTS_FILE).write_bytes(buffer.getvalue())  # the card stays: only the weights were swapped
    with pytest.raises(WeightsError) as err:
        create_teacher("norm", model=str(model))
    assert "not a safetensors file" in one_line(err.value)
    evil = tmp_path / "teacher.pth"
    evil.write_bytes(buffer.getvalue())
    with pytest.raises(WeightsError, match="no model card"):  # a teacher takes a model dir, never a .pth
        create_teacher("crfiqa", model=str(evil))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(("card", "says"), [
    ({"architecture": "os.system"}, "unknown model 'os.system'; valid: iresnet100"),
    ({"arguments": {"__class__": "os.system"}}, "bad arguments for model 'iresnet_tiny'"),
    ({"kind": "pickle"}, "not a model card: kind: Input should be 'backbone', 'student' or 'margin_head'"),
    ("{not json", "not a model card: not JSON"),
])
def test_a_model_card_cannot_name_code_and_a_bad_card_is_one_line(card, says, tmp_path):
    from aikd.models.weights import load_model

    model = _model_dir(tmp_path / "m")
    original = json.loads((model / CARD_FILE).read_text())
    (model / CARD_FILE).write_text(card if isinstance(card, str) else json.dumps(original | card))
    with pytest.raises(AikdError) as err:
        load_model(str(model))
    assert says in one_line(err.value)


def test_a_sweep_base_file_with_a_python_tag_runs_nothing(tmp_path):
    from aikd.sweep.space import load_base

    base = tmp_path / "base.yaml"
    base.write_text(f"name: {yaml_payload(tmp_path / 'ran')}\n")
    with pytest.raises(Exception):  # noqa: B017  (sweep/space.py lets PyYAML's error through: see the report)
        load_base(SweepConfig(name="s", storage=str(tmp_path), base=str(base)))
    assert not (tmp_path / "ran").exists()


def _call_name(node: ast.AST) -> str:
    """``torch.load`` for ``torch.load(...)``; '' where the callee is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _call_name(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword_is(call: ast.Call, name: str, value) -> bool:
    """Whether ``call`` passes ``name=value`` with that constant written out."""
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def _loader(call: ast.Call) -> str:
    return next((_call_name(k.value) for k in call.keywords if k.arg == "Loader"), "")


UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
                "dill.load", "dill.loads", "marshal.load", "marshal.loads", "shelve.open", "joblib.load",
                "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "eval", "exec",
                "compile", "__import__", "importlib.import_module", "import_module", "torch.jit.load"}


def test_no_module_loads_user_files_with_a_loader_that_can_run_code():
    """The audit of every load site, kept: torch.load only with weights_only=True, yaml only safe, no pickle
    outside the restricted unpickler, no eval/exec/import by name (code names components; specs only name them)."""
    found = []
    for path in sorted(PLATFORM.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "marshal", "importlib", "dill"):
                # importlib.metadata only reads an installed package's file list; it imports nothing by name
                if not (node.module == "importlib" and {a.name for a in node.names} <= {"metadata"}):
                    found.append(f"{path.name}: from {node.module} import ...")
            if not isinstance(node, ast.Call):
                continue
            name, where = _call_name(node.func), f"{path.relative_to(PLATFORM)}:{node.lineno}"
            if name == "torch.load" and not _keyword_is(node, "weights_only", True):
                found.append(f"{where}: torch.load without weights_only=True")
            elif name == "yaml.load" and _loader(node) not in ("yaml.SafeLoader", "yaml.CSafeLoader"):
                found.append(f"{where}: yaml.load without a safe Loader")
            elif name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False):
                found.append(f"{where}: {name} that may unpickle")
            elif name in UNSAFE_CALLS:
                found.append(f"{where}: {name}")
    assert found == []


# ------------------------------------------------------------------------ 2. specs that name code
@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """An importable module that creates a marker when imported or called: a spec naming it must do neither."""
    folder = tmp_path / "site"
    folder.mkdir()
    marker = tmp_path / "imported"
    (folder / "aikd_planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef run(*a, **k):\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    yield marker
    sys.modules.pop("aikd_planted", None)


NAMING_CODE = ["aikd_planted.run", "aikd_planted:run", "os.system", "builtins.eval"]
# (job, field, spec): a component field given a dotted path; the registry answers with its names, never imports
COMPONENT_FIELDS = [
    ("fr-train", "model", {"data": {"shards": ["f"], "split_by": "subject_id"}, "out": "o"}),
    ("fr-train", "head", {"data": {"shards": ["f"], "split_by": "subject_id"}, "out": "o"}),
    ("distill", "student.backbone", {"name": "r", "storage": "s", "data": {"shards": ["f"], "label": "q_norm"},
                                     "student": {"weights": "w.pth"}}),
    ("distill", "strategy", {"name": "r", "storage": "s", "data": {"shards": ["f"], "label": "q_norm"},
                             "student": {"weights": "w.pth"}}),
    ("label", "teachers.0.name", {"shards": ["f"], "out": "o", "teachers": [{"name": "norm"}]}),
    ("evaluate", "models.0.teacher", {"shards": ["f"], "out": "o", "fr_model": "m",
                                      "models": [{"name": "q", "teacher": "norm"}]}),
    ("experiment", "default.teachers.0", {"name": "e", "root": "r", "teachers": ["norm"], "variants": {"ai-kd": {}},
                                          "default": {"teachers": ["norm"], "teacher": "norm"}}),
]


def _set(spec: dict, dotted: str, value) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(spec))
    node, *keys = spec, *dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = value
    return spec


@pytest.mark.parametrize("code", NAMING_CODE)
@pytest.mark.parametrize(("job", "field", "spec"), COMPONENT_FIELDS, ids=[f"{j}:{f}" for j, f, _ in COMPONENT_FIELDS])
def test_a_component_field_naming_code_is_refused_and_nothing_is_imported(job, field, spec, code, planted_module,
                                                                          no_ray, capsys):
    path = no_ray / "spec.yaml"
    path.write_text(yaml.safe_dump(_set(spec, field, code)))
    err = cli_error([job, str(path)], capsys)
    assert f"{field}: " in err and ((code in err and "valid: " in err) or "Input should be " in err), err
    assert not planted_module.exists() and "aikd_planted" not in sys.modules


@pytest.mark.parametrize("tag", ["!!python/object/apply:aikd_planted.run []", "!!python/name:aikd_planted.run",
                                 "!!python/module:aikd_planted", "!!python/object/new:aikd_planted.run []", "OS"])
@pytest.mark.parametrize("how", ["spec", "run", "override"])
def test_a_yaml_tag_that_builds_python_objects_is_refused_before_anything_runs(tag, how, planted_module, no_ray,
                                                                               capsys):
    tag = yaml_payload(no_ray / "ran") if tag == "OS" else tag
    spec = {"name": "r", "storage": "s", "data": {"shards": ["f"], "label": "q_norm"}, "student": {"weights": "w"}}
    path = no_ray / "spec.yaml"
    text = "job: distill\n" + yaml.safe_dump(spec)
    path.write_text(text if how == "override" else text.replace("name: r", f"name: {tag}"))
    argv = {"spec": ["distill", str(path)], "run": ["run", str(path)],
            "override": ["distill", str(path), "--set", f"name={tag}"]}[how]
    err = cli_error(argv, capsys)
    assert "YAML tags that build Python objects are refused" in err, err
    assert not planted_module.exists() and "aikd_planted" not in sys.modules and not (no_ray / "ran").exists()


# ------------------------------------------------------------------------ 3. names that would leave the prefix
ESCAPES = ["../escape", "ABS", "a/b", "..", ".", ".hidden", "a\\..\\b"]


def _name_cases() -> list[tuple]:
    distill = {"storage": "prefix", "data": {"shards": ["f"], "label": "q_norm"}, "student": {"weights": "w"}}
    frtrain = {"data": {"shards": ["f"], "split_by": "subject_id"}, "out": "prefix/model"}
    cases = [("distill", "name", distill | {"name": None}, bad) for bad in ESCAPES]  # run dir <storage>/<name>
    cases += [("sweep", "name", {"storage": "prefix", "base": "b.yaml", "name": None}, "../escape"),
              ("experiment", "name", {"root": "prefix", "default": {}, "variants": {"a": {}}, "name": None}, ".."),
              ("experiment", "variants", {"name": "e", "root": "prefix", "default": {}, "variants": None},
               "../../escape"),  # runs go to <root>/distill/<teacher>-<variant>-s<seed>
              ("score", "models.0.name", {"shards": ["f"], "out": "prefix", "models": [{"model": "m"}]}, "../x"),
              ("label", "teachers.0.label", {"shards": ["f"], "out": "prefix", "teachers": [{"name": "norm"}]},
               "../x"),
              ("distill", "register.name", distill | {"name": "r", "register": {}}, "../escape"),
              ("fr-train", "register.name", frtrain | {"register": {}}, "/escape")]
    return cases


@pytest.mark.parametrize(("job", "field", "spec", "bad"), _name_cases(),
                         ids=[f"{c[0]}:{c[1]}={c[3]}" for c in _name_cases()])
def test_a_name_that_would_leave_the_output_prefix_is_refused_and_nothing_is_written(job, field, spec, bad, no_ray,
                                                                                     capsys):
    bad = str(no_ray / "escape") if bad == "ABS" else bad
    spec = _set(spec, field, {bad: {}} if field == "variants" else bad)
    (no_ray / "spec.yaml").write_text(yaml.safe_dump(spec))
    before = listing(no_ray)
    err = cli_error([job, "spec.yaml"], capsys)
    named = "variants: variant names" if field == "variants" else f"{field}: must be a plain name"
    assert named in err and "(letters, digits, . _ -, not starting with '.')" in err and repr(bad) in err, err
    assert listing(no_ray) == before and not (no_ray / "escape").exists()


@pytest.mark.parametrize("name", ["default-serfiq", "r100.v2", "_tmp", "A_1", "run..2"])
def test_plain_names_stay_valid(name):
    assert DistillConfig(name=name, storage="s", data={"shards": ["f"], "label": "q_norm"},
                         student={"weights": "w"}).name == name


def test_a_registry_name_that_is_not_plain_is_copied_under_models_and_never_shares_a_copy(tmp_path, monkeypatch):
    from aikd import registry
    from aikd.storage import resolve

    written = []
    monkeypatch.setattr(registry, "download", lambda ref, uri, dest: written.append(dest.path))
    out = resolve(str(tmp_path / "job"))
    for name in ["..", ".", "a b", "a_b", ".hidden", "x/../../y"]:  # MLflow allows more than plain names
        registry.materialize(registry.ModelRef(name, "1", "mlflow-artifacts:/m"), "sqlite:///unused.db", out)
    models = tmp_path / "job" / registry.MODELS_DIR
    for path in written:
        assert Path(path).parent.parent == models and Path(path).name == "1", path
        assert Path(path).resolve().is_relative_to(models.resolve()) and not Path(path).parent.name.startswith(".")
    assert len(set(written)) == len(written)


# ------------------------------------------------------------------------ 4. credentials
def test_a_user_error_line_masks_the_credentials_it_quotes(no_ray, capsys, monkeypatch):
    password, token = uuid.uuid4().hex, uuid.uuid4().hex
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    (no_ray / "spec.yaml").write_text(f"job: {token}\n")  # the error quotes the spec's URI and its job field
    err = cli_error(["run", f"file://plantuser:{password}@{no_ray / 'spec.yaml'}"], capsys)
    assert f"file://***@{no_ray / 'spec.yaml'}: field 'job' must be one of" in err and "got '***'" in err, err
    assert password not in err and token not in err


PLANTED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(scope="module")
def secrets_job(synth_shards, tmp_path_factory):
    """One small fr-train run as a CLI process (log, card, tracked params, registered version, summary with its
    verification report), given credentials in its environment, in a data URI's user info and query, and in
    the registered version's description. The job reads only local files, so the planted keys are never used."""
    root = tmp_path_factory.mktemp("secrets")
    secret = {k: f"{k.split('_')[0].lower()}{uuid.uuid4().hex[:16]}" for k in PLANTED_ENV}
    secret |= {"uri_password": uuid.uuid4().hex, "uri_query": uuid.uuid4().hex, "description": uuid.uuid4().hex}
    spec = {"data": {"shards": [f"file://plantuser:{secret['uri_password']}@{synth_shards}"
                                f"?secret_key={secret['uri_query']}"],
                     "image_size": 64, "split_by": "subject_id", "val_fraction": 0.2, "misalignment": 0.0,
                     "resources": {"workers": 1, "cpus_per_worker": 0.5}},
            "out": str(root / "model"), "epochs": 1, "batch_size": 16,
            "resources": {"workers": 1, "cpus_per_worker": 1},
            "register": {"name": "secrets-check",
                         "description": f"docs: https://wiki.example/x?access_token={secret['description']}"}}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    ray_tmp = tempfile.mkdtemp(prefix="aikd-sec-", dir="/tmp")  # Ray's session logs; short: socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {k: secret[k] for k in PLANTED_ENV} | {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow/mlflow.db",
                                                  "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "aikd", "fr-train", str(root / "spec.yaml"), "--json"], env=env,
                          cwd=root, capture_output=True, text=True, timeout=300)
    (root / "stdout.log").write_text(proc.stdout)
    (root / "stderr.log").write_text(proc.stderr)
    yield {"proc": proc, "root": root, "ray": Path(ray_tmp), "secret": secret, "faces": synth_shards}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_secrets_job_recorded_everything_it_was_given_with_credentials_masked(secrets_job):
    proc, root = secrets_job["proc"], secrets_job["root"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((root / "model" / CARD_FILE).read_text())
    assert card["lineage"]["data"] == [f"file://***@{secrets_job['faces']}?secret_key=***"]
    db = sqlite3.connect(root / "mlflow" / "mlflow.db")
    params = dict(db.execute("select key, value from params"))
    assert params["data.shards"].startswith('["file://***@') and params["register.description"].endswith("=***")
    (description,) = db.execute("select description from model_versions").fetchone()
    assert "access_token=***" in description
    assert '"verification"' in proc.stdout and "registered models:/secrets-check/1" in proc.stdout


def test_no_planted_credential_appears_in_any_file_log_or_record_of_the_job(secrets_job):
    root, ray_tmp, secret = secrets_job["root"], secrets_job["ray"], secrets_job["secret"]
    files = [p for p in [*root.rglob("*"), *ray_tmp.rglob("*")] if p.is_file() and p.name != "spec.yaml"]
    assert any(p.suffix == ".log" and "session_" in str(p) for p in files)  # Ray's own logs are searched too
    assert any(p.name == "mlflow.db" for p in files) and any(p.name == CARD_FILE for p in files)
    leaks = [f"{name} in {path}" for path in files for name, value in secret.items()
             if value.encode() in path.read_bytes()]
    assert leaks == []
