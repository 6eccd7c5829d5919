"""Models by name: a decorator registry with typed metadata, timm-style.

A job spec names a model (``iresnet100``, ``iresnet_tiny``); code never imports a dotted
path from a config. Each entrypoint carries :class:`ModelInfo` (input size, normalisation)
so preprocessing is read from the model, not hard-coded at call sites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from aikd.errors import ComponentError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_size: int = 112
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # RGB, on x / 255
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    embedding_dim: int = 512
    description: str = ""


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


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; overrides that are None are dropped (unset knobs)."""
    info = model_info(name)  # loads the families and names the valid choices if unknown
    fn = _MODELS[name][0]
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    try:
        model = fn(**kwargs)
    except (TypeError, ValueError) as err:
        raise ComponentError(f"bad arguments for model {name!r}: {err}") from None
    # what a model card records: how to rebuild it and how to feed it
    model.aikd_spec = {"name": name, "args": kwargs, "mean": info.mean, "std": info.std}
    return model


def _load_families() -> None:
    # Importing a family module runs its @register_model decorators.
    from aikd.models import iresnet  # noqa: F401
