import pytest
import torch
from pydantic import ValidationError

from aikd.config import DataConfig, DistillConfig, OptimConfig, StudentConfig, load_spec
from aikd.distill.loop import EMA, Plan, TrainState


def _cfg(**kw) -> DistillConfig:
    return DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"], label="q_t"),
                         student=StudentConfig(weights="x"), **kw)


def test_plan_derives_steps_from_the_data_and_the_budget():
    plan = Plan.make(_cfg(epochs=2), train_rows_per_epoch=6400, world_size=2, label_stats=(3.0, 2.0))
    assert plan.steps_per_epoch == 50 and plan.total_steps == 100  # 64 per worker x 2 workers
    assert (plan.warmup_steps, plan.pretrain_steps, plan.val_steps) == (8, 15, 5)
    assert Plan.make(_cfg(max_steps=7), 6400, 2).total_steps == 7
    torch.testing.assert_close(plan.scale([3.0, 5.0]), torch.tensor([0.0, 1.0]))


def test_ema_keeps_a_tenth_of_the_old_weights():
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, 1.0)
    ema = EMA(model, old_weight=0.1)
    torch.nn.init.constant_(model.weight, 3.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 0.1 * 1.0 + 0.9 * 3.0))


def test_train_state_round_trips_through_json():
    state = TrainState(step=3, consumed=96, world_size=2, history=[{"step": 3}])
    assert TrainState.from_dict(state.to_dict()) == state


def test_specs_validate_with_errors_naming_the_field(tmp_path):
    cfg = load_spec("jobs/distill.yaml", DistillConfig)
    assert cfg.deepspeed.zero_stage == 1 and cfg.workers == 2 and cfg.bootstrap is not None
    gpu = load_spec("jobs/distill_gpu_reference.yaml", DistillConfig)
    assert (gpu.student.backbone, gpu.data.image_size, gpu.deepspeed.precision, gpu.deepspeed.micro_batch) == (
        "iresnet100", 112, "bf16", 64)
    with pytest.raises(ValueError, match=r"deepspeed.zero_stage: Input should be 0, 1 or 2"):
        load_spec("jobs/distill.yaml", DistillConfig, {"deepspeed.zero_stage": 3})
    with pytest.raises(ValidationError, match="set data.label"):
        DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"]), student=StudentConfig(weights="x"))
    with pytest.raises(ValidationError, match="train_last_k"):
        OptimConfig(train_last_k=-1)
