"""Everything engine-specific behind one small object (OpenRLHF's habit).

The distillation loop calls ``forward``, ``backward``, ``step``, ``save``/``load`` and
schedules the learning rate on ``torch_optimizer``; it never imports DeepSpeed, so a
plain-DDP strategy replaces the DeepSpeed one by a config switch.
"""

from __future__ import annotations

import abc
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

from aikd.config import DistillConfig
from aikd.distill.params import freeze_all_but

STATE_FILE = "ddp_state.pt"
DS_TAG = "engine"


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Strategy(abc.ABC):
    def __init__(self, cfg: DistillConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.rank, self.world_size = world()
        self.model: nn.Module | None = None  # what forward runs (possibly wrapped)
        self.module: nn.Module | None = None  # the bare student
        # the torch optimizer whose groups' "lr" the step uses (DeepSpeed's engine wraps it): schedulers act on it
        self.torch_optimizer: torch.optim.Optimizer | None = None

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.cfg.engine.precision]

    @property
    def samples_per_step(self) -> int:
        """Samples consumed by all workers for one optimizer step."""
        return self.cfg.engine.micro_batch * self.cfg.engine.grad_accum * self.world_size

    def prepare(self, student: nn.Module, groups: list[dict]) -> None:
        """Build the engine or wrapper and the optimizer over ``groups``; only their parameters train."""
        freeze_all_but(student, groups)
        self._prepare(student, groups)

    @abc.abstractmethod
    def _prepare(self, student: nn.Module, groups: list[dict]) -> None: ...

    def forward(self, x: torch.Tensor):
        return self.model(x.to(self.device, self.dtype))

    @abc.abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def step(self) -> bool:
        """Advance one micro-step; True when an optimizer step happened."""

    @abc.abstractmethod
    def save(self, directory: str) -> None:
        """Every rank writes its part of the engine state (weights, optimizer) into ``directory``."""

    @abc.abstractmethod
    def load(self, directory: str, saved_world_size: int) -> None:
        """Restore the engine state from ``directory``."""

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.item() / self.world_size

    def from_rank0(self, value):
        """Rank 0's ``value`` on every rank (a small picklable object, e.g. validation metrics)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def deepspeed_on_cpu() -> None:
    """Set up DeepSpeed for the CPU: its CPU accelerator, and the interpreter's own bin folder (where
    DeepSpeed's ``ninja`` dependency lies) first on PATH.

    DeepSpeed's CPU accelerator JIT-builds a small C++ op on first use (about a minute on
    a 2-core machine) with whichever ``ninja`` PATH finds first. Two ninja versions rewrite
    each other's build log, so a build made through one is redone by the other: processes
    started with and without the venv on PATH would rebuild it in turn.
    """
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    here = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if os.path.exists(os.path.join(here, "ninja")) and path.split(os.pathsep)[0] != here:
        os.environ["PATH"] = here + os.pathsep + path


def build_cpu_ops() -> bool:
    """Build DeepSpeed's CPU op ahead of the first run (`make install` does), so no run waits for the compiler.

    False where there is nothing to build: a GPU machine runs DeepSpeed on its CUDA
    accelerator, and a CPU that DeepSpeed cannot build the op for goes without it.
    """
    if torch.cuda.is_available():
        return False
    deepspeed_on_cpu()
    from deepspeed.comm.torch import build_shm_op  # what DeepSpeed's CPU backend calls when it starts

    return build_shm_op() is not None


class DeepSpeedStrategy(Strategy):
    def ds_config(self) -> dict:
        ds = self.cfg.engine
        return {
            "train_micro_batch_size_per_gpu": ds.micro_batch,
            "gradient_accumulation_steps": ds.grad_accum,
            "train_batch_size": ds.micro_batch * ds.grad_accum * self.world_size,
            "gradient_clipping": self.cfg.optim.grad_clip,
            "zero_optimization": {"stage": ds.zero_stage},
            "zero_allow_untested_optimizer": True,  # SGD with ZeRO >= 1
            "bf16": {"enabled": ds.precision == "bf16"},
            "fp16": {"enabled": ds.precision == "fp16"},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }

    def _prepare(self, student: nn.Module, groups: list[dict]) -> None:
        if self.device.type == "cpu":
            deepspeed_on_cpu()
        import deepspeed

        # the schedule stays on this optimizer, stepped by the loop with its step count: handed to DeepSpeed,
        # it would skip the steps an fp16 overflow skips, and its state would be lost on a module-only load
        self.torch_optimizer = torch.optim.SGD(groups, lr=groups[0]["lr"])
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=student, optimizer=self.torch_optimizer,
                                                                 config=self.ds_config())
        self.model = self.engine
        self.module = self.engine.module

    def forward(self, x: torch.Tensor):
        return self.engine(x.to(self.engine.device, self.dtype))

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    def save(self, directory: str) -> None:
        self.engine.save_checkpoint(directory, tag=DS_TAG)

    def load(self, directory: str, saved_world_size: int) -> None:
        # ZeRO shards the optimizer by rank: on another world size only the weights carry over.
        module_only = saved_world_size != self.world_size and self.cfg.engine.zero_stage > 0
        self.engine.load_checkpoint(directory, tag=DS_TAG, load_module_only=module_only,
                                    load_optimizer_states=not module_only, load_lr_scheduler_states=False)


class DDPStrategy(Strategy):
    def _prepare(self, student: nn.Module, groups: list[dict]) -> None:
        # channels_last like the input batches: a convolution's weight gradient takes its input's layout, and
        # DDP's gradient buckets take the parameter's; parameters in the same layout keep the two in step
        # (otherwise DDP warns "Grad strides do not match bucket view strides" and copies every step)
        student = student.to(self.device, memory_format=torch.channels_last)
        self.module = student
        self.model = student
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(student, device_ids=ids)
        self.optimizer = self.torch_optimizer = torch.optim.SGD(groups, lr=groups[0]["lr"])
        self.micro = 0

    def forward(self, x: torch.Tensor):
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.model(x.to(self.device))

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.engine.grad_accum).backward()

    def step(self) -> bool:
        self.micro += 1
        if self.micro % self.cfg.engine.grad_accum:
            return False
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                       self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def save(self, directory: str) -> None:
        if self.is_rank0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()},
                       os.path.join(directory, STATE_FILE))

    def load(self, directory: str, saved_world_size: int) -> None:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


STRATEGIES = {"deepspeed": DeepSpeedStrategy, "ddp": DDPStrategy}


def create_strategy(cfg: DistillConfig, device: torch.device) -> Strategy:
    return STRATEGIES[cfg.strategy](cfg, device)
