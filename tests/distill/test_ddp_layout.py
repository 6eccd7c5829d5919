"""DDP's gradient buckets and the student's gradients share one memory layout: the DDP strategy keeps the
student in channels_last like its input, so torch does not warn "Grad strides do not match bucket view
strides" (and copy each gradient every step). Two gloo ranks run this file as a script; a plain DDP
student in torch's default layout is the control that shows the warning is caught."""

import os
import socket
import subprocess
import sys

import pytest

WARNING = "Grad strides do not match bucket view strides"


def _step(mode: str) -> None:
    """One DDP training step on this rank: through the DDP strategy, or a plain DDP student (control)."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from aikd.config import DataConfig, DistillConfig, EngineConfig, StudentConfig
    from aikd.distill.params import param_groups
    from aikd.distill.strategy import create_strategy
    from aikd.models.student import create_student
    from aikd.models.transforms import to_input

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    student = create_student("iresnet_tiny")
    images = np.random.default_rng(dist.get_rank()).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    x = to_input(images)  # channels_last, as every batch the loop feeds
    if mode == "strategy":
        cfg = DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"], label="q_t"),
                            student=StudentConfig(weights="x"), engine=EngineConfig(micro_batch=4), strategy="ddp")
        strategy = create_strategy(cfg, torch.device("cpu"))
        strategy.prepare(student, param_groups(student, cfg.optim))
        emb, q = strategy.forward(x)
        strategy.backward(q.pow(2).mean() + emb.pow(2).mean())
        strategy.step()
    else:
        model = torch.nn.parallel.DistributedDataParallel(student)
        emb, q = model(x)
        (q.pow(2).mean() + emb.pow(2).mean()).backward()
    dist.destroy_process_group()


def _run(mode: str) -> str:
    """Both ranks' stderr."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, __file__, mode], stderr=subprocess.PIPE, text=True,
                              env=os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
                                                "LOCAL_RANK": str(r), "WORLD_SIZE": "2"}) for r in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-3000:] for e in errs)
    return "\n".join(errs)


@pytest.mark.slow
def test_the_ddp_strategy_keeps_gradients_in_the_buckets_layout():
    assert WARNING in _run("plain")  # the control: torch's default layout against channels_last input
    assert WARNING not in _run("strategy")


if __name__ == "__main__":
    _step(sys.argv[1])
