"""A sweep's space is checked before any trial starts; a bad entry is one line naming it."""

import pytest

from aikd.config import Dimension, DistillConfig, SweepConfig
from aikd.errors import ConfigError
from aikd.spec import validate
from aikd.sweep.space import (
    check_space,
    contains,
    default_space,
    fit_concurrency,
    load_base,
    trial_config,
    trial_resources,
    tune_space,
)

BASE = {"name": "base", "storage": "/tmp/runs",
        "data": {"shards": ["/data/faces"], "label": "q_serfiq", "image_size": 64,
                 "resources": {"workers": 1, "cpus_per_worker": 0.5}},
        "student": {"weights": "/models/fr"}, "resources": {"workers": 2, "cpus_per_worker": 0.5}}
COLUMNS = ["q_crfiqa", "q_norm", "q_serfiq"]


def sweep(**fields) -> SweepConfig:
    return validate(SweepConfig, {"name": "s", "storage": "/tmp/sweeps", "base": BASE} | fields)


def space(**dims) -> dict:
    return {k.replace("__", "."): Dimension.model_validate(v) for k, v in dims.items()}


@pytest.mark.parametrize(("dim", "message"), [
    ({"type": "choice", "values": []}, "a choice needs at least one value"),
    ({"type": "uniform", "low": 6, "high": 1}, "low 6 > high 1"),
    ({"type": "loguniform", "low": 0, "high": 1}, "needs low > 0"),
    ({"type": "int", "low": 0.5, "high": 3}, "whole bounds"),
    ({"type": "uniform", "low": 1}, "needs low and high"),
    ({"type": "choice", "values": [1, 1]}, "must be distinct"),
])
def test_a_malformed_dimension_is_refused_naming_its_field(dim, message):
    with pytest.raises(ConfigError, match=message) as err:
        sweep(space={"data.misalignment": dim})
    assert "space.data.misalignment" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("entry", "message"), [
    ({"data.labl": {"type": "choice", "values": ["q_norm"]}}, "'data.labl': 'labl' is not a field of DataConfig"),
    ({"optim": {"type": "choice", "values": [1]}}, "'optim': a section"),
    ({"optim.head_lr.x": {"type": "uniform", "low": 0.1, "high": 1}}, "optim.head_lr is a value"),
    ({"resources.workers": {"type": "int", "low": 1, "high": 2}}, "not searchable"),
    ({"data.split_by": {"type": "choice", "values": ["image_id"]}}, "held-out identities"),
    ({"optim.train_last_k": {"type": "int", "low": -3, "high": 2}}, "value -3 makes an invalid distill spec: "
                                                                    "optim.train_last_k: Input should be greater"),
    ({"data.label": {"type": "choice", "values": ["q_serfiq", "q_magface"]}}, r"\['q_magface'\] not label columns"),
])
def test_a_space_entry_no_trial_could_run_is_refused_before_any_trial(entry, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_space(BASE, space(**{k.replace(".", "__"): v for k, v in entry.items()}), COLUMNS, [])
    assert "\n" not in str(err.value)


def test_start_with_points_must_lie_in_the_space():
    dims = space(data__label={"type": "choice", "values": ["q_serfiq", "q_norm"]},
                 data__misalignment={"type": "uniform", "low": 0, "high": 4})
    check_space(BASE, dims, COLUMNS, [{"data.label": "q_norm", "data.misalignment": 2.0}])
    with pytest.raises(ConfigError, match=r"start_with\[0\]: data.misalignment=9.0 lies outside"):
        check_space(BASE, dims, COLUMNS, [{"data.label": "q_norm", "data.misalignment": 9.0}])
    with pytest.raises(ConfigError, match=r"start_with\[0\]: give every searched field; missing \['data.label'\]"):
        check_space(BASE, dims, COLUMNS, [{"data.misalignment": 1.0}])
    with pytest.raises(ConfigError, match=r"start_with\[0\]: 'optim.head_lr' is not searched"):
        check_space(BASE, dims, COLUMNS, [{"optim.head_lr": 0.1}])


def test_the_default_space_searches_what_aikd_leaves_open():
    base = validate(DistillConfig, BASE)
    dims = default_space(base, COLUMNS)
    assert set(dims) >= {"data.misalignment", "data.label", "objective.consistency_target",
                         "objective.quality_weight", "optim.head_lr", "optim.train_last_k"}
    assert dims["data.label"].values == COLUMNS  # every teacher whose labels the shards carry
    assert dims["data.misalignment"].type == "uniform" and dims["data.misalignment"].high > 3.0 * 64 / 112
    check_space(BASE, dims, COLUMNS, [])  # every edge of the default makes a valid trial


def test_a_trial_is_the_base_with_its_parameters():
    cfg = trial_config(BASE, {"data.misalignment": 1.5, "optim.head_lr": 0.01}, name="t1", storage="/x")
    assert (cfg.data.misalignment, cfg.optim.head_lr, cfg.name, cfg.data.label) == (1.5, 0.01, "t1", "q_serfiq")


def test_tune_space_keeps_int_bounds_inclusive():
    dims = space(optim__train_last_k={"type": "int", "low": 0, "high": 3})
    domain = tune_space(dims)["optim.train_last_k"]
    assert (domain.lower, domain.upper) == (0, 4)  # Tune's randint excludes its upper bound
    assert contains(dims["optim.train_last_k"], 3) and not contains(dims["optim.train_last_k"], 2.5)


def test_concurrency_is_what_the_cluster_fits_of_one_trial():
    base = validate(DistillConfig, BASE)
    need = trial_resources(base, sweep().resources)
    assert need == {"CPU": pytest.approx(0.05 + 1.0 + 0.5), "GPU": 0.0}
    assert fit_concurrency(need, {"CPU": 2.0}) == 1
    assert fit_concurrency(need, {"CPU": 32.0}) == 20
    assert fit_concurrency(need, {"CPU": 1.0}) == 0
    gpu = validate(DistillConfig, BASE | {"resources": {"workers": 2, "cpus_per_worker": 4, "gpus_per_worker": 1}})
    assert fit_concurrency(trial_resources(gpu, sweep().resources), {"CPU": 64.0, "GPU": 8.0}) == 4
    pinned = validate(DistillConfig, BASE | {"resources": {"workers": 2, "custom": {"aikd_worker": 1}}})
    need = trial_resources(pinned, sweep().resources)
    assert need["aikd_worker"] == 2  # two labelled nodes hold one trial at a time
    assert fit_concurrency(need, {"CPU": 64.0, "aikd_worker": 2.0}) == 1


def test_sweep_spec_refuses_a_metric_against_its_direction():
    with pytest.raises(ConfigError, match="val_pauc_misaligned is better when lower: mode must be min"):
        sweep(mode="max")
    with pytest.raises(ConfigError, match="metric must be one of"):
        sweep(metric="val_accuracy")
    assert sweep(metric="val_spearman_misaligned").direction == "max"


def test_the_base_may_be_a_file_and_loses_its_register(tmp_path):
    import yaml

    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump({"job": "distill", **BASE, "register": {"name": "x"}}))
    data = load_base(sweep(base=str(path), fixed={"max_steps": 7}))
    assert data["max_steps"] == 7 and "register" not in data
    path.write_text(yaml.safe_dump({"job": "score", **BASE}))
    with pytest.raises(ConfigError, match="a sweep's base is a distill spec"):
        load_base(sweep(base=str(path)))
    with pytest.raises(ConfigError, match="fixed 'max_step': 'max_step' is not a field of DistillConfig"):
        load_base(sweep(fixed={"max_step": 7}))


def test_the_shipped_sweep_fits_two_cpus_and_searches_the_default_space():
    from aikd.config import EmbeddedDefault
    from aikd.spec import load_spec

    cfg = load_spec("jobs/sweep.yaml", SweepConfig)
    data = load_base(cfg)
    base = validate(DistillConfig, data)
    assert base.epochs == 1 and base.data.resources.workers == 1  # the sweep's fixed fields
    assert fit_concurrency(trial_resources(base, cfg.resources), {"CPU": 2.0}) == 1
    columns = [f"q_{t}" for t in EmbeddedDefault().teachers]
    check_space(data, default_space(base, columns), columns, [])
    assert cfg.metric == "val_pauc_misaligned" and cfg.register.name == "aikd-student"
