"""The embedded default is one set of numbers; the job specs and the demo refer to it."""

import pytest

from aikd.config import DistillConfig, EmbeddedDefault, FRTrainConfig, LabelConfig
from aikd.demo import demo_plan
from aikd.errors import ConfigError
from aikd.spec import load_spec, validate
from aikd.storage import resolve


def test_the_shipped_specs_take_their_inputs_from_the_default():
    default = EmbeddedDefault()
    fr = load_spec("jobs/fr_train.yaml", FRTrainConfig)
    assert (fr.out, fr.data.shards, fr.epochs) == (default.path("fr_model"), [default.path("faces")], default.fr_epochs)
    label = load_spec("jobs/label.yaml", LabelConfig)
    assert (label.shards, label.out) == ([default.path("faces")], default.path("labelled"))
    assert [t.name for t in label.teachers] == default.teachers
    distill = load_spec("jobs/distill.yaml", DistillConfig)
    assert distill.data.shards == [default.path("labelled")] and distill.student.weights == default.path("fr_model")
    assert distill.data.label == f"q_{default.teacher}" and distill.data.image_size == default.image_size
    assert distill.resources == default.resources == fr.resources == label.resources


def test_moving_the_root_moves_every_input_and_a_spec_field_still_wins(tmp_path):
    spec = validate(DistillConfig, {"name": "n", "storage": "s", "bootstrap": {"root": str(tmp_path / "d")},
                                    "data": {"misalignment": 6.0}})
    assert spec.data.shards == [resolve(str(tmp_path / "d")).join("labelled").uri]
    assert spec.data.misalignment == 6.0 and spec.data.val_fraction == 0.1  # the rest of data from the default
    assert spec.student.weights == resolve(str(tmp_path / "d")).join("fr_model").uri


def test_the_demo_uses_the_same_numbers():
    plan = demo_plan("runs/x")
    assert plan.default == EmbeddedDefault(root=resolve("runs/x").uri)
    assert plan.distill.data.shards == [plan.default.path("labelled")]
    assert plan.evaluate.fr_model == plan.default.path("fr_model")


def test_a_job_kind_without_a_default_stage_says_which_have_one():
    with pytest.raises(ConfigError, match="no 'score' stage; valid: fr-train, label, distill"):
        EmbeddedDefault().stage("score")
