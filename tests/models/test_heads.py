import math

import pytest
import torch

from aikd.errors import ComponentError
from aikd.models.heads import create_head, list_heads


def test_cosface_subtracts_the_margin_from_the_target_cosine():
    head = create_head("cosface", 4, 3, scale=10.0, margin=0.35)
    cos = torch.tensor([[0.9]])
    assert head.apply_margin(cos).item() == pytest.approx(0.55)


def test_arcface_adds_the_margin_to_the_angle():
    head = create_head("arcface", 4, 3, margin=0.5)
    cos = torch.tensor([[math.cos(0.3)]])
    assert head.apply_margin(cos).item() == pytest.approx(math.cos(0.8), abs=1e-6)
    near_pi = torch.tensor([[math.cos(3.0)]])
    assert head.apply_margin(near_pi).item() < math.cos(3.0)  # still a penalty past pi - m


@pytest.mark.parametrize("name", list_heads())
def test_margin_heads_learn_to_separate_classes(name):
    torch.manual_seed(0)
    centres = torch.randn(5, 16)
    labels = torch.arange(5).repeat(20)
    x = centres[labels] + 0.3 * torch.randn(100, 16)
    head = create_head(name, 16, 5, scale=16.0)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = head(x, labels).item()
    for _ in range(50):
        opt.zero_grad()
        loss = head(x, labels)
        loss.backward()
        opt.step()
    assert loss.item() < first / 2
    assert (head.cosine(x).argmax(1) == labels).float().mean() > 0.95


def test_unknown_head_is_named():
    with pytest.raises(ComponentError, match=f"unknown margin head 'sphereface'; valid: {', '.join(list_heads())}$"):
        create_head("sphereface", 4, 2)
