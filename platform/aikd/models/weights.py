"""Weights on any URI: safetensors plus a JSON card; users' .pth files read safely; ONNX export.

A model directory holds ``model.safetensors`` and ``card.json`` (architecture and its
arguments, input size, normalisation, lineage), so a model is rebuilt by name from the
registry and never unpickled. Files users hand in (``backbone.pth``) are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from typing import Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from aikd.errors import AikdError
from aikd.models.transforms import Preprocess
from aikd.storage import resolve

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.yaml"  # the resolved job spec that made the model
CARD_FILE = "card.json"
WRAPPER_PREFIXES = ("module.", "backbone.", "feature_extractor.")
EXTRA_PREFIX = "extra."  # tensors stored beside the network (e.g. class centres), not part of it
CENTRES = "class_centres"  # the margin head's centres, saved beside an FR backbone (CR-FIQA needs them)


class WeightsError(AikdError):
    """Weights that cannot be read or do not fit the model."""


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["backbone", "student", "margin_head"]
    architecture: str = Field(description="registry name of the backbone")
    arguments: dict = Field(default_factory=dict, description="create_model overrides")
    input_size: int
    # every aikd batch is RGB (decoded images are converted once, in the pipeline), so a card says so;
    # a model trained on BGR input (OpenCV's order) must be converted before it is saved here
    colour_order: Literal["RGB"] = Field("RGB", description="channel order of the input")
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    embedding_dim: int = 512
    lineage: dict = Field(default_factory=dict, description="data, teacher, parent model, run, metrics")
    format_version: int = 1


def card_for(model: nn.Module, kind: str, lineage: dict | None = None) -> ModelCard:
    """The card of a model made by create_model / create_student (they record their spec)."""
    backbone, spec = _spec(model)
    return ModelCard(kind=kind, architecture=spec["name"], arguments=spec["args"], input_size=backbone.input_size,
                     mean=spec["mean"], std=spec["std"], embedding_dim=backbone.fc.out_features,
                     lineage=lineage or {})


def _spec(model: nn.Module) -> tuple[nn.Module, dict]:
    """The backbone of a model (a student's feature extractor) and what create_model recorded of it."""
    backbone = model.feature_extractor if hasattr(model, "feature_extractor") else model
    spec = getattr(backbone, "aikd_spec", None)
    if spec is None:
        raise WeightsError("model was not made by aikd.models.create_model: its architecture is unknown")
    return backbone, spec


def preprocess_of(model: nn.Module) -> Preprocess:
    """How to feed a model made by create_model or load_model: its input size and normalisation."""
    backbone, spec = _spec(model)
    return Preprocess(backbone.input_size, tuple(spec["mean"]), tuple(spec["std"]))


def build(card: ModelCard) -> nn.Module:
    from aikd.models.registry import create_model
    from aikd.models.student import create_student

    if card.kind == "student":
        model = create_student(card.architecture, **card.arguments)
    elif card.kind == "backbone":
        model = create_model(card.architecture, **card.arguments)
    else:
        raise WeightsError(f"a {card.kind} card does not describe a network to build")
    _, spec = _spec(model)
    spec.update(mean=card.mean, std=card.std)  # the card, not the registry's default, says how it was trained
    return model


def save_model(model: nn.Module, uri: str, card: ModelCard, extra: dict[str, torch.Tensor] | None = None,
               spec: dict | None = None) -> None:
    """Write ``model.safetensors`` (+ ``extra`` tensors, e.g. class centres), ``spec.yaml`` and ``card.json``.

    ``spec``: the resolved job spec that made the model, kept beside it (credentials
    masked) so a model directory says how to make it again. The card goes first out and
    last in, so a directory with a card always holds the weights it describes, even when
    a crash hits an overwrite (e.g. a run's best student).
    """
    root = resolve(uri)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (extra or {}).items():
        tensors[EXTRA_PREFIX + key] = value.detach().cpu().contiguous()
    if root.join(CARD_FILE).exists():
        root.fs.delete_file(root.join(CARD_FILE).path)
    root.join(WEIGHTS_FILE).write_bytes(save_safetensors(tensors, metadata={"kind": card.kind}))
    if spec is not None:
        import yaml

        from aikd.redact import redact

        root.join(SPEC_FILE).write_text(yaml.safe_dump(redact(spec), sort_keys=False))
    root.join(CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")


def read_card(uri: str) -> ModelCard:
    location = resolve(uri).join(CARD_FILE)
    if not location.exists():
        raise WeightsError(f"no model card at {location.uri}")
    try:
        return ModelCard.model_validate(json.loads(location.read_text()))
    except ValueError as err:  # not UTF-8, not JSON, or not a card's fields: name the file, in one line
        from aikd.spec import error_text

        why = error_text(ModelCard, err) if isinstance(err, ValidationError) else f"not JSON ({err})"
        raise WeightsError(f"{location.uri}: not a model card: {why}") from None


def _safetensors(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything else (a pickle named .safetensors) is refused, never unpickled."""
    try:
        return load_safetensors(data)
    except Exception as err:  # safetensors' own parse errors: say which file, in one line
        raise WeightsError(f"{source}: not a safetensors file ({type(err).__name__}: {_why(err)})") from None


def read_tensors(uri: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(network state dict, extra tensors) of a saved model."""
    location = resolve(uri).join(WEIGHTS_FILE)
    if not location.exists():
        raise WeightsError(f"no weights at {location.uri}")
    tensors = _safetensors(location.read_bytes(), location.uri)
    extra = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}, extra


def load_model(uri: str) -> tuple[nn.Module, ModelCard]:
    """Rebuild a saved model from its card and load its weights exactly (strict)."""
    card = read_card(uri)
    model = build(card)
    state, _ = read_tensors(uri)
    load_weights(model, state, source=uri)
    return model, card


def class_centres(uri: str) -> tuple[torch.Tensor, list[str]]:
    """A margin head's class centres saved beside a backbone, and the class names its card lists."""
    _, extra = read_tensors(uri)
    if CENTRES not in extra:
        raise WeightsError(f"{resolve(uri).join(WEIGHTS_FILE).uri} holds no class centres: not made by fr-train")
    return extra[CENTRES], list(read_card(uri).lineage.get("classes", []))


def read_user_weights(uri: str) -> dict[str, torch.Tensor]:
    """A state dict from a user's file: .safetensors, or .pth/.pt via weights_only unpickling."""
    location = resolve(uri)
    if not location.exists():
        raise WeightsError(f"weights file not found: {location.uri}")
    data = location.read_bytes()
    if location.path.endswith(".safetensors"):
        return _safetensors(data, location.uri)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses arbitrary objects: say so plainly
        raise WeightsError(
            f"{location.uri}: refused: not a plain tensor checkpoint ({type(err).__name__}: {_why(err)}); "
            "a .pth may hold only tensors and plain containers (a pickle that names other objects can run code "
            "when loaded)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"{location.uri}: expected a dict of parameter name -> tensor, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{location.uri}: entries that are not tensors: {bad[:5]}")
    return obj


def _why(err: Exception) -> str:
    """One line of a loader's error: torch's line naming the refused GLOBAL (its first line advises loading
    the file the unsafe way), else the first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "unreadable")


def strip_wrappers(state: dict[str, torch.Tensor], prefixes=WRAPPER_PREFIXES) -> dict[str, torch.Tensor]:
    """Drop DDP/DeepSpeed/student wrapper prefixes (``module.``, ``backbone.``, ...) wherever they lead,
    nested ones too (``module.backbone.``): torch strips one prefix a call, so it runs until none leads."""
    out = OrderedDict(state)  # torch strips in place: the caller's dict stays as it was
    while any(key.startswith(tuple(prefixes)) for key in out):
        for prefix in prefixes:
            consume_prefix_in_state_dict_if_present(out, prefix)
    return dict(out)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Strict load with a message that lists what is missing and what is unexpected."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[:5]})")
        if shape:
            parts.append(f"shape mismatch {len(shape)} (e.g. {shape[:3]})")
        raise WeightsError(f"{source} do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_backbone(model: nn.Module, uri: str) -> None:
    """Load a user's FR backbone (arcface_torch backbone.pth, a wrapped checkpoint, safetensors)."""
    load_weights(model, strip_wrappers(read_user_weights(uri)), source=uri)


def export_onnx(student: nn.Module, path: str, batch: int = 2) -> None:
    """Export (embedding, quality) with a dynamic batch axis."""
    student = student.eval()
    size = student.input_size
    dummy = torch.randn(batch, 3, size, size)
    torch.onnx.export(
        student, (dummy,), path, input_names=["image"], output_names=["embedding", "quality"],
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}, "quality": {0: "batch"}},
        dynamo=False,
    )


def check_onnx(student: nn.Module, path: str, batch: int = 5, seed: int = 0) -> float:
    """Max absolute difference between ONNX Runtime and PyTorch outputs on random inputs."""
    import numpy as np
    import onnxruntime as ort

    size = student.input_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = [t.numpy() for t in student.eval()(x)]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got, strict=True)))
