import copy
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from aikd.config import DataConfig, DistillConfig, OptimConfig, StudentConfig, ValidationConfig
from aikd.distill.loop import EMA, Distiller, Plan, TrainState, rows_to_skip
from aikd.distill.params import param_groups
from aikd.distill.strategy import DDPStrategy
from aikd.errors import ConfigError
from aikd.models.student import create_student
from aikd.spec import load_spec


def _cfg(**kw) -> DistillConfig:
    return DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"], label="q_t"),
                         student=StudentConfig(weights="x"), **kw)


def test_plan_derives_steps_from_the_data_and_the_budget():
    plan = Plan.make(_cfg(epochs=2), train_rows_per_epoch=6400, world_size=2, label_stats=(3.0, 2.0))
    assert plan.steps_per_epoch == 50 and plan.total_steps == 100  # 64 per worker x 2 workers
    assert (plan.warmup_steps, plan.pretrain_steps, plan.val_steps) == (8, 15, 5)
    assert Plan.make(_cfg(max_steps=7), 6400, 2).total_steps == 7
    torch.testing.assert_close(plan.scale([3.0, 5.0]), torch.tensor([0.0, 1.0]))


def test_resume_skips_what_the_checkpoint_consumed_beyond_the_streams_start():
    # the driver started the stream 900 rows in (whole row groups); the checkpoint consumed 1000 on 2 workers
    assert rows_to_skip(consumed=1000, dataset_offset=900, world_size=2) == 50
    assert rows_to_skip(consumed=0, dataset_offset=0, world_size=2) == 0
    assert rows_to_skip(consumed=901, dataset_offset=900, world_size=2) == 0  # less than a row each
    with pytest.raises(RuntimeError, match="resumed from different checkpoints"):
        rows_to_skip(consumed=800, dataset_offset=900, world_size=2)  # rows would be lost silently


def test_ema_keeps_a_tenth_of_the_old_weights():
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, 1.0)
    ema = EMA(model, old_weight=0.1)
    torch.nn.init.constant_(model.weight, 3.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 0.1 * 1.0 + 0.9 * 3.0))


def _old_ema(old: dict, current: dict, w: float) -> dict:
    """The EMA as the loop computed it by hand: float tensors w * old + (1 - w) * current, in float32;
    integer buffers (BatchNorm's num_batches_tracked) copied."""
    return {k: w * v + (1 - w) * current[k].float() if v.is_floating_point() else current[k].clone()
            for k, v in old.items()}


def _train_a_little(model: torch.nn.Module, seed: int) -> None:
    """Move the weights and the BatchNorm statistics (and its batch count) as training would."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(8, 3, dtype=next(model.parameters()).dtype))


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))


def test_the_ema_starts_as_a_copy_then_averages_weights_and_buffers_as_before():
    model = _bn_net()
    ema = EMA(model, old_weight=0.1)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    torch.testing.assert_close(ema.model.state_dict(), expected)  # the first value is the student itself
    for seed in (1, 2):  # two validations: each averages with the previous average
        _train_a_little(model, seed)
        expected = _old_ema(expected, model.state_dict(), 0.1)
        ema.update(model)
        torch.testing.assert_close(ema.model.state_dict(), expected)
    assert ema.model.state_dict()["1.num_batches_tracked"] == 2  # a count is copied, never averaged


def test_the_ema_is_what_best_saves_with_the_students_own_keys():
    model = _bn_net()
    ema = EMA(model, old_weight=0.1)
    assert list(ema.model.state_dict()) == list(model.state_dict())  # no "module." prefix, no "n_averaged"
    assert type(ema.model) is type(model) and not ema.model.training
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in model.parameters()) and model.training  # the student is untouched


def test_the_ema_of_a_bf16_student_is_kept_in_float32():
    model = _bn_net().bfloat16()
    ema = EMA(model, old_weight=0.1)
    assert all(v.dtype == torch.float32 for v in ema.model.state_dict().values() if v.is_floating_point())
    assert next(model.parameters()).dtype == torch.bfloat16  # the engine's student keeps its dtype
    expected = {k: v.float() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}
    _train_a_little(model, 1)
    ema.update(model)
    torch.testing.assert_close(ema.model.state_dict(), _old_ema(expected, model.state_dict(), 0.1))


def test_train_state_round_trips_through_json():
    state = TrainState(step=3, consumed=96, world_size=2, history=[{"step": 3}])
    assert TrainState.from_dict(state.to_dict()) == state


def test_specs_validate_with_errors_naming_the_field(tmp_path):
    cfg = load_spec("jobs/distill.yaml", DistillConfig)
    assert cfg.engine.zero_stage == 0 and cfg.resources.workers == 2 and cfg.bootstrap is not None
    gpu = load_spec("jobs/distill_gpu.yaml", DistillConfig)
    assert (gpu.student.backbone, gpu.data.image_size, gpu.engine.precision, gpu.engine.micro_batch,
            gpu.engine.zero_stage, gpu.resources.gpus_per_worker) == ("iresnet100", 112, "bf16", 64, 1, 1)
    with pytest.raises(ConfigError, match=r"engine.zero_stage: Input should be 0, 1 or 2"):
        load_spec("jobs/distill.yaml", DistillConfig, {"engine.zero_stage": 3})
    with pytest.raises(ValidationError, match="set data.label"):
        DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"]), student=StudentConfig(weights="x"))
    with pytest.raises(ValidationError, match="train_last_k"):
        OptimConfig(train_last_k=-1)


def _val_batches() -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"aligned": rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
             "misaligned": rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
             "quality": rng.random(8).astype(np.float32), "subject_id": np.repeat(["a", "b"], 4)}]


def _run_distiller(steps: int, log_every: int, val_batches=_val_batches, state: TrainState | None = None,
                   lrs: list | None = None, **fields):
    """The loop in one process (plain strategy, world size 1) on random uint8 batches.

    The plan, not the config, sets when validation happens: here only at the start and the end.
    ``lrs`` receives each optimizer step's learning rate per group, read as the step begins.
    """
    torch.manual_seed(0)
    cfg = _cfg(strategy="ddp", log_every=log_every, **fields)
    student = create_student("iresnet_tiny")
    target = copy.deepcopy(student.feature_extractor).eval()
    strategy = DDPStrategy(cfg, torch.device("cpu"))
    strategy.prepare(student, param_groups(student, cfg.optim))
    if lrs is not None:
        strategy.torch_optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: lrs.append([g["lr"] for g in opt.param_groups]))
    plan = Plan(steps_per_epoch=100, total_steps=steps, warmup_steps=2, pretrain_steps=100, val_steps=100)
    rng = np.random.default_rng(0)
    batches = ({"aligned": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
                "misaligned": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
                "quality": rng.random(4).astype(np.float32)} for _ in range(100))
    lines, reports = [], []
    distiller = Distiller(cfg, strategy, target, plan, val_batches=val_batches,
                          on_validation=lambda state, metrics, ema, improved: reports.append(dict(metrics)),
                          log=lines.append)
    return distiller.run(batches, state or TrainState()), lines, reports


def _old_sine(step: int, warmup_steps: int) -> float:
    """The warm-up factor the loop set by hand before each optimizer step."""
    return math.sin(step / warmup_steps * math.pi / 2) if step < warmup_steps else 1.0


def test_each_optimizer_step_runs_at_the_sine_warmup_rate_of_its_step():
    lrs = []
    _run_distiller(steps=4, log_every=10, lrs=lrs)  # the plan warms up over 2 steps
    base = [g["initial_lr"] for g in param_groups(create_student("iresnet_tiny"), OptimConfig())]
    assert len(lrs) == 4
    for step, got in enumerate(lrs):
        assert got == pytest.approx([b * _old_sine(step, 2) for b in base])
    assert lrs[0] == [0.0] * len(base)  # the reference's first step has no learning rate


def test_a_resumed_run_continues_the_warmup_at_its_step_without_a_restored_optimizer():
    lrs = []
    state, _, reports = _run_distiller(steps=3, log_every=10, lrs=lrs, state=TrainState(step=1, history=[{}]))
    base = [g["initial_lr"] for g in param_groups(create_student("iresnet_tiny"), OptimConfig())]
    assert state.step == 3 and [r["step"] for r in reports] == [3]
    assert lrs == [pytest.approx([b * _old_sine(s, 2) for b in base]) for s in (1, 2)]


def test_loop_logs_every_log_every_steps_and_ends_on_a_validation():
    state, lines, reports = _run_distiller(steps=6, log_every=2)
    assert state.step == 6 and state.consumed == 24
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    assert all(line.endswith("img/s/worker") for line in lines)
    # the initial head, then the end of the run: the last steps are never lost
    assert [r["step"] for r in reports] == [0, 6]
    assert reports[-1]["images_per_s_per_worker"] > 0


def test_the_best_student_is_chosen_by_the_selection_metric_in_its_direction():
    loss, spearman = ValidationConfig(), ValidationConfig(select="val_spearman_misaligned")
    assert loss.better(0.2, None) and loss.better(0.2, 0.3) and not loss.better(0.3, 0.2)
    assert spearman.better(0.5, 0.4) and not spearman.better(0.4, 0.5)
    with pytest.raises(ValidationError, match="select val_pauc_misaligned needs the validation pAUC"):
        ValidationConfig(select="val_pauc_misaligned", pauc=False)


def test_a_run_fails_at_its_first_validation_when_it_cannot_measure_its_selection_metric():
    with pytest.raises(ConfigError, match="validation.select is val_pauc_misaligned but this run cannot measure "
                                          "it: no validation pAUC: no frozen FR backbone"):
        _run_distiller(steps=2, log_every=1, validation=ValidationConfig(select="val_pauc_misaligned"))
    with pytest.raises(ConfigError, match=r"the validation split is empty \(data.val_fraction 0.01 of images\)"):
        _run_distiller(steps=2, log_every=1, val_batches=list)  # no validation rows: no student could be chosen
