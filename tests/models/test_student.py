import torch
from test_iresnet import expected_layout

from aikd.models.student import create_student
from aikd.models.weights import load_weights


def test_student_returns_embedding_and_quality():
    student = create_student("iresnet_tiny")
    emb, q = student(torch.randn(3, 3, 64, 64))
    assert emb.shape == (3, 512) and q.shape == (3,)


def test_a_reference_format_student_dict_loads_unchanged():
    # the AI-KD release: feature_extractor.* (an arcface_torch IResNet) + quality_head.l1/l2
    state = {f"feature_extractor.{k}": torch.randn(shape) if shape else torch.tensor(7)
             for k, shape in expected_layout((1, 1, 1, 1), widths=(16, 32, 64, 128), side=4)}
    state |= {"quality_head.l1.weight": torch.randn(1024, 512), "quality_head.l1.bias": torch.randn(1024),
              "quality_head.l2.weight": torch.randn(1, 1024), "quality_head.l2.bias": torch.randn(1)}
    student = create_student("iresnet_tiny")
    load_weights(student, state)
    torch.testing.assert_close(student.quality_head.l2.weight, state["quality_head.l2.weight"])
    torch.testing.assert_close(student.feature_extractor.fc.weight, state["feature_extractor.fc.weight"])
