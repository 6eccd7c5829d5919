"""One Resources section in every job spec: what each worker or actor asks Ray for."""

import pytest

from aikd.actor_pool import remote_args
from aikd.config import (
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    FRTrainConfig,
    LabelConfig,
    Resources,
    load_spec,
    validate,
)
from aikd.errors import ConfigError
from aikd.runtime import train_device
from aikd.training import scaling_config

MINIMAL = {
    "fr-train": (FRTrainConfig, {"data": {"shards": ["x"], "split_by": "subject_id"}, "out": "y"}),
    "label": (LabelConfig, {"shards": ["x"], "out": "y", "teachers": [{"name": "norm"}]}),
    "distill": (DistillConfig, {"name": "n", "storage": "s", "data": {"shards": ["x"], "label": "q_t"},
                                "student": {"weights": "w"}}),
    "evaluate": (EvaluateConfig, {"shards": ["x"], "out": "y", "fr_model": "m",
                                  "models": [{"name": "n", "teacher": "norm"}]}),
}


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_every_job_has_one_resources_section_with_cpu_defaults(kind):
    model, spec = MINIMAL[kind]
    cfg = validate(model, spec)
    assert cfg.resources == Resources(workers=2, cpus_per_worker=1.0, gpus_per_worker=0.0)
    assert not cfg.resources.use_gpu


@pytest.mark.parametrize("kind", sorted(MINIMAL))
@pytest.mark.parametrize("old, new", [("workers", "resources.workers"), ("worker_cpus", "resources.cpus_per_worker"),
                                      ("cpus_per_worker", "resources.cpus_per_worker"),
                                      ("use_gpu", "resources.gpus_per_worker")])
def test_old_spellings_name_the_new_field(kind, old, new):
    model, spec = MINIMAL[kind]
    with pytest.raises(ConfigError, match=rf"field '{old}' was renamed: set {new}"):
        validate(model, spec | {old: 1})


def test_old_spellings_inside_data_name_the_data_field(tmp_path):
    spec = tmp_path / "d.yaml"
    spec.write_text("name: n\nstorage: s\ndata: {shards: [x], label: q_t, worker_cpus: 0.5}\nstudent: {weights: w}\n")
    with pytest.raises(ConfigError, match=r"d.yaml: invalid DistillConfig: data: field 'worker_cpus' was renamed: "
                                          r"set data.resources.cpus_per_worker$"):
        load_spec(str(spec), DistillConfig)


def test_the_deepspeed_section_is_now_engine():
    model, spec = MINIMAL["distill"]
    with pytest.raises(ConfigError, match="field 'deepspeed' was renamed: set engine"):
        validate(model, spec | {"deepspeed": {"zero_stage": 1}})


def test_decoding_actors_never_ask_for_gpus():
    with pytest.raises(ValueError, match="decode/warp actors run on CPUs"):
        DataConfig(shards=["x"], resources=Resources(gpus_per_worker=1))


def test_resources_become_ray_trains_scaling_config():
    cpu = scaling_config(Resources(workers=3, cpus_per_worker=0.5))
    assert (cpu.num_workers, cpu.use_gpu, cpu.resources_per_worker) == (3, False, {"CPU": 0.5})
    gpu = scaling_config(Resources(workers=8, cpus_per_worker=4, gpus_per_worker=1))
    assert (gpu.num_workers, gpu.use_gpu, gpu.resources_per_worker) == (8, True, {"CPU": 4, "GPU": 1})


def test_workers_can_be_pinned_to_labelled_nodes_and_spread_across_them():
    train = scaling_config(Resources(workers=2, custom={"aikd_worker": 0.01}, placement="strict_spread"))
    assert train.resources_per_worker == {"CPU": 1.0, "aikd_worker": 0.01}
    assert train.placement_strategy == "STRICT_SPREAD"
    assert scaling_config(Resources()).placement_strategy == "PACK"
    assert remote_args(Resources(custom={"gpu_node": 1}, placement="spread")) == {
        "resources": {"gpu_node": 1}, "scheduling_strategy": "SPREAD"}
    assert remote_args(Resources()) == {}


@pytest.mark.parametrize("custom", [{"GPU": 1}, {"CPU": 2}, {"aikd_worker": 0}])
def test_custom_resources_are_named_and_positive(custom):
    with pytest.raises(ValueError, match="custom resource"):
        Resources(custom=custom)


def test_a_worker_given_no_gpu_runs_on_the_cpu():
    assert train_device(0.0).type == "cpu"
    assert Resources(cpus_per_worker=0.5).threads == 1 and Resources(cpus_per_worker=4).threads == 4
