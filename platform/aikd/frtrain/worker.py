"""The fr-train Ray worker: a sequence of small functions fed only by its config.

Every ``checkpoint_every`` optimizer steps rank 0 writes a checkpoint: the backbone with
the head's class centres (a model directory: safetensors + card + the spec), the
optimizer and schedule state, and a sidecar (step, samples consumed, world size, config
hash). A restarted run (same output) loads it and goes on mid-epoch: the driver leaves
out the whole work units already consumed, each worker skips the rest of its share.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import ray
import ray.train
import torch
import torch.nn as nn
from ray.train import Checkpoint

from aikd.config import FRTrainConfig
from aikd.console import say
from aikd.distill.loop import rows_to_skip
from aikd.frtrain.model import FRModel, build_models
from aikd.models.weights import CENTRES, card_for, load_model, preprocess_of, save_model
from aikd.progress import Poster
from aikd.redact import redact
from aikd.runtime import train_device
from aikd.tracking import Tracker, log_from_worker

SIDECAR = "fr_train_state.json"
OPTIMIZER_FILE = "optimizer.pt"  # optimizer + schedule state: plain tensors and numbers (weights_only loads it)


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.PolynomialLR:
    """lr = base * (1 - step / total)^2, reaching 0 at the last step (arcface_torch's decay)."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(total_steps, 1), power=2.0)


def setup_model(cfg: FRTrainConfig, classes: list[str], total_steps: int):
    """Backbone + head (from the checkpoint when resuming), DDP-prepared, with optimizer and schedule."""
    backbone, head = build_models(cfg, len(classes))
    # channels_last like the input batches, so that each weight gradient has its parameter's layout, which
    # DDP's gradient buckets expect (else it warns about grad strides and copies them every step)
    model = FRModel(backbone, head).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = poly_schedule(optimizer, total_steps)
    state = {"step": 0, "consumed": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory, backbone, head, optimizer, schedule)
    return ray.train.torch.prepare_model(model), backbone, head, optimizer, schedule, state


def load_state(directory: str, backbone: nn.Module, head: nn.Module, optimizer, schedule) -> dict:
    saved, _ = load_model(directory)
    backbone.load_state_dict(saved.state_dict())
    from safetensors.torch import load_file

    from aikd.models.weights import EXTRA_PREFIX, WEIGHTS_FILE

    head.weight.data.copy_(load_file(os.path.join(directory, WEIGHTS_FILE))[EXTRA_PREFIX + CENTRES])
    opt = torch.load(os.path.join(directory, OPTIMIZER_FILE), weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    schedule.load_state_dict(opt["schedule"])
    with open(os.path.join(directory, SIDECAR)) as f:
        return json.load(f)


def save_checkpoint(directory: str, cfg: FRTrainConfig, backbone: nn.Module, head: nn.Module, optimizer, schedule,
                    classes: list[str], state: dict, metrics: dict) -> None:
    card = card_for(backbone, "backbone", {"trained_by": "aikd fr-train", "head": cfg.head, "classes": classes,
                                           "data": redact(cfg.data.shards), "metrics": metrics})
    save_model(backbone, directory, card, extra={CENTRES: head.weight}, spec=cfg.model_dump(mode="json"))
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()},
               os.path.join(directory, OPTIMIZER_FILE))
    with open(os.path.join(directory, SIDECAR), "w") as f:
        json.dump(state, f)


def setup_data(cfg: FRTrainConfig, state: dict, offset_samples: int, rank: int, world_size: int):
    """This worker's batches, skipping what the checkpoint consumed beyond the dataset's own offset."""
    shard = ray.train.get_dataset_shard("train")
    batches = shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True,
                                 local_shuffle_buffer_size=4 * cfg.batch_size,
                                 local_shuffle_seed=cfg.seed + rank + state["step"])
    to_skip = rows_to_skip(state["consumed"], offset_samples, world_size)
    for batch in batches:
        if to_skip >= len(batch["subject_id"]):
            to_skip -= len(batch["subject_id"])
            continue
        yield batch


def report(cfg: FRTrainConfig, rank: int, metrics: dict, parts: tuple | None) -> None:
    """Every rank reports (Ray Train counts reports); rank 0 with the checkpoint when one is due."""
    if rank != 0 or parts is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, cfg, *parts, metrics=metrics)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))


def fr_train_loop(config: dict) -> None:
    cfg = FRTrainConfig.model_validate(config["cfg"])
    classes: list[str] = config["classes"]
    total = config["total_steps"]
    if not cfg.resources.use_gpu:
        torch.set_num_threads(cfg.resources.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = train_device(cfg.resources.gpus_per_worker)
    model, backbone, head, optimizer, schedule, state = setup_model(cfg, classes, total)
    if rank == 0 and state["step"]:
        say(f"fr-train: resumed at step {state['step']} ({state['consumed']} images consumed)")
    state |= {"world_size": world, "config_hash": config["config_hash"]}
    preprocess = preprocess_of(backbone)
    index = {s: i for i, s in enumerate(classes)}
    tracker = Tracker.attach(config["tracking"]) if rank == 0 else None
    poster = Poster(config.get("board"))
    seen, loss_sum, start = 0, 0.0, time.perf_counter()
    model.train()
    for batch in setup_data(cfg, state, config["offset_samples"], rank, world):
        if state["step"] >= total:  # every rank takes the same number of steps (DDP and Ray's reports need it)
            break
        x = preprocess(batch["aligned"], device)
        y = torch.as_tensor([index[s] for s in batch["subject_id"]], device=device)
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        state["step"] += 1
        state["consumed"] += len(y) * world
        seen, loss_sum = seen + len(y), loss_sum + loss.item()
        if rank == 0:
            poster(state["step"])
        if rank == 0 and state["step"] % cfg.log_every == 0:
            rate = seen / (time.perf_counter() - start)
            say(f"fr-train: step {state['step']}/{total} loss {loss_sum / cfg.log_every:.3f} "
                f"epoch {int(batch['epoch'][-1])} {rate:.0f} img/s/worker")
            log_from_worker(tracker, {"train_loss": loss_sum / cfg.log_every, "images_per_s_per_worker": rate},
                            state["step"], "fr-train")
            loss_sum = 0.0
        if state["step"] % cfg.checkpoint_every == 0 and state["step"] < total:
            report(cfg, rank, {"step": state["step"]}, (backbone, head, optimizer, schedule, classes, dict(state)))
    poster.flush()
    metrics = {"steps": state["step"], "images_per_worker": seen,
               "images_per_s_per_worker": seen / max(time.perf_counter() - start, 1e-9)}
    report(cfg, rank, metrics, (backbone, head, optimizer, schedule, classes, state | {"done": True}))
