"""AI-KD distillation: the objective, the training loop, and its Ray Train + DeepSpeed run."""
