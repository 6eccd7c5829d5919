"""Models: insightface-compatible IResNet backbones, the AI-KD student, margin heads, weights I/O."""

from aikd.models.registry import (
    ModelInfo,
    create_model,
    list_models,
    model_entrypoint,
    model_info,
    register_model,
    resolve_model_info,
)

__all__ = ["ModelInfo", "create_model", "list_models", "model_entrypoint", "model_info", "register_model",
           "resolve_model_info"]
