"""The distillation loop: model, consistency target, strategy and data in; no Ray, no DeepSpeed.

Per micro-batch: embed the aligned view with the target (no gradient), run the student
on the misaligned view, AI-KD loss, backward, step. Per optimizer step: the reference's
sine warm-up (a torch LambdaLR at the loop's step count). Every ``val_every`` of an epoch
after the pretrain phase: update the EMA of the weights, validate it (quality loss,
Spearman and, with the frozen FR backbone's comparisons, the EDC pAUC per view), keep the
best EMA weights, and hand the result to ``on_validation`` (the Ray worker reports and
checkpoints there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from aikd.config import DistillConfig
from aikd.distill.metrics import QUALITY_LOSS, QUALITY_LOSS_MISALIGNED, SPEARMAN, SPEARMAN_MISALIGNED
from aikd.distill.objective import aikd_loss, quality_loss
from aikd.distill.params import warmup_schedule
from aikd.distill.strategy import Strategy
from aikd.distill.val_pauc import Comparisons, comparisons, pauc_metrics
from aikd.errors import ConfigError
from aikd.evaluate.ranks import spearman
from aikd.models.transforms import Preprocess
from aikd.models.weights import preprocess_of


@dataclass
class TrainState:
    """What a checkpoint's sidecar carries so a run continues where it stopped."""

    step: int = 0
    consumed: int = 0  # samples consumed by all workers
    best_val: float | None = None  # best value of the selection metric (validation.select) so far
    validations: int = 0
    world_size: int = 1
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def rows_to_skip(consumed: int, dataset_offset: int, world_size: int) -> int:
    """Rows each worker drops from the head of its stream when resuming.

    The driver started the training stream ``dataset_offset`` rows in (whole row groups);
    the checkpoint says ``consumed`` rows were trained on by all workers together. The
    rest of the difference is dropped evenly by the workers. A checkpoint behind the
    stream's start would silently lose rows: that is a bug, never a rounding.
    """
    if consumed < dataset_offset:
        raise RuntimeError(f"checkpoint consumed {consumed} rows but the stream starts at {dataset_offset}: "
                           "the driver and the workers resumed from different checkpoints")
    return (consumed - dataset_offset) // world_size


@dataclass(frozen=True)
class Plan:
    """Step counts and label statistics derived once in the driver (never recomputed in the loop)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    pretrain_steps: int
    val_steps: int
    label_mean: float = 0.0
    label_std: float = 1.0

    def scale(self, labels) -> torch.Tensor:
        # a copy: the labels come from Arrow's read-only buffers, which torch cannot share
        return (torch.tensor(labels, dtype=torch.float32) - self.label_mean) / self.label_std

    @classmethod
    def make(cls, cfg: DistillConfig, train_rows_per_epoch: float, world_size: int,
             label_stats: tuple[float, float] = (0.0, 1.0)) -> Plan:
        per_step = cfg.engine.micro_batch * cfg.engine.grad_accum * world_size
        epoch = max(int(train_rows_per_epoch // per_step), 1)
        total = epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        o = cfg.optim
        return cls(epoch, total, int(round(o.warmup_fraction * epoch)), int(round(o.pretrain_fraction * epoch)),
                   max(int(round(o.val_every * epoch)), 1), *label_stats)


def ema_update(old_weight: float):
    """torch's EMA step (new = w * old + (1 - w) * current) for float tensors; integer buffers (BatchNorm's
    ``num_batches_tracked``) take the current count, which an average would truncate."""
    ema = get_ema_multi_avg_fn(old_weight)

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        # the average is float32; a bf16 or fp16 engine hands its own dtype, which lerp refuses
        current = [c.to(a.dtype) for a, c in zip(averaged, current, strict=True)]
        if averaged[0].is_floating_point():
            ema(averaged, current, n_averaged)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class EMA:
    """Exponential moving average of the student's weights and buffers (BatchNorm statistics included):
    new = w * old + (1 - w) * current, in float32, starting from a copy of the student."""

    def __init__(self, module: nn.Module, old_weight: float):
        self.averaged = AveragedModel(module, multi_avg_fn=ema_update(old_weight), use_buffers=True)
        self.averaged.module.float().eval().requires_grad_(False)
        self.averaged.update_parameters(module)  # the first update copies: the average starts at the student

    @property
    def model(self) -> nn.Module:
        """The averaged student, validated and saved as best/: its state dict has the student's keys."""
        return self.averaged.module

    def update(self, module: nn.Module) -> None:
        self.averaged.update_parameters(module)


@torch.no_grad()
def validate(model: nn.Module, batches: list[dict], cfg: DistillConfig, device: torch.device, plan: Plan,
             preprocess: Preprocess, comparisons: Comparisons | None = None) -> dict:
    """Quality loss on aligned and misaligned validation views, rank agreement with the label and,
    given the run's fixed comparisons, the EDC pAUC of each view."""
    model.eval()
    preds, mis_preds, labels = [], [], []
    for batch in batches:
        preds.append(model(preprocess(batch["aligned"], device))[1].float().cpu())
        if "misaligned" in batch:
            mis_preds.append(model(preprocess(batch["misaligned"], device))[1].float().cpu())
        labels.append(plan.scale(batch["quality"]))
    if not labels:
        return {}
    q, y = torch.cat(preds), torch.cat(labels).float()
    out = {QUALITY_LOSS: quality_loss(q, y, cfg.objective), SPEARMAN: spearman(q.numpy(), y.numpy()),
           "val_rows": int(len(y))}
    if mis_preds:
        qm = torch.cat(mis_preds)
        out |= {QUALITY_LOSS_MISALIGNED: quality_loss(qm, y, cfg.objective),
                SPEARMAN_MISALIGNED: spearman(qm.numpy(), y.numpy())}
        if comparisons is not None:
            quality = {"aligned": q.numpy().reshape(-1), "misaligned": qm.numpy().reshape(-1)}
            out |= pauc_metrics(comparisons, quality, cfg.validation)
    return out


class Distiller:
    def __init__(self, cfg: DistillConfig, strategy: Strategy, target: Callable[[torch.Tensor], torch.Tensor],
                 plan: Plan, val_batches: Callable[[], list[dict]],
                 on_validation: Callable[[TrainState, dict, EMA | None, bool], None], log: Callable[[str], None],
                 fr: nn.Module | None = None, on_step: Callable[[int], None] = lambda step: None):
        self.cfg, self.strategy, self.target, self.plan = cfg, strategy, target, plan
        self.val_batches, self.on_validation, self.log = val_batches, on_validation, log
        self.on_step = on_step  # rank 0's step count, for the driver's progress bar
        self.ema = EMA(strategy.module, cfg.optim.ema_old_weight) if strategy.is_rank0 else None
        self.preprocess = preprocess_of(strategy.module)  # the student's card: input size, mean, std
        self.start, self.seen, self.data_wait = time.perf_counter(), 0, 0.0
        self.fr, self._comparisons = fr, None  # the frozen FR backbone scores the validation comparisons
        self.why_no_pauc = "no frozen FR backbone was given to judge the comparisons"

    def comparisons(self, batches: list[dict]) -> Comparisons | None:
        """The run's fixed validation comparisons, made at the first validation (rank 0)."""
        if self._comparisons is None and self.fr is not None:  # no FR backbone given: no judge, no pAUC
            made, why = comparisons(batches, self.fr, self.preprocess, self.cfg.validation, self.cfg.data.seed)
            if made is None and self.cfg.validation.pauc:
                self.why_no_pauc = why
                self.log(f"note: no validation pAUC: {why}")
            self._comparisons = made or False
        return self._comparisons or None

    def why_unmeasured(self, batches: list[dict]) -> str:
        data = self.cfg.data
        if not batches:
            return (f"the validation split is empty (data.val_fraction {data.val_fraction} of "
                    f"{'identities' if data.split_by == 'subject_id' else 'images'}): raise data.val_fraction")
        if self.cfg.validation.needs_pauc:
            return f"no validation pAUC: {self.why_no_pauc}"
        return "the validation batches have no misaligned view"

    def should_validate(self, step: int) -> bool:
        p = self.plan
        return step >= p.pretrain_steps and (step - p.pretrain_steps) % p.val_steps == 0

    def validation(self, state: TrainState, initial: bool = False) -> None:
        """EMA update + validation on rank 0; every rank then reports (checkpoint on every rank)."""
        metrics: dict = {"step": state.step, "consumed": state.consumed}
        if self.seen:  # this worker's training throughput since the loop started, validations included
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            metrics["images_per_s_per_worker"] = self.seen / elapsed
            metrics["data_wait_fraction"] = self.data_wait / elapsed  # > 0.1: the input pipeline starves training
        improved = False
        if self.ema is not None:
            if not initial:
                self.ema.update(self.strategy.module)
            device = next(self.ema.model.parameters()).device
            batches = self.val_batches()
            metrics |= validate(self.ema.model, batches, self.cfg, device, self.plan, self.preprocess,
                                self.comparisons(batches))
            select = self.cfg.validation.select
            value = metrics.get(select)
            if value is None:  # no student could ever be chosen: say why now, not after the run
                raise ConfigError(f"validation.select is {select} but this run cannot measure it: "
                                  f"{self.why_unmeasured(batches)}")
            improved = not initial and value is not None and self.cfg.validation.better(value, state.best_val)
            if improved:
                state.best_val = value
            metrics[f"best_{select}"] = state.best_val
        if not initial:
            state.validations += 1
        state.history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"initial": initial})
        self.on_validation(state, metrics, self.ema, improved)

    def run(self, batches: Iterable[dict], state: TrainState) -> TrainState:
        cfg, strategy, plan = self.cfg, self.strategy, self.plan
        if state.step == 0 and not state.history:
            self.validation(state, initial=True)  # the initial head: what training must beat
        schedule = warmup_schedule(strategy.torch_optimizer, plan.warmup_steps, state.step)
        strategy.model.train()
        self.start, self.seen, self.data_wait = time.perf_counter(), 0, 0.0
        parts_sum, micro = {}, 0
        fetched = window_start = time.perf_counter()
        window_seen, last_validated = 0, state.step
        for batch in batches:
            if state.step >= plan.total_steps:
                break
            if not self.seen:  # throughput counts from the first batch: pipeline start-up is one-off
                self.start = window_start = time.perf_counter()
            else:
                self.data_wait += time.perf_counter() - fetched
            x_al = self.preprocess(batch["aligned"], strategy.device).to(strategy.dtype)
            with torch.no_grad():
                e_al = self.target(x_al)
            e_mis, q = strategy.forward(self.preprocess(batch["misaligned"], strategy.device))
            label = self.plan.scale(batch["quality"]).to(q.device)
            loss, parts = aikd_loss(e_mis, e_al, q, label, cfg.objective)
            strategy.backward(loss)
            stepped = strategy.step()
            fetched = time.perf_counter()
            micro += 1
            self.seen += len(label)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            state.consumed += len(label) * strategy.world_size
            if not stepped:
                continue
            state.step += 1
            schedule.step()
            if strategy.is_rank0:
                self.on_step(state.step)
            if state.step % cfg.log_every == 0:
                now = time.perf_counter()
                if strategy.is_rank0:  # the rate of this window: what the run does now, not since it began
                    rate = (self.seen - window_seen) / max(now - window_start, 1e-9)
                    means = {k: v / micro for k, v in parts_sum.items()}
                    self.log(f"step {state.step}/{plan.total_steps} consistency {means['consistency']:.4f} "
                             f"quality {means['quality']:.4f} {rate:.0f} img/s/worker")
                parts_sum, micro, window_start, window_seen = {}, 0, now, self.seen
            if self.should_validate(state.step):
                self.validation(state)
                last_validated = state.step
                strategy.model.train()
        if state.step != last_validated:  # end on a checkpoint: the last steps are never lost
            self.validation(state)
        return state
