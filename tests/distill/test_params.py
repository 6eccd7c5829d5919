import pytest
import torch

from aikd.config import DataConfig, DistillConfig, OptimConfig, StudentConfig
from aikd.distill.params import param_groups, trainable_backbone_tensors, warmup_factor
from aikd.distill.strategy import DDPStrategy
from aikd.models.student import create_student


def _cfg(k: int) -> DistillConfig:
    return DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"], label="q_t"),
                         student=StudentConfig(weights="x"), optim=OptimConfig(train_last_k=k), strategy="ddp")


def _one_step(k: int):
    torch.manual_seed(0)
    student = create_student("iresnet_tiny")
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    cfg = _cfg(k)
    strategy = DDPStrategy(cfg, torch.device("cpu"))
    strategy.prepare(student, param_groups(student, cfg.optim))
    emb, q = strategy.forward(torch.randn(4, 3, 64, 64))
    strategy.backward(q.pow(2).mean() + emb.pow(2).mean())
    assert strategy.step()
    changed = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    return student, changed


@pytest.mark.parametrize("k", [0, 5, 100])
def test_only_the_head_and_the_last_k_backbone_tensors_change(k):
    student, changed = _one_step(k)
    head = {f"quality_head.{n}" for n, _ in student.quality_head.named_parameters()}
    backbone = {f"feature_extractor.{n}" for n in trainable_backbone_tensors(student.feature_extractor, k)}
    assert changed == head | backbone
    assert len(backbone) == min(k, sum(p.requires_grad for p in student.feature_extractor.parameters()))
    assert "feature_extractor.features.weight" not in changed  # arcface_torch keeps it fixed


def test_the_last_k_are_the_deepest_tensors():
    student = create_student("iresnet_tiny")
    names = trainable_backbone_tensors(student.feature_extractor, 3)
    assert names == ["fc.weight", "fc.bias", "features.bias"]
    assert trainable_backbone_tensors(student.feature_extractor, 0) == []


def test_building_the_groups_freezes_nothing_preparing_the_strategy_freezes_the_rest():
    student = create_student("iresnet_tiny")
    before = {n: p.requires_grad for n, p in student.named_parameters()}
    groups = param_groups(student, OptimConfig(train_last_k=3))
    assert {n: p.requires_grad for n, p in student.named_parameters()} == before  # no side effect
    assert param_groups(student, OptimConfig(train_last_k=3))[1]["params"] == groups[1]["params"]  # repeatable
    DDPStrategy(_cfg(3), torch.device("cpu")).prepare(student, groups)
    trained = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trained == {f"quality_head.{n}" for n, _ in student.quality_head.named_parameters()} | {
        f"feature_extractor.{n}" for n in ("fc.weight", "fc.bias", "features.bias")}


def test_two_groups_with_the_reference_settings():
    student = create_student("iresnet_tiny")
    head, backbone = param_groups(student, OptimConfig())
    assert (head["lr"], head["momentum"], head["weight_decay"]) == (0.05, 0.9, 5e-4)
    assert (backbone["lr"], backbone["momentum"]) == (0.05, 0.1)
    assert len(param_groups(student, OptimConfig(train_last_k=0))) == 1


def test_sine_warmup():
    assert warmup_factor(0, 10) == 0.0
    assert warmup_factor(5, 10) == pytest.approx(2**-0.5)
    assert warmup_factor(10, 10) == 1.0 and warmup_factor(50, 10) == 1.0 and warmup_factor(3, 0) == 1.0
