"""Every place that feeds a model reads input size, mean and std from the model, proven with a
normalisation other than the default (0.5, 0.5)."""

import copy

import numpy as np
import pytest
import torch

from aikd.config import DataConfig, DistillConfig, StudentConfig
from aikd.distill.loop import Distiller, Plan, TrainState
from aikd.distill.params import param_groups
from aikd.distill.strategy import DDPStrategy
from aikd.models import ModelInfo, create_model, list_models, register_model
from aikd.models.iresnet import iresnet_tiny
from aikd.models.student import Student
from aikd.models.transforms import Preprocess
from aikd.models.weights import CENTRES, card_for, load_model, preprocess_of, save_model
from aikd.teachers import TeacherBatch, create_teacher, list_teachers, teacher_class

NAME = "iresnet_tiny_imagenet_norm"
IMAGENET = Preprocess(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
if NAME not in list_models():
    register_model(ModelInfo(NAME, input_size=64, mean=IMAGENET.mean, std=IMAGENET.std,
                             description="iresnet_tiny fed with ImageNet normalisation (tests)"))(iresnet_tiny)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_the_card_keeps_the_registrys_normalisation_through_save_and_load(tmp_path):
    model = create_model(NAME)
    card = card_for(model, "backbone")
    assert (card.mean, card.std) == (IMAGENET.mean, IMAGENET.std)
    save_model(model, str(tmp_path / "m"), card)
    loaded, loaded_card = load_model(str(tmp_path / "m"))
    assert preprocess_of(loaded) == IMAGENET and (loaded_card.mean, loaded_card.std) == (IMAGENET.mean, IMAGENET.std)


def test_the_default_normalisation_is_not_what_this_model_gets():
    x = _images(2)
    assert not torch.allclose(IMAGENET(x), Preprocess(64)(x))  # so the tests below can tell them apart


def test_the_distillation_loop_and_its_validation_feed_the_student_as_its_card_says():
    torch.manual_seed(0)
    student = Student(create_model(NAME))
    seen: list[torch.Tensor] = []
    student.feature_extractor.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    cfg = DistillConfig(name="t", storage="x", data=DataConfig(shards=["x"], label="q_t"),
                        student=StudentConfig(weights="x"), strategy="ddp")
    strategy = DDPStrategy(cfg, torch.device("cpu"))
    strategy.prepare(student, param_groups(student, cfg.optim))
    batch = {"aligned": _images(4, 1), "misaligned": _images(4, 2), "quality": np.zeros(4, np.float32)}
    plan = Plan(steps_per_epoch=10, total_steps=1, warmup_steps=0, pretrain_steps=10, val_steps=10)
    target = copy.deepcopy(student.feature_extractor).eval()
    Distiller(cfg, strategy, target, plan, val_batches=lambda: [batch],
              on_validation=lambda *a: None, log=lambda line: None).run(iter([batch]), TrainState())
    expected = [IMAGENET(batch["aligned"]), IMAGENET(batch["misaligned"])]
    assert len(seen) >= 3  # validation at the start, the training step, validation at the end
    for x in seen:
        assert any(torch.allclose(x, e) for e in expected)


@pytest.mark.parametrize("teacher", [n for n in list_teachers() if teacher_class(n).needs_images])
def test_teachers_feed_their_fr_model_as_its_card_says(tmp_path, teacher):
    torch.manual_seed(0)
    model = create_model(NAME, dropout=0.4).eval()
    # saved as fr-train saves one: CR-FIQA also reads the margin head's centres and their classes
    save_model(model, str(tmp_path / "fr"), card_for(model, "backbone", {"classes": ["s", "t"]}),
               extra={CENTRES: torch.randn(2, 512)})
    images = _images(3)
    scores = create_teacher(teacher, model=str(tmp_path / "fr")).score(TeacherBatch(
        np.array(["a", "b", "c"]), np.array(["s", "s", "s"]), images, {})).values
    if teacher == "norm":
        with torch.no_grad():
            expected = model(IMAGENET(images)).norm(dim=1).numpy()
        np.testing.assert_allclose(scores, expected, rtol=1e-5)
    wrong = create_teacher(teacher, model=str(tmp_path / "fr"))
    wrong.card = wrong.card.model_copy(update={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
    assert not np.allclose(scores, wrong.score(TeacherBatch(
        np.array(["a", "b", "c"]), np.array(["s", "s", "s"]), images, {})).values)
