"""The Ray Train worker: a sequence of small functions fed only by its config.

setup_model -> setup_strategy -> load_checkpoint -> setup_data -> Distiller.run, with
report_and_checkpoint called at every validation. Checkpoint contract: every rank
writes its engine state into one directory; rank 0 adds ``sidecar.json`` (step,
consumed samples, world size, config hash, history). When the EMA improved, rank 0
first writes the best student (safetensors + card) to ``<run>/best/``, so the best
student never depends on which checkpoints are kept. Rank 0 also logs each
validation's metrics to the job's MLflow run, by step.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

import ray.train
import torch
import torch.nn as nn
from ray.train import Checkpoint

from aikd.config import DataConfig, DistillConfig, ValidationConfig
from aikd.console import say
from aikd.data.pipeline import WorkUnit, split_batches
from aikd.distill.loop import EMA, Distiller, Plan, TrainState, rows_to_skip
from aikd.distill.params import param_groups
from aikd.distill.strategy import Strategy, create_strategy
from aikd.errors import ConfigError
from aikd.models import resolve_model_info
from aikd.models.student import Student, create_student
from aikd.models.weights import CARD_FILE, card_for, load_backbone, load_model, read_card, save_model
from aikd.progress import Poster
from aikd.redact import redact_text
from aikd.runtime import train_device
from aikd.storage import resolve
from aikd.tracking import Tracker, log_from_worker

SIDECAR = "sidecar.json"
BEST = "best"


def _model_dir(cfg: DistillConfig) -> bool:
    return resolve(cfg.student.weights).join(CARD_FILE).exists()


def student_input_size(cfg: DistillConfig) -> int:
    """The side of the student's input, from its card (or its registry entry for a bare weights file): nothing built."""
    if _model_dir(cfg):
        return read_card(cfg.student.weights).input_size
    if cfg.student.backbone is None:
        raise ConfigError(f"{cfg.student.weights} is a bare weights file: set student.backbone to its architecture")
    return resolve_model_info(cfg.student.backbone, **cfg.student.backbone_args).input_size


def build_student(cfg: DistillConfig) -> Student:
    """The student initialised from the pretrained FR backbone named by the config."""
    if _model_dir(cfg):
        backbone, card = load_model(cfg.student.weights)
        return Student(backbone, embedding_dim=card.embedding_dim)
    student_input_size(cfg)  # names what to set for a bare weights file
    student = create_student(cfg.student.backbone, **cfg.student.backbone_args)
    load_backbone(student.feature_extractor, cfg.student.weights)
    return student


def setup_model(cfg: DistillConfig) -> tuple[Student, nn.Module]:
    """The student and a frozen copy of its initial FR backbone (the consistency target when
    ``consistency_target`` is frozen; always the judge of validation comparisons)."""
    torch.manual_seed(cfg.data.seed)  # the same head init on every rank
    student = build_student(cfg)
    frozen = copy.deepcopy(student.feature_extractor).eval()
    for p in frozen.parameters():
        p.requires_grad = False
    return student, frozen


def make_target(cfg: DistillConfig, strategy: Strategy, frozen: nn.Module):
    if cfg.objective.consistency_target == "frozen":
        return frozen.to(strategy.device, strategy.dtype)
    # the reference code: the student's own backbone, in train mode, without gradient
    return lambda x: strategy.module.feature_extractor(x)


def setup_strategy(cfg: DistillConfig, student: Student) -> Strategy:
    device = train_device(cfg.resources.gpus_per_worker)
    if device.type == "cpu":
        torch.set_num_threads(cfg.resources.threads)
    strategy = create_strategy(cfg, device)
    strategy.prepare(student, param_groups(student, cfg.optim))
    return strategy


def load_checkpoint(strategy: Strategy, run: str, validation: ValidationConfig) -> TrainState:
    """The state of Ray's latest checkpoint of this run (the one the driver planned the data from)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState(world_size=strategy.world_size)
    with checkpoint.as_directory() as directory:
        with open(os.path.join(directory, SIDECAR)) as f:
            state = TrainState.from_dict(json.load(f))
        strategy.load(directory, state.world_size)
    best = resolve(run).join(BEST)
    if strategy.is_rank0 and best.join(CARD_FILE).exists():  # a best student written after this checkpoint counts
        saved = read_card(best.uri).lineage.get("metrics", {}).get(validation.select)
        if saved is not None and validation.better(saved, state.best_val):
            state.best_val = saved
    if strategy.is_rank0:
        say(f"distill: resumed at step {state.step} ({state.consumed} samples consumed)")
    state.world_size = strategy.world_size
    return state


def setup_data(cfg: DistillConfig, state: TrainState, offset_samples: int, world_size: int):
    """This worker's batches, skipping what the checkpoint consumed beyond the dataset's own offset."""
    shard = ray.train.get_dataset_shard("train")
    batches = shard.iter_batches(batch_size=cfg.engine.micro_batch, batch_format="numpy", drop_last=True,
                                 local_shuffle_buffer_size=4 * cfg.engine.micro_batch,
                                 local_shuffle_seed=cfg.data.seed + state.step)
    to_skip = rows_to_skip(state.consumed, offset_samples, world_size)
    for batch in batches:
        if to_skip >= len(batch["image_id"]):
            to_skip -= len(batch["image_id"])  # a restarted worker group re-reads its stream from the start
            continue
        yield batch


def validation_cache(cfg: DistillConfig, data: DataConfig, units: list[WorkUnit], log):
    """The validation rows (at most ``val_limit``), read on first use by the rank that validates."""
    cache: list[dict] = []

    def batches() -> list[dict]:
        if not cache:
            cache.extend(split_batches(data, "val", units, log, limit=cfg.val_limit))
        return cache

    return batches


def save_best(cfg: DistillConfig, run: str, ema: EMA, state: TrainState, metrics: dict, plan: Plan) -> None:
    lineage = {"label": cfg.data.label, "weights": redact_text(cfg.student.weights), "run": cfg.name,
               "step": state.step, "metrics": metrics,
               # the head predicts (label - mean) / std: this maps scores back to the teacher's scale
               "label_scaling": {"mean": plan.label_mean, "std": plan.label_std}}
    save_model(ema.model, resolve(run).join(BEST).uri, card_for(ema.model, "student", lineage),
               spec=cfg.model_dump(mode="json"))


def report_and_checkpoint(cfg: DistillConfig, strategy: Strategy, config_hash: str, plan: Plan, run: str,
                          tracker: Tracker | None, poster: Poster):
    def report(state: TrainState, metrics: dict, ema: EMA | None, improved: bool) -> None:
        if strategy.is_rank0:
            if improved and ema is not None:
                save_best(cfg, run, ema, state, metrics, plan)
            best = metrics.get(f"best_{cfg.validation.select}")
            if best is not None:
                poster(state.step, f"best {cfg.validation.select} {best:.4g}")
            say("distill: validation " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in metrics.items() if v is not None))
            log_from_worker(tracker, {k: v for k, v in metrics.items() if k not in ("step", "consumed")},
                            state.step, "distill")
        with tempfile.TemporaryDirectory() as directory:
            strategy.save(directory)
            if strategy.is_rank0:
                with open(os.path.join(directory, SIDECAR), "w") as f:
                    json.dump(state.to_dict() | {"config_hash": config_hash}, f)
            # every rank reports rank 0's metrics: whichever rank's report a consumer (Tune) reads has them
            clean = strategy.from_rank0({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            ray.train.report(clean, checkpoint=Checkpoint.from_directory(directory))

    return report


def train_loop(config: dict) -> None:
    cfg = DistillConfig.model_validate(config["cfg"])
    plan = Plan(**config["plan"])
    student, frozen = setup_model(cfg)
    strategy = setup_strategy(cfg, student)
    state = load_checkpoint(strategy, config["run"], cfg.validation)
    target = make_target(cfg, strategy, frozen)
    batches = setup_data(cfg, state, config["offset_samples"], strategy.world_size)
    tracker = Tracker.attach(config["tracking"]) if strategy.is_rank0 else None
    poster = Poster(config.get("board"))
    val = config["val"]
    distiller = Distiller(cfg, strategy, target, plan,
                          validation_cache(cfg, DataConfig.model_validate(val["data"]),
                                           [WorkUnit(**u) for u in val["units"]], val["log"]),
                          report_and_checkpoint(cfg, strategy, config["config_hash"], plan, config["run"], tracker,
                                                poster),
                          log=lambda line: say(f"distill: {line}"), fr=frozen, on_step=poster)
    distiller.run(batches, state)
    poster.flush()
