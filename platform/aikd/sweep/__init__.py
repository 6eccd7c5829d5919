"""Sweeps: Ray Tune + Optuna over distillation settings, each trial a Ray Train run (docs/sweeps.md)."""
