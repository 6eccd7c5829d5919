import pickle

import pytest
import torch

from aikd.models import create_model
from aikd.models.student import create_student
from aikd.models.weights import (
    WeightsError,
    card_for,
    check_onnx,
    export_onnx,
    load_backbone,
    load_model,
    read_card,
    read_tensors,
    save_model,
    strip_wrappers,
)
from aikd.storage import resolve


def test_safetensors_round_trip_is_bit_exact(storage_root):
    student = create_student("iresnet_tiny", width=0.5)
    student.train()(torch.randn(4, 3, 64, 64))  # move BN running stats off their init
    save_model(student, storage_root, card_for(student, "student", {"teacher": "q_serfiq"}),
               extra={"centres": torch.arange(6.0).view(2, 3)})
    loaded, card = load_model(storage_root)
    assert card.kind == "student" and card.arguments == {"width": 0.5} and card.lineage == {"teacher": "q_serfiq"}
    assert read_card(storage_root).input_size == 64
    assert resolve(storage_root).join("card.json").read_json()["colour_order"] == "RGB"  # stated, not assumed
    for (k, a), (k2, b) in zip(student.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    _, extra = read_tensors(storage_root)
    assert torch.equal(extra["centres"], torch.arange(6.0).view(2, 3))


def test_arcface_torch_style_pth_with_wrappers_loads(tmp_path):
    source = create_model("iresnet_tiny")
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "backbone.pth")
    target = create_model("iresnet_tiny")
    load_backbone(target, str(tmp_path / "backbone.pth"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                  strict=True))


def _old_strip(state: dict, prefixes=("module.", "backbone.", "feature_extractor.")) -> dict:
    """The hand-written stripping: every leading wrapper prefix, in any order and repeated, off each key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


WRAPPED = {"module.backbone.conv1.weight": torch.zeros(1), "backbone.module.fc.bias": torch.ones(1),
           "module.module.bn.running_mean": torch.full((1,), 2.0), "feature_extractor.features.weight": torch.ones(2),
           "quality_head.0.weight": torch.zeros(3), "head.module.x": torch.zeros(1)}


def test_wrapper_prefixes_are_stripped_wherever_they_lead_nested_or_repeated():
    stripped = strip_wrappers(WRAPPED)
    assert stripped.keys() == {"conv1.weight", "fc.bias", "bn.running_mean", "features.weight",
                               "quality_head.0.weight", "head.module.x"}  # inside a name a prefix stays
    assert stripped == _old_strip(WRAPPED) and all(stripped[k] is v for k, v in _old_strip(WRAPPED).items())
    assert "module.backbone.conv1.weight" in WRAPPED  # the caller's dict is not changed


def test_custom_prefixes_strip_only_those():
    assert strip_wrappers(WRAPPED, ("module.",)).keys() == _old_strip(WRAPPED, ("module.",)).keys() == {
        "backbone.conv1.weight", "backbone.module.fc.bias", "bn.running_mean", "feature_extractor.features.weight",
        "quality_head.0.weight", "head.module.x"}


def test_mismatched_weights_list_missing_and_unexpected_keys(tmp_path):
    state = create_model("iresnet_tiny").state_dict()
    state.pop("fc.bias")
    state["head.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"missing 1 \(e.g. \['fc.bias'\]\); unexpected 1 \(e.g. \['head.extra'\]\)"):
        load_backbone(create_model("iresnet_tiny"), str(tmp_path / "w.pth"))
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_backbone(create_model("iresnet_small"), str(tmp_path / "w.pth"))


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_pth_holding_a_pickled_object_is_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv1.weight": Payload()}, f)
    with pytest.raises(WeightsError, match="refused: not a plain tensor checkpoint"):
        load_backbone(create_model("iresnet_tiny"), str(tmp_path / "evil.pth"))


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(tmp_path):
    student = create_student("iresnet_tiny").eval()
    export_onnx(student, str(tmp_path / "s.onnx"), batch=2)
    assert check_onnx(student, str(tmp_path / "s.onnx"), batch=5) < 1e-4
