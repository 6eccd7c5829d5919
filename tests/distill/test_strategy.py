"""The DeepSpeed strategy (ZeRO 0, fp32) and the plain-DDP one take the same optimizer step.

DeepSpeed needs a process group and mutates global state, so the comparison runs in a
fresh interpreter (this file run as a script) and the test asserts on what it saved.
"""

import math
import os
import socket
import subprocess
import sys

import pytest
import torch

# fp32, same kernels, same inputs, and both clip by min(1, grad_clip / (norm + 1e-6)); only the
# order in which the gradient norm is summed differs, worth a few ulps (observed: bit-identical).
ATOL, RTOL = 1e-6, 1e-5
SCALES = {"clipped": 100.0, "unclipped": 1.0}  # loss factors: gradient norm ~271 and ~2.7 against grad_clip 5
WARM = (1, 2)  # an optimizer step during the warm-up: step 1 of 2, the rate scaled by sin(pi / 4)


def _one_step(name: str, scale: float, x: torch.Tensor, warm: tuple[int, int] | None = None) -> tuple[dict, float]:
    """One optimizer step of a fresh seeded student; its state after, and the gradient norm before clipping.

    With ``warm`` (step, warm-up steps) the step runs under the warm-up schedule the loop builds.
    """
    from aikd.config import DataConfig, DistillConfig, EngineConfig, OptimConfig, StudentConfig
    from aikd.distill.params import param_groups, warmup_schedule
    from aikd.distill.strategy import create_strategy
    from aikd.models.student import create_student

    cfg = DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"], label="q_t"),
                        student=StudentConfig(weights="x"), optim=OptimConfig(train_last_k=5),
                        engine=EngineConfig(micro_batch=4, zero_stage=0, precision="fp32"), strategy=name)
    torch.manual_seed(0)
    student = create_student("iresnet_tiny")
    strategy = create_strategy(cfg, torch.device("cpu"))
    strategy.prepare(student, param_groups(student, cfg.optim))
    if warm is not None:
        warmup_schedule(strategy.torch_optimizer, warm[1], step=warm[0])
    emb, q = strategy.forward(x)
    strategy.backward(scale * (q.pow(2).mean() + emb.pow(2).mean()))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in student.parameters() if p.grad is not None]))
    assert strategy.step()
    return {k: v.detach().clone() for k, v in strategy.module.state_dict().items()}, norm.item()


def _compare(out: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    from aikd.distill.params import trainable_backbone_tensors
    from aikd.models.student import create_student

    torch.manual_seed(0)
    student = create_student("iresnet_tiny")
    trained = {f"quality_head.{n}" for n, _ in student.quality_head.named_parameters()} | {
        f"feature_extractor.{n}" for n in trainable_backbone_tensors(student.feature_extractor, 5)}
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    results = {"before": {k: v.clone() for k, v in student.state_dict().items()}, "trained": sorted(trained),
               "params": [n for n, _ in student.named_parameters()]}
    for case, scale in SCALES.items():
        for name in ("deepspeed", "ddp"):
            results[f"{case}/{name}"] = _one_step(name, scale, x)
    for name in ("deepspeed", "ddp"):
        results[f"warm/{name}"] = _one_step(name, SCALES["unclipped"], x, WARM)
    torch.save(results, out)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("strategy") / "steps.pt")
    proc = subprocess.run([sys.executable, __file__, out], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=True)  # plain tensors, lists and strings: nothing to unpickle


@pytest.mark.slow
@pytest.mark.parametrize("case", SCALES)
def test_deepspeed_zero0_and_ddp_take_the_same_step(steps, case):
    (ds, ds_norm), (ddp, ddp_norm) = steps[f"{case}/deepspeed"], steps[f"{case}/ddp"]
    before = steps["before"]
    assert ds_norm == pytest.approx(ddp_norm, rel=RTOL)
    assert (ddp_norm > 5.0) == (case == "clipped")  # clipping at optim.grad_clip is active / inactive
    assert ds.keys() == ddp.keys() == before.keys()
    for k in before:
        torch.testing.assert_close(ds[k], ddp[k], atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f"{k}: {m}")
    for state in (ds, ddp):  # the head and the last 5 backbone tensors moved, every frozen tensor kept its value
        assert {k for k in steps["params"] if not torch.equal(state[k], before[k])} == set(steps["trained"])
    assert len(set(steps["params"]) - set(steps["trained"])) > 40


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepspeed", "ddp"])
def test_both_strategies_step_at_the_warmup_rate_the_schedule_sets(steps, name):
    # the first SGD step moves a weight by -lr * (grad + weight decay * weight), linear in lr: under the
    # warm-up each trained tensor moves by the old sine factor times the full-rate step (unclipped gradient)
    factor = math.sin(WARM[0] / WARM[1] * math.pi / 2)
    before, full, (warm, _) = steps["before"], steps["unclipped/ddp"][0], steps[f"warm/{name}"]
    for k in steps["trained"]:
        torch.testing.assert_close(warm[k] - before[k], factor * (full[k] - before[k]), atol=ATOL, rtol=RTOL,
                                   msg=lambda m, k=k: f"{k}: {m}")


def test_deepspeeds_op_is_built_with_the_ninja_beside_the_interpreter(monkeypatch):
    from aikd.distill.strategy import deepspeed_on_cpu

    here = os.path.dirname(sys.executable)
    assert os.path.exists(os.path.join(here, "ninja"))  # DeepSpeed's dependency, installed with it
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    deepspeed_on_cpu()
    deepspeed_on_cpu()
    assert os.environ["PATH"].split(os.pathsep) == [here, "/usr/bin", "/bin"]


BUILD = """
import os, sys
from torch.utils.cpp_extension import _get_build_directory
from aikd.distill.strategy import build_cpu_ops
built = build_cpu_ops()
library = os.path.join(_get_build_directory("deepspeed_shm_comm", False), "deepspeed_shm_comm.so")
print(built, os.stat(library).st_mtime_ns)
"""


@pytest.mark.slow
def test_the_cpu_op_built_once_is_loaded_again_from_any_path():
    """`make install` builds DeepSpeed's CPU op; a process whose PATH lacks the venv loads it, never builds it again."""
    def build(path: str) -> tuple[str, str]:
        proc = subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True, timeout=600,
                              env=os.environ | {"PATH": path})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return tuple(proc.stdout.split()[-2:])

    first = build(os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    assert first[0] == "True" and build("/usr/bin:/bin") == first  # the same library file, untouched


if __name__ == "__main__":
    _compare(sys.argv[1])
