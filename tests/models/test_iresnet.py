"""The IResNet layout, written from arcface_torch's structure (not from a saved model).

Every registered model's forward, backward and sizes: tests/test_components.py."""

import pytest
import torch

from aikd.errors import ComponentError
from aikd.models import create_model
from aikd.models.iresnet import DEPTHS


def _bn(keys, prefix, c):
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys.append((f"{prefix}.{name}", (c,)))
    keys.append((f"{prefix}.num_batches_tracked", ()))


def expected_layout(layers, widths=(64, 128, 256, 512), features=512, side=7):
    keys = [("conv1.weight", (widths[0], 3, 3, 3))]
    _bn(keys, "bn1", widths[0])
    keys.append(("prelu.weight", (widths[0],)))
    cin = widths[0]
    for stage, (blocks, w) in enumerate(zip(layers, widths, strict=True), start=1):
        for b in range(blocks):
            p, c_in = f"layer{stage}.{b}", (cin if b == 0 else w)
            _bn(keys, f"{p}.bn1", c_in)
            keys.append((f"{p}.conv1.weight", (w, c_in, 3, 3)))
            _bn(keys, f"{p}.bn2", w)
            keys.append((f"{p}.prelu.weight", (w,)))
            keys.append((f"{p}.conv2.weight", (w, w, 3, 3)))
            _bn(keys, f"{p}.bn3", w)
            if b == 0:  # every stage starts with a stride-2 block
                keys.append((f"{p}.downsample.0.weight", (w, c_in, 1, 1)))
                _bn(keys, f"{p}.downsample.1", w)
        cin = w
    _bn(keys, "bn2", cin)
    keys += [("fc.weight", (features, cin * side * side)), ("fc.bias", (features,))]
    _bn(keys, "features", features)
    return keys


@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_state_dict_matches_the_arcface_torch_layout(depth):
    model = create_model(f"iresnet{depth}")
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected_layout(DEPTHS[depth])
    assert not any(isinstance(m, torch.nn.Conv2d) and m.bias is not None for m in model.modules())
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert model.features.weight.requires_grad is False


def test_small_variants_keep_the_names_with_fewer_blocks_and_narrower_stages():
    tiny = create_model("iresnet_tiny")
    got = [(k, tuple(v.shape)) for k, v in tiny.state_dict().items()]
    assert got == expected_layout((1, 1, 1, 1), widths=(16, 32, 64, 128), side=4)
    wide = create_model("iresnet_tiny", width=0.5, input_size=112)
    assert wide.fc.in_features == 256 * 7 * 7


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ComponentError, match=r"unknown model 'resnet50'; valid: .*iresnet100"):
        create_model("resnet50")
    with pytest.raises(ComponentError, match="bad arguments for model 'iresnet_tiny'"):
        create_model("iresnet_tiny", colour=True)


def test_none_overrides_are_dropped_and_input_size_is_checked():
    assert create_model("iresnet_tiny", width=None).fc.in_features == 128 * 16
    with pytest.raises(ComponentError, match="multiple of 16"):
        create_model("iresnet_tiny", input_size=100)
