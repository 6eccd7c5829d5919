"""Models by name: a decorator registry with typed metadata, timm-style.

A job spec names a model (``iresnet100``, ``iresnet_tiny``); code never imports a dotted
path from a config. Each entrypoint carries :class:`ModelInfo` (input size, embedding size,
normalisation), so what a model takes and gives is read from its entry, without building it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch.nn as nn

from aikd.errors import ComponentError

# The entrypoint arguments that change a ModelInfo field: a family that takes them must honour them.
SIZE_ARGS = {"input_size": "input_size", "num_features": "embedding_dim"}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_size: int = 112  # square side of the aligned crop
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # RGB, on x / 255
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    embedding_dim: int = 512
    description: str = ""  # one line, shown by `aikd components`


_MODELS: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}


def register_model(info: ModelInfo):
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if info.name in _MODELS:
            raise ComponentError(f"model {info.name!r} registered twice")
        _MODELS[info.name] = (fn, info)
        return fn

    return wrap


def list_models() -> list[str]:
    _load_families()
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    _load_families()
    if name not in _MODELS:
        raise ComponentError(f"unknown model {name!r}; valid: {', '.join(sorted(_MODELS))}")
    return _MODELS[name][1]


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    model_info(name)  # names the valid choices if unknown
    return _MODELS[name][0]


def resolve_model_info(name: str, **overrides) -> ModelInfo:
    """The ModelInfo of what ``create_model(name, **overrides)`` builds, without building it.

    Overrides are checked against the entrypoint's signature, so a bad one fails here as it would there.
    """
    kwargs = _set(overrides)
    try:
        inspect.signature(model_entrypoint(name)).bind(**kwargs)
    except TypeError as err:
        raise ComponentError(f"bad arguments for model {name!r}: {err}") from None
    return replace(model_info(name), **{field: kwargs[arg] for arg, field in SIZE_ARGS.items() if arg in kwargs})


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; overrides that are None are dropped (unset knobs)."""
    info = model_info(name)  # loads the families and names the valid choices if unknown
    kwargs = _set(overrides)
    try:
        model = model_entrypoint(name)(**kwargs)
    except (TypeError, ValueError) as err:
        raise ComponentError(f"bad arguments for model {name!r}: {err}") from None
    # what a model card records: how to rebuild it and how to feed it
    model.aikd_spec = {"name": name, "args": kwargs, "mean": info.mean, "std": info.std}
    return model


def _set(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if v is not None}


def _load_families() -> None:
    # Importing a family module runs its @register_model decorators.
    from aikd.models import iresnet  # noqa: F401
