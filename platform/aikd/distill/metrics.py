"""The validation metrics of a distill run, named once: the loop computes them, a run and a sweep select by them.

Each name is the key rank 0 reports at every validation (and the MLflow metric); its
direction says which way is better, so ``validation.select``, a sweep's ``metric`` and
an experiment's sweep are checked against one table.
"""

from __future__ import annotations

from typing import Literal

QUALITY_LOSS = "val_quality_loss"  # Smooth L1 of the quality on the aligned view against the label
QUALITY_LOSS_MISALIGNED = "val_quality_loss_misaligned"
SPEARMAN = "val_spearman"  # rank agreement of the student's quality with the label
SPEARMAN_MISALIGNED = "val_spearman_misaligned"
PAUC = {"aligned": "val_pauc_aligned", "misaligned": "val_pauc_misaligned"}  # EDC pAUC per view

DIRECTION: dict[str, Literal["min", "max"]] = {
    QUALITY_LOSS: "min", QUALITY_LOSS_MISALIGNED: "min", PAUC["aligned"]: "min", PAUC["misaligned"]: "min",
    SPEARMAN: "max", SPEARMAN_MISALIGNED: "max"}


def selectable(value: str, field: str) -> str:
    """``value`` if it is a validation metric a run can select by (``field`` names it in the error)."""
    if value not in DIRECTION:
        raise ValueError(f"{field} must be one of {sorted(DIRECTION)}, got {value!r}")
    return value


def needs_pauc(metric: str) -> bool:
    return metric in PAUC.values()
